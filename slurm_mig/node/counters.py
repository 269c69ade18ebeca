"""Node counters for the metrics (`slurm-mig status --prometheus`), kept in
`state_dir/counters.json` so they survive hooks, which are separate
processes, and reboots. An update is read-add-write under its own lock
(never the node lock: a hook holding that may count too) and an atomic
rename, so concurrent hooks lose no count and a reader sees old or new.
Counting never fails a hook: a problem is logged and the count is lost."""
from __future__ import annotations

import json
import os
import stat
from typing import Dict

from ..errors import SlurmMigError, StateCorrupt
from ..fsutil import atomic_write, locked, os_problem, safe_dir
from ..log import log

# name -> what it counts (the metric is slurm_mig_<name>_total)
COUNTERS = {
    "prologs": "Prologs that served a job with GPUs here (MIG, whole GPU or static).",
    "requeues": "Jobs the Prolog sent back to the queue for lack of room.",
    "jobs_failed": "Jobs failed alone by a hook (the reason is in the job's output).",
    "reconcile_actions": "Actions of reconcile (releases, closed records, destroyed instances).",
}
FILE, LOCK = "counters.json", "counters.lock"
LOCK_TIMEOUT = 5.0


def bump(state_dir: str, name: str, n: int = 1) -> None:
    """Add `n` to counter `name` (0: touch nothing, no lock taken)."""
    if name not in COUNTERS or n < 0:
        raise ValueError(f"not a counter or a count: {name} {n}")
    if not n:
        return
    try:
        safe_dir(state_dir, 0o700, "state_dir")
        with locked(os.path.join(state_dir, LOCK), LOCK_TIMEOUT):
            try:
                values = read(state_dir)
            except StateCorrupt as e:
                log.warning("%s; counting from 0", e)
                values = dict.fromkeys(COUNTERS, 0)
            values[name] += n
            atomic_write(os.path.join(state_dir, FILE), json.dumps(values).encode(), durable=False)
    except SlurmMigError as e:           # fsutil's one-line OSError, a lock timeout
        log.warning("counter %s not counted: %s", name, e)


def read(state_dir: str) -> Dict[str, int]:
    """Every counter (0 before its first count). NodeProblem when the file
    cannot be read (not root), StateCorrupt when it is not counters."""
    path = os.path.join(state_dir, FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return dict.fromkeys(COUNTERS, 0)
    except OSError as e:
        raise os_problem(path, e, "read the counters in") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):      # before wrapping: open() refuses a directory fd
        os.close(fd)
        raise StateCorrupt(f"{path} is not a regular file; move it aside")
    with open(fd, encoding="utf-8", errors="replace") as f:
        try:
            raw = json.loads(f.read())
        except ValueError:
            raw = None
    if not isinstance(raw, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in raw.values()):
        raise StateCorrupt(f"{path} does not hold counters")
    return {name: raw.get(name, 0) for name in COUNTERS}
