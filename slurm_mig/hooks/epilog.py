"""The Epilog: tear the job's instances down (dynamic mode) or close its
record (static mode). Idempotent; nothing to do is success. An NVML error
leaves the instances owned by the record for reconcile, never a failed Epilog
(which would drain the node).

Under slurmd (`env` given), a dynamic-mode job that held no GPU or shard here
(no SLURM_JOB_GPUS) and has no record returns at once: its Prolog returned
before doing anything, so there is nothing to release and no Prolog to stop.
Every CPU-only job's Epilog takes this path, so it loads nothing else.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

from ..config import Config
from ..core.syntax import check_job_id
from ..log import JobLog
from ..core.lifecycle import Record, State
from ..node.ledger import Ledger

if TYPE_CHECKING:
    from ..node.context import NodeContext


def epilog(cfg: Config, job: str, env: Optional[Mapping[str, str]] = None) -> Optional[Record]:
    job = check_job_id(job)
    if env is not None and cfg.mode == "dynamic" and not env.get("SLURM_JOB_GPUS") \
            and not Ledger(cfg.state_dir).has(job):
        return None
    if env is not None and env.get("SLURM_JOB_UID") == "0" and cfg.mode == "dynamic":
        from ..node.holds import ended           # a stuck-GPU hold holds nothing here
        if ended(cfg.state_dir, job, 0) is not None:
            return None
    from ..node.context import EPILOG_FIRST, NodeContext
    from ..nvml.errors import NVMLError, explain
    ctx = NodeContext(cfg)
    with ctx.ledger.lock():
        rec = ctx.ledger.get(job)
        if rec is None or rec.state is State.RELEASED:
            # A Prolog may still be waiting for room: this tells it the job is over.
            ctx.ledger.put(Record(job=job, state=State.RELEASED, reason=EPILOG_FIRST))
        if rec is not None and rec.live and not rec.static:
            # Intent first: whatever fails below, reconcile knows the job is over.
            ctx.ledger.put(rec.move(State.RELEASING))
        ctx.handout.remove(job)
        if rec is None or not rec.live:
            return rec
        try:
            return _release_job(ctx, rec, cfg)
        except NVMLError as e:
            ctx.ledger.put(rec.move(State.RELEASING, explain(e, "releasing the job's instances")))
            JobLog(job).error("%s; `slurm-mig reconcile` retries", rec.reason)
            return rec


def _release_job(ctx: NodeContext, rec: Record, cfg: Config) -> Record:
    """Static instances stay (a process left on one is logged); dynamic ones go."""
    if rec.static:
        for uuid in rec.uuids:
            pids = ctx.devices.driver.busy_pids(uuid)
            if pids:
                JobLog(rec.job).warning("static instance %s still used by pids %s", uuid, pids)
        ctx.ledger.put(rec.move(State.RELEASED))
        return rec
    from ..node.reconcile import release
    return release(ctx, rec, cfg.epilog_retries, cfg.epilog_retry_delay)
