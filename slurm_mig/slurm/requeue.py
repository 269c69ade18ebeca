"""Sending a job back to the queue from the Prolog (slurm-facts section 8).

Slurm's shard count admits a job its GPU cannot hold when the free memory
slots are split by running instances (or held by a process no job owns).
Such a batch job is not failed: the Prolog requeues it and marks it in
AdminComment (only root can set it, so the mark is Slurm's and not the
user's; the user sees why in `scontrol show job`).

When it may start again is left to Slurm: after the job's Epilog, Slurm
delays a requeued batch job by cred_expire + 1 seconds (121 by default).
That delay is needed: slurmd skips the Prolog of a job id it ran within
cred_expire (its credential cache), so a job started sooner on the same node
would run without its instances.
"""
from __future__ import annotations

from ..core.syntax import check_job_id
from ..errors import SlurmUnavailable
from .jobinfo import run_slurm, slurm_command

MARK = "slurm-mig: requeued"
MAX_MARK_TEXT = 250


def send_back(job: str, reason: str, attempt: int, limit: int, bin_dir: str = "") -> None:
    """Requeue `job`, then mark it. SlurmUnavailable when Slurm refuses the
    requeue (--no-requeue, JobRequeue=0, not a batch job) or cannot be
    reached; a mark that fails afterwards is only logged."""
    job = check_job_id(job)
    scontrol = slurm_command("scontrol", bin_dir)
    run_slurm([scontrol, "requeue", job], attempts=1)
    note = " ".join(f"{MARK} {attempt}/{limit}: {reason}".split())[:MAX_MARK_TEXT]
    try:
        run_slurm([scontrol, "update", f"JobId={job}", f"AdminComment={note}"], attempts=2)
    except SlurmUnavailable as e:
        from ..log import JobLog
        JobLog(job).warning("requeued, but marking it failed: %s", e)
