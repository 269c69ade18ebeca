"""Releasing a job's instances, and reconciling the ledger with NVML.

`release` is what an Epilog does for one record; `reconcile` finds what
nobody will release otherwise (dead prologs, jobs gone without an Epilog,
instances no record owns) and releases it. Callers hold the node lock.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..log import JobLog
from ..nvml.errors import Effect, NVMLError, describe, fault
from . import counters, isolation
from .context import NodeContext
from .occupancy import owner_of
from ..core.lifecycle import UNFINISHED, Record, State

if TYPE_CHECKING:
    from ..core.view import Gpu, Held, Instance


def release(ctx: NodeContext, rec: Record, retries: int, delay: float) -> Record:
    """Destroy the record's instances (CIs first). Instances still held by a
    process are retried, then kept owned by the record (RELEASING), as at
    once are those of a GPU that needs an admin (nvml/errors.py: node)."""
    d, jl = ctx.devices.driver, JobLog(rec.job)
    live: Dict[int, Dict[Tuple[int, int], Instance]] = {}     # per GPU, read once, again after a failure

    def find(entry: "Held") -> Optional["Instance"]:
        if entry.gpu not in live:
            live[entry.gpu] = ctx.devices.live_instances([entry.gpu])
        return next((i for i in live[entry.gpu].values() if entry.names(i)), None)

    blocked = isolation.take_back(ctx, rec)        # cap nodes back to root before any destroy
    remaining = []
    for entry in (e for e in rec.instances if e not in blocked):
        for attempt in range(retries + 1):
            inst = find(entry)
            if inst is None:
                break
            try:
                if not d.destroy(inst.gpu, inst.gi_id):     # "not found", yet just listed:
                    live.pop(inst.gpu, None)                # read again; gone only if absent
                    continue
                jl.info("destroyed %s %s on GPU %d (GI %d)", inst.profile, inst.uuid, inst.gpu, inst.gi_id)
                break
            except NVMLError as e:
                live.pop(inst.gpu, None)
                pids = d.busy_pids(inst.uuid) if inst.uuid else []
                jl.warning("cannot destroy %s on GPU %d yet (%s; pids %s), attempt %d/%d",
                           inst.uuid, inst.gpu, describe(e), pids or "none", attempt + 1, retries + 1)
                if fault(e).effect is Effect.NODE:
                    remaining.append(entry)     # waiting will not help: reconcile, once fixed
                    break
                if attempt < retries:
                    time.sleep(delay)
        else:
            remaining.append(entry)
    d.forget()        # verify on a fresh read: one that missed an instance must not release it
    live.clear()
    remaining = [e for e in rec.instances if e in remaining or e in blocked or find(e) is not None]
    still_off = []
    for g in rec.mig_off_gpus:           # a GPU handed over whole goes back to MIG
        status = d.set_mig_mode(g, True)
        if status == 0:
            jl.info("GPU %d: MIG mode back on", g)
        else:
            still_off.append(g)
            jl.warning("GPU %d: MIG mode not back on yet (NVML status %d)", g, status)
    rec.mig_off_gpus = still_off
    if remaining or still_off:
        rec.instances = remaining
        rec.move(State.RELEASING, "; ".join(filter(None, [
            "instances not destroyed: " + ", ".join(str(e.uuid) for e in remaining) if remaining else "",
            "MIG mode not back on for GPU " + ",".join(map(str, still_off)) if still_off else ""])))
        jl.error("%s; `slurm-mig reconcile` retries them", rec.reason)
    else:
        rec.move(State.RELEASED)
    ctx.ledger.put(rec)
    return rec


def reconcile(ctx: NodeContext, destroy_unowned: bool = False, dry_run: bool = False,
              active_jobs: Optional[set] = None, gpus: Optional[List["Gpu"]] = None,
              since: Optional[float] = None) -> List[str]:
    """Make the ledger and NVML agree; returns what it did (or would do).

    - planned/created records: their prolog died mid-way; undo them.
    - releasing records, and records moved aside for a newer job with the
      same id: release their instances (busy ones stay owned).
    - bound records whose instances vanished (GPU reset, reboot): close them.
    - records of GPUs this node lost (replaced, missing): close them; records
      of another node (a shared or copied state_dir) are listed, not touched.
    - bound records of jobs Slurm no longer runs (`active_jobs`, Slurm's answer
      to a query started at `since`): a record written since then belongs to a
      job that started during the query and is kept.
    - with destroy_unowned: instances no live record owns are destroyed
      (never those of a profile the catalog does not know, never busy ones:
      those are reported and the rest go on). While a record is quarantined
      (unreadable), they may be its job's: they are destroyed only once
      Slurm's answer shows every job running here with a readable record
      (the quarantine is then cleared), else kept and listed.
    `gpus` is a fresh read of the node, when the caller has one.
    """
    actions = []
    live = ({(i.gpu, i.gi_id): i for g in gpus for i in g.instances} if gpus is not None
            else ctx.devices.live_instances())
    ours, stranded = ctx.ledger.split()
    for rec in (r for r in ours if r.live):
        present = [i for i in live.values() if rec.owns(i)]
        gone = rec.aside or (active_jobs is not None and rec.job not in active_jobs
                             and (since is None or rec.updated < since))
        if rec.static:       # static instances stay; only the record of an ended job closes
            if gone:
                actions.append(f"job {rec.job}: ended; static record closed")
                if not dry_run:
                    ctx.ledger.put(rec.move(State.RELEASED))
            continue
        if rec.state in UNFINISHED or gone:
            actions.append(f"job {rec.job}: release {len(present)} instance(s) ({rec.state.value})")
            if not dry_run:
                rec.reason = rec.reason or f"cleaned by reconcile from state {rec.state.value}"
                release(ctx, rec, retries=0, delay=0)
                if rec.state is State.RELEASED and not rec.aside:
                    ctx.handout.remove(rec.job)
        elif rec.instances and not present:
            actions.append(f"job {rec.job}: instances vanished; record closed")
            if not dry_run:
                ctx.ledger.put(rec.move(State.RELEASED, "instances vanished (GPU reset or reboot)"))
    actions += _stranded(ctx, stranded, dry_run)
    if destroy_unowned:
        actions += _quarantine(ctx, dry_run, active_jobs) or _destroy_unowned(ctx, dry_run)
    counters.bump(ctx.cfg.state_dir, "reconcile_actions", 0 if dry_run else len(actions))
    return actions


def _stranded(ctx: NodeContext, stranded: List[Record], dry_run: bool) -> List[str]:
    """Close the records of GPUs this node lost; list another node's."""
    actions = []
    for rec in stranded:
        gpus = ", ".join(rec.gpu_uuids)
        if not ctx.ledger.lost_gpus(rec):
            actions.append(f"job {rec.job}: record {rec.file} is node {rec.node}'s (GPUs {gpus} are not "
                           f"here): left alone; give each node its own local state_dir")
            continue
        actions.append(f"job {rec.job}: GPU(s) {gpus} are no longer on this node (replaced or "
                       "removed); record closed")
        if not dry_run:
            ctx.ledger.put(rec.move(State.RELEASED, "its GPUs left this node (replaced or removed)"))
    return actions


