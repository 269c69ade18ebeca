"""Stuck-GPU holds, Slurm's side: the root job that keeps a GPU away from new
jobs while a busy instance no job owns is stuck on it (node/holds.py).

Slurm has no per-GPU drain, and a node's GRES cannot change at runtime
without draining it (docs/facts.md). A job can hold a GPU, though: submitted
by root, pinned to the node (`-w`) in a partition of it, `--gres=gpu:1`, at
the top priority (only an operator may set one), it takes the node's
lowest-index free GPU, as every `--gres=gpu:1` job does, and neither
whole-GPU nor shard jobs get that GPU while it runs (verified on 22.05 and
24.11). Its name says what it is (`slurm-mig-stuck-<node>-gpu<g>` in squeue
and sacct); its time limit is the partition's. It is submitted held, so the
marker naming it is written before it can start, then released.

Slurm commands per hold: scancel of a leftover of the same name (a submitter
that died after sbatch), sbatch, one-job squeues once a second until the job
that met the stuck instance has left its GPU (a second or two: its Epilog),
scontrol release; and, for a marker due for a check, one one-job squeue.
"""
from __future__ import annotations

import re
import shlex
import time
from typing import Mapping, Optional

from ..core.syntax import check_job_id
from ..errors import BadInput, SlurmUnavailable
from .jobinfo import check_node_name, run_slurm, slurm_command
from .requeue import job_state

PREFIX = "slurm-mig-stuck-"
_PARTITION = re.compile(r"[A-Za-z0-9._-]{1,255}")
OFF_NODE_TIMEOUT = 100.0     # s the submitter waits for the job that met the stuck instance to leave
LIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED")


def job_name(node: str, gpu: int) -> str:
    return f"{PREFIX}{check_node_name(node)}-gpu{int(gpu)}"


def submit(node: str, partition: str, gpu: int, instance: str, command: str, bin_dir: str = "") -> str:
    """Submit the hold of `gpu` held (priority 0); the job id. `command` is the
    batch script's one line (run as root on the node)."""
    if not _PARTITION.fullmatch(partition or ""):
        raise BadInput(f"invalid partition name {partition!r}")
    name = job_name(node, gpu)
    out = run_slurm([slurm_command("sbatch", bin_dir), "--parsable", "--hold", "--export=NONE",
                     f"--job-name={name}", f"--nodelist={node}", f"--partition={partition}",
                     "--gres=gpu:1", "--ntasks=1",
                     "--priority=TOP", "--no-requeue", "--chdir=/", "-o", "/dev/null",
                     f"--comment=slurm-mig: keeps GPU {int(gpu)} of {node} from new jobs while "
                     f"{instance}, which no job owns, is in use",
                     f"--wrap={command}"], attempts=2)
    return check_job_id(out.strip().split(";")[0])


def release(job: str, bin_dir: str = "") -> None:
    run_slurm([slurm_command("scontrol", bin_dir), "release", check_job_id(job)], attempts=3)


def cancel_leftovers(node: str, gpu: int, bin_dir: str = "") -> None:
    """Cancel root's jobs of this hold's name (one a dead submitter left held)."""
    run_slurm([slurm_command("scancel", bin_dir), "-u", "root", "-n", job_name(node, gpu)], attempts=2)


def alive(job: str, bin_dir: str = "") -> bool:
    """Whether Slurm still lists the hold as pending or running."""
    try:
        state, _ = job_state(job, bin_dir)
    except SlurmUnavailable as e:
        if "Invalid job id" in str(e):      # gone from the controller's memory
            return False
        raise
    return state in LIVE_STATES


def wait_until_off_node(job: str, bin_dir: str = "", timeout: float = OFF_NODE_TIMEOUT,
                        poll: float = 1.0) -> bool:
    """Wait until `job` (the one that met the stuck instance, being requeued)
    no longer holds its GPU, so that the hold, released now, is given that
    GPU: the lowest free one. False when it still did at the timeout (an
    interactive job waiting for room): the hold then gets whichever is free."""
    deadline = time.monotonic() + timeout
    while True:
        state, _ = job_state(job, bin_dir)
        if state not in ("CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)


def wait_command(python: str, env: Mapping[str, str]) -> str:
    """The hold's batch script: this install's hook waiting while the instance
    is busy, with the config the node's hooks use."""
    keep = ("SLURM_MIG_CONFIG", "SLURM_MIG_BACKEND", "SLURM_MIG_STATE_DIR", "SLURM_MIG_RUN_DIR")
    prefix = "".join(f"{k}={shlex.quote(env[k])} " for k in keep if env.get(k))
    return f"{prefix}exec {shlex.quote(python)} -m slurm_mig.hooks.main stuck-wait"


def partition_of(env: Mapping[str, str]) -> Optional[str]:
    """The partition slurmd says the job that met the stuck GPU runs in."""
    value = env.get("SLURM_JOB_PARTITION", "")
    return value if _PARTITION.fullmatch(value) else None
