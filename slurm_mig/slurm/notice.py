"""Telling an srun or salloc user what the Prolog does, and revoking what it
cannot serve.

Such a job cannot go back to the queue: its Prolog waits for room instead,
and its user would see nothing but a silent terminal. `scontrol notify`
prints to the srun's or salloc's stderr, also while the job's Prolog runs
(docs/facts.md). When the wait runs out the job is cancelled after the
reason is sent, so a salloc is never left holding an allocation whose every
step would fail. Each is one Slurm command, on these rare paths only; a
notice that fails is only logged, and a job that could not be cancelled
still fails its steps with the reason (the TaskProlog prints it).
"""
from __future__ import annotations

from ..core.syntax import check_job_id
from ..errors import SlurmUnavailable
from ..log import JobLog
from .jobinfo import run_slurm, slurm_command

MAX_NOTICE = 1000      # characters: one line on the user's terminal, not a log


def tell(job: str, text: str, bin_dir: str = "") -> None:
    """Print `text` on the stderr of the job's srun or salloc."""
    job = check_job_id(job)
    try:
        run_slurm([slurm_command("scontrol", bin_dir), "notify", job, " ".join(text.split())[:MAX_NOTICE]],
                  attempts=1, timeout=5.0)
    except SlurmUnavailable as e:
        JobLog(job).warning("could not tell the job's user (%s): %s", e, text)


def revoke(job: str, reason: str, bin_dir: str = "") -> None:
    """Tell the user `reason`, then cancel the job."""
    tell(job, reason, bin_dir)
    try:
        run_slurm([slurm_command("scancel", bin_dir), check_job_id(job)], attempts=2, timeout=10.0)
    except SlurmUnavailable as e:
        JobLog(job).warning("could not cancel the job (%s): its steps fail with the reason", e)
