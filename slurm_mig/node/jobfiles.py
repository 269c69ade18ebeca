"""The per-job files the Prolog leaves for the TaskProlog, and reading them.

Kept apart from the hooks so the TaskProlog path (every task of every step)
imports almost nothing. The shell script prolog/slurm-mig-task-prolog does
the same as task_prolog() without Python at all.
"""
from __future__ import annotations

import os
from typing import Tuple

from ..core.syntax import check_job_id

ENV, FAIL = ".env", ".fail"


def job_file(run_dir: str, job: str, suffix: str) -> str:
    return os.path.join(run_dir, check_job_id(job) + suffix)


def task_prolog(run_dir: str, job: str) -> Tuple[str, int]:
    """What the TaskProlog prints, and its exit status."""
    try:
        with open(job_file(run_dir, job, FAIL), encoding="utf-8") as f:
            return "".join(f"print {line}" for line in f), 1
    except FileNotFoundError:
        pass
    try:
        with open(job_file(run_dir, job, ENV), encoding="utf-8") as f:
            return f.read(), 0
    except FileNotFoundError:
        return "", 0
