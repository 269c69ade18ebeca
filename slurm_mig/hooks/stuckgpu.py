"""A GPU held by a stuck instance stops attracting jobs (`hold_stuck_gpus`).

A whole-GPU Prolog that finds a busy instance no job owns on its GPU (a
process that outlived its job) sends its job back to the queue; left at that,
Slurm would send every later `--gres=gpu:1` job to the same GPU (the lowest
free index) and each would pay a requeue. So the Prolog also asks for a hold
of that GPU (node/holds.py marks it, under the node lock: one per GPU), and a
detached `slurm-mig-hook stuck-hold` submits it (slurm/holds.py) and lets it
start once the job that met the stuck instance has left the GPU. The hold's
own Prolog, recognised by uid 0 and the root-only marker, touches nothing and
notes the GPU Slurm gave it; its batch script (`stuck-wait`) waits while the
instance stays busy there, then ends, and Slurm hands the GPU out again (the
next Prolog destroys the idle instance). Given another GPU (a lower one was
free at that moment), it ends at once: the next job that meets the stuck
instance asks again.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Mapping, Optional

from ..config import Config
from ..log import JobLog
from ..node import holds
from ..node.ledger import this_node

GPU_ENV = "SLURM_MIG_HOLD_GPU"
POLL = 5.0          # s between two looks at the stuck instance (NVML only)


def ask(cfg: Config, job: str, gpu: int, instance: str, env: Mapping[str, str] = os.environ) -> None:
    """Under the node lock, for a job whose GPU `gpu` holds the busy unowned
    `instance`: start a submitter unless the GPU is held or asked for already.
    Outside Slurm (no partition from slurmd) nothing is asked."""
    from ..slurm.holds import partition_of
    if not cfg.hold_stuck_gpus or partition_of(env) is None or not holds.want(cfg.state_dir, gpu, instance):
        return
    from . import detached
    try:
        detached.spawn_detached("stuck-hold", job, {GPU_ENV: str(gpu)})
    except OSError as e:            # a later job asks again once the marker is due
        JobLog(job).warning("GPU %d not held: %s", gpu, e)


def submit(cfg: Config, env: Mapping[str, str] = os.environ) -> str:
    """The detached submitter: hold the GPU named in GPU_ENV unless a live
    hold has it. What was done, for the log."""
    from ..slurm import holds as slurm_holds
    partition = slurm_holds.partition_of(env)
    if not env.get(GPU_ENV, "").isdigit() or partition is None:
        return "nothing to hold (no GPU or partition given)"
    gpu = int(env[GPU_ENV])
    node = this_node(env)
    with holds.lock(cfg.state_dir, gpu):
        hold = holds.read(cfg.state_dir, gpu)
        if hold is None:
            return f"GPU {gpu} needs no hold any more"
        if hold.job is not None and slurm_holds.alive(hold.job, cfg.slurm_bin_dir):
            holds.write(cfg.state_dir, hold._replace(since=time.time()))
            return f"GPU {gpu} held by job {hold.job} already"
        slurm_holds.cancel_leftovers(node, gpu, cfg.slurm_bin_dir)
        job = slurm_holds.submit(node, partition, gpu, hold.instance,
                                 slurm_holds.wait_command(sys.executable, env), cfg.slurm_bin_dir)
        holds.write(cfg.state_dir, hold._replace(job=job, given=None, since=time.time()))
    try:
        slurm_holds.wait_until_off_node(env.get("SLURM_JOB_ID", ""), cfg.slurm_bin_dir)
        slurm_holds.release(job, cfg.slurm_bin_dir)
    except Exception:
        slurm_holds.cancel_leftovers(node, gpu, cfg.slurm_bin_dir)
        raise
    return f"GPU {gpu} held by job {job} while {hold.instance} is busy"


def started(cfg: Config, job: str, uid: Optional[int], job_gpus: str) -> bool:
    """The Prolog of a hold: True (nothing more to do) when `job` is one."""
    hold = holds.started(cfg.state_dir, job, uid, job_gpus)
    if hold is None:
        return False
    JobLog(job).info("stuck-GPU hold of GPU %d given GPU %s%s", hold.gpu, job_gpus,
                     "" if hold.given == hold.gpu else ": it ends at once")
    return True


def wait(cfg: Config, job: str) -> str:
    """The hold's batch script: return once the GPU is free of the stuck instance."""
    from ..node.context import NodeContext
    hold = holds.of_job(cfg.state_dir, job, os.getuid())
    if hold is None:
        return "not a stuck-GPU hold"
    if hold.given != hold.gpu:
        return f"given GPU {hold.given}, not GPU {hold.gpu}: ended at once"
    ctx = NodeContext(cfg)
    while holds.still_stuck(ctx, hold):
        time.sleep(POLL)
    return f"GPU {hold.gpu} free of {hold.instance}: given back"
