"""The per-job files the Prolog leaves for the TaskProlog, and reading them.

Kept apart from the hooks so the TaskProlog path (every task of every step)
imports almost nothing. The shell script prolog/slurm-mig-task-prolog does
the same as task_prolog() without Python at all.
"""
from __future__ import annotations

import os
import stat
from typing import Optional, Tuple

from ..core.syntax import check_job_id

ENV, FAIL = ".env", ".fail"


def job_file(run_dir: str, job: str, suffix: str) -> str:
    return os.path.join(run_dir, check_job_id(job) + suffix)


def task_prolog(run_dir: str, job: str, uid: Optional[int] = None) -> Tuple[str, int]:
    """What the TaskProlog prints, and its exit status. Only a regular file
    owned by root or by the job's user (`uid`; default SLURM_JOB_UID, else our
    own uid) is printed, never one reached through a symlink: anything else
    in run_dir was planted by someone else."""
    if uid is None:
        env_uid = os.environ.get("SLURM_JOB_UID", "")
        uid = int(env_uid) if env_uid.isdigit() else os.getuid()
    text = _read_trusted(job_file(run_dir, job, FAIL), uid)
    if text is not None:
        return "".join(f"print {line}" for line in text.splitlines(keepends=True)), 1
    return _read_trusted(job_file(run_dir, job, ENV), uid) or "", 0


def _read_trusted(path: str, uid: int) -> Optional[str]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:            # missing, a symlink (ELOOP), unreadable: nothing to print
        return None
    with open(fd, encoding="utf-8", errors="replace") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, uid):
            return None
        return f.read()
