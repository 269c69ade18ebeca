"""Logging: one line per action, tagged with the job id, to syslog and stderr."""
from __future__ import annotations

import logging
import os
import sys


def setup_logging(verbose: bool = False) -> None:
    log = logging.getLogger("slurm-mig")
    if log.handlers:
        return
    log.setLevel(logging.DEBUG if verbose else logging.INFO)

    class JobTag(logging.Filter):
        def filter(self, record):
            job = getattr(record, "job", None)
            record.tag = f"[job {job}] " if job else ""
            return True

    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter("slurm-mig: %(tag)s%(message)s"))
    stderr.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handlers = [stderr]
    if os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler
        try:
            syslog = SysLogHandler(address="/dev/log")
            syslog.setFormatter(logging.Formatter("slurm-mig: %(tag)s%(message)s"))
            handlers.append(syslog)
        except OSError:
            pass
    for h in handlers:
        h.addFilter(JobTag())
        log.addHandler(h)