def _quarantine(ctx: NodeContext, dry_run: bool, active_jobs: Optional[set]) -> List[str]:
    """What keeps unowned instances while records are quarantined; [] when
    nothing does (none are, or Slurm says each job here has its record:
    the quarantine is cleared, unless this is a dry run)."""
    names = ctx.ledger.quarantined()
    if not names:
        return []
    records = ctx.ledger.live()
    recorded = {r.job for r in records}
    unknown = None if active_jobs is None else sorted(set(active_jobs) - recorded)
    if unknown == []:
        if not dry_run:
            ctx.ledger.forget_quarantined()
        return []
    why = ("Slurm could not be asked which jobs run here" if unknown is None else
           f"Slurm runs job(s) {', '.join(unknown)} here without a readable record")
    kept = [f"GPU {gpu}: kept unowned {inst.profile} GI {gi_id} ({inst.uuid}): a quarantined record "
            f"may own it ({why})" for (gpu, gi_id), inst in sorted(ctx.devices.live_instances().items())
            if inst.known and owner_of(inst, records) is None]
    return kept + [f"quarantined record(s) in {ctx.ledger.quarantine_dir}: {', '.join(names)}; "
                   "remove them once their jobs have ended to release what they held"]


def _destroy_unowned(ctx: NodeContext, dry_run: bool) -> List[str]:
    """Destroy instances no live record owns; one a process runs on (or that
    NVML will not destroy) is reported and kept, and the others still go."""
    records, actions = ctx.ledger.live(), []
    for (gpu, gi_id), inst in sorted(ctx.devices.live_instances().items()):
        if not inst.known or any(r.owns(inst) for r in records):
            continue
        what = f"unowned {inst.profile} GI {gi_id} ({inst.uuid})"
        pids = ctx.devices.driver.busy_pids(inst.uuid) if inst.uuid else []
        if pids:
            actions.append(f"GPU {gpu}: kept {what}: in use by pids {pids}")
            continue
        actions.append(f"GPU {gpu}: destroy {what}")
        if not dry_run:
            try:
                ctx.devices.driver.destroy(gpu, gi_id)
            except NVMLError as e:
                actions[-1] = f"GPU {gpu}: kept {what}: {describe(e)}"
    return actions


def reconcile_node(ctx: NodeContext, dry_run: bool = False, active_jobs: Optional[set] = None,
                   since: Optional[float] = None) -> List[str]:
    """`slurm-mig reconcile`: a full reconcile under the node lock, then old
    closed records pruned; `since`: when the Slurm query behind `active_jobs`
    started. A dry run only reads: no lock, nothing created."""
    if dry_run:
        return reconcile(ctx, destroy_unowned=ctx.cfg.mode == "dynamic", dry_run=True,
                         active_jobs=active_jobs, since=since)
    with ctx.ledger.lock():
        actions = reconcile(ctx, destroy_unowned=ctx.cfg.mode == "dynamic",
                            active_jobs=active_jobs, since=since)
        ctx.ledger.prune()
    return actions
