"""Stuck-GPU holds, the node's side: which GPU of this node a root job holds
whole while a process that outlived its job keeps a MIG instance there busy.

Slurm gives a `--gres=gpu:1` job the lowest-index free GPU of the node, so a
GPU with such an instance would take every whole-GPU job sent to the node and
send each back to the queue (a black hole). A hold job (slurm/holds.py) keeps
Slurm from handing it out until the instance is free. One marker per GPU in
state_dir/holds/ (root only) says which job holds it: a hook believes a job is
a hold only when it runs as uid 0 (set by slurmd, not by the user) and this
root-written marker names its id, never because of its name.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from typing import Iterator, NamedTuple, Optional

from ..errors import SlurmMigError
from ..fsutil import locked, read_json, safe_dir, write_json

DIR = "holds"
# A marker with no job yet was left by a submitter that died before sbatch answered.
UNSUBMITTED_TTL = 120.0
# A submitted hold is checked with Slurm again (gone without its Epilog?) at most this often.
RECHECK_AFTER = 600.0
_UUID = re.compile(r"MIG-[0-9A-Fa-f-]{1,64}")


class Hold(NamedTuple):
    gpu: int                      # index on this node
    instance: str                 # MIG UUID of the busy instance no job owns
    job: Optional[str] = None     # the hold job, once submitted
    given: Optional[int] = None   # the GPU Slurm gave it (its Prolog writes it)
    since: float = 0.0            # written (or last checked with Slurm)

    def due(self, now: float) -> bool:
        """Whether Slurm should be asked about it again (its submitter died, or it
        may have gone without an Epilog here)."""
        return now - self.since > (UNSUBMITTED_TTL if self.job is None else RECHECK_AFTER)


def _dir(state_dir: str) -> str:
    path = os.path.join(state_dir, DIR)
    safe_dir(path, 0o700, "state_dir")
    return path


def _path(state_dir: str, gpu: int) -> str:
    return os.path.join(_dir(state_dir), f"gpu{int(gpu)}.json")


def read(state_dir: str, gpu: int) -> Optional[Hold]:
    """The marker of `gpu`; None when there is none or it is not well formed
    (then it is ignored: at worst a GPU is not held)."""
    path = _path(state_dir, gpu)
    if not os.path.isfile(path):
        return None
    try:
        raw = read_json(path, "hold marker", hint="")
        hold = Hold(int(raw["gpu"]), str(raw["instance"]), raw.get("job"), raw.get("given"),
                    float(raw["since"]))
    except (SlurmMigError, KeyError, TypeError, ValueError):    # gone meanwhile, or corrupt
        return None
    if hold.gpu != gpu or not _UUID.fullmatch(hold.instance) \
            or not (hold.job is None or (isinstance(hold.job, str) and hold.job.isdigit())) \
            or not (hold.given is None or isinstance(hold.given, int)):
        return None
    return hold


def write(state_dir: str, hold: Hold) -> None:
    write_json(_path(state_dir, hold.gpu), hold._asdict())


def remove(state_dir: str, gpu: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path(state_dir, gpu))


@contextlib.contextmanager
def lock(state_dir: str, gpu: int, timeout: float = 60.0) -> Iterator[None]:
    """One submitter per GPU at a time; released by the kernel if it dies."""
    with locked(os.path.join(_dir(state_dir), f"gpu{int(gpu)}.lock"), timeout):
        yield


def want(state_dir: str, gpu: int, instance: str, now: Optional[float] = None) -> bool:
    """Record that `gpu` should be held for `instance`; True when a submitter
    should run (no marker, or one due for a check with Slurm). Called under
    the node lock, so two Prologs never both start one."""
    now = time.time() if now is None else now
    old = read(state_dir, gpu)
    if old is not None and not old.due(now):
        return False
    write(state_dir, old._replace(since=now) if old is not None else Hold(gpu, instance, since=now))
    return True


def of_job(state_dir: str, job: str, uid: Optional[int]) -> Optional[Hold]:
    """The marker naming `job`, for a job that runs as root; else None."""
    if uid != 0:
        return None
    for name in sorted(os.listdir(_dir(state_dir))):
        m = re.fullmatch(r"gpu(\d{1,4})\.json", name)
        hold = read(state_dir, int(m.group(1))) if m else None
        if hold is not None and hold.job == job:
            return hold
    return None


def started(state_dir: str, job: str, uid: Optional[int], job_gpus: str) -> Optional[Hold]:
    """For a hold's Prolog: its marker, now saying which GPU Slurm gave it
    (`job_gpus`, slurmd's SLURM_JOB_GPUS); None for any other job."""
    hold = of_job(state_dir, job, uid)
    if hold is None:
        return None
    with lock(state_dir, hold.gpu):
        hold = hold._replace(given=int(job_gpus) if job_gpus.isdigit() else -1)
        write(state_dir, hold)
    return hold


def ended(state_dir: str, job: str, uid: Optional[int]) -> Optional[Hold]:
    """For a hold's Epilog: its marker, removed (the GPU may be held again
    later); None for any other job."""
    hold = of_job(state_dir, job, uid)
    if hold is not None:
        with lock(state_dir, hold.gpu):
            if (read(state_dir, hold.gpu) or hold).job == job:
                remove(state_dir, hold.gpu)
    return hold


def still_stuck(ctx, hold: Hold) -> bool:
    """Whether the held GPU still has the instance, busy and owned by no
    record (`ctx`: a NodeContext)."""
    gpu = ctx.devices.driver.gpu(hold.gpu)
    return hold.instance in ctx.devices.in_use([gpu], ctx.ledger.live())
