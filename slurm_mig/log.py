"""Logging: one line per action, tagged with the job id, to syslog and stderr.

Not the `logging` module: the hooks run at every job start and end, and this
costs a fraction of its import. Warnings and errors go to stderr (slurmd's log
for hooks); everything goes to syslog once setup_logging() has run.
"""
from __future__ import annotations

import sys
from typing import Optional

_state = {"syslog": None, "verbose": False}
_LEVELS = {"info": 6, "warning": 4, "error": 3}    # syslog priorities


def setup_logging(verbose: bool = False) -> None:
    import syslog
    if _state["syslog"] is None:
        syslog.openlog("slurm-mig", 0, syslog.LOG_DAEMON)
        _state["syslog"] = syslog
    _state["verbose"] = verbose


class JobLog:
    """`log.info("created %s", uuid)` with a `[job N]` tag."""

    def __init__(self, job: Optional[str] = None):
        self.tag = f"[job {job}] " if job else ""

    def _emit(self, level: str, msg: str, args) -> None:
        text = self.tag + (msg % args if args else msg)
        if _state["syslog"] is not None:
            _state["syslog"].syslog(_LEVELS[level], text)
        if level in ("warning", "error") or _state["verbose"]:
            print(f"slurm-mig: {text}", file=sys.stderr, flush=True)

    def info(self, msg: str, *args) -> None:
        self._emit("info", msg, args)

    def warning(self, msg: str, *args) -> None:
        self._emit("warning", msg, args)

    def error(self, msg: str, *args) -> None:
        self._emit("error", msg, args)


log = JobLog()
