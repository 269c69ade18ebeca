"""Dynamic mode Prolog for MIG requests: plan, create and bind the job's
instances on the GPU Slurm gave its shards. When they do not fit next to the
running instances, a batch job goes back to the queue (`send_back`); a job
that cannot waits a bounded time for room, holding the place it waits for
(core/reservation.py) so that jobs arriving meanwhile do not take it.

Per-job problems (bad request, no room, a failed create) fail the job alone
(its TaskProlog prints the reason); node problems raise NodeProblem.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Optional

from ..config import Config
from ..core import eviction, reservation
from ..core.syntax import MigRequest, check_job_id
from ..core.view import Held
from ..errors import NeverFits, NoFit, NodeProblem
from ..log import JobLog
from ..node.context import NodeContext
from ..node import reservations
from ..node.isolation import hand_over
from ..node.occupancy import read_view
from ..core.lifecycle import Record, State
from ..node.reconcile import reconcile
from ..nvml.errors import node_problem
from .admission import Interactive, admit

if TYPE_CHECKING:
    from ..core.policies import Policy
    from ..core.view import Gpu, GpuView


def prolog(cfg: Config, job: str, request: MigRequest, gpu: Optional[int] = None,
           uid: Optional[int] = None,
           send_back: Optional[Callable[[str], Optional[str]]] = None,
           user: Optional[Interactive] = None, requeueable: bool = False,
           evict: Optional[Callable[[List[str]], None]] = None) -> None:
    """Create and bind the job's instances. Raises NodeProblem only for node
    faults. `send_back(reason)` requeues the job and returns None, or says why
    it could not; None: the job cannot go back to the queue (outside Slurm).
    `user`: an srun or salloc job's, told that it waits and why it failed.
    `requeueable`: a batch job Slurm may requeue, which an srun/salloc job may
    send back for `interactive_evict_age` seconds after it starts; `evict(jobs)`
    requeues such jobs when this one starts to wait (core/eviction.py)."""
    job = check_job_id(job)
    node, jl = NodeContext(cfg), JobLog(job)
    node.handout.ensure()           # a bad run_dir is found before any instance exists, not after
    from ..core.policies import policy as named_policy
    policy = named_policy(cfg.policy)

    def attempt():
        rec = node.claim(job, uid, request=request)
        if rec is not None and rec.state is State.PREPARE_COMPLETED:
            live = node.devices.live_instances().values()
            if all(any(e.names(i) for i in live) for e in rec.instances):
                node.rebind(rec, uid)
                jl.info("already bound to %s", ",".join(rec.uuids))
                return None
        gpus = node.devices.driver.gpus()
        if reconcile(node, gpus=gpus):
            gpus = node.devices.driver.gpus()       # reconcile changed the node: read it again
        return _try_place(node, job, request, gpu, uid, policy, gpus, requeueable=requeueable)

    held = []

    def hold():
        """Waiting: keep jobs that arrive meanwhile off the place this one
        waits for, one no other waiting job holds; with `evict`, first look
        for young batch jobs whose requeue frees one (then returns that
        requeue, which runs outside the node lock)."""
        g = next((g for g in read_view(node) if g.index == gpu), None)
        if g is None:
            return None
        others = reservations.load(cfg.state_dir)
        room = _make_room(node, job, request, g, others, policy) if evict is not None else None
        r = room.hold if room is not None else reservation.target(g, job, request, others)
        if r is not None:
            reservations.hold(cfg.state_dir, r, time.time() + cfg.wait_for_room + cfg.lock_timeout)
            held.append(r)
        if room is not None:
            jl.info("sending back batch job(s) %s, which started under interactive_evict_age = %g s ago, "
                    "to make room on GPU %d", ",".join(room.victims), cfg.interactive_evict_age, gpu)
            return lambda: evict(room.victims)
        return None

    try:
        admit(node, job, uid, cfg.wait_for_room, send_back, attempt,
              lambda **fields: Record(job=job, request=request, uid=uid, **fields), "reading the node", hold, user)
    finally:
        if held:
            with node.ledger.lock():
                reservations.drop(cfg.state_dir, job)


def _make_room(node: NodeContext, job: str, request: MigRequest, g: "GpuView",
               others: List[reservation.Reservation], policy: "Policy") -> Optional[eviction.Eviction]:
    """The batch jobs on GPU `g` that Slurm may requeue and that were bound
    here at most interactive_evict_age seconds ago (the ledger's records)
    whose requeue makes room for `job` there, and the place they free;
    None when none is needed or none would do."""
    since = time.time() - node.cfg.interactive_evict_age
    young = {r.job: r.requeueable_since for r in node.ledger.live()
             if r.state is State.PREPARE_COMPLETED and r.requeueable_since and r.requeueable_since >= since}
    room = eviction.make_room(g, job, request, young, others, policy) if young else None
    return room if room is not None and room.victims else None


def _try_place(node: NodeContext, job: str, request: MigRequest, gpu: Optional[int], uid: Optional[int],
               policy: "Policy", gpus: List["Gpu"], attempts: int = 2, requeueable: bool = False) -> Optional[str]:
    """Plan and apply under the lock. Returns why the request does not fit
    now (worth waiting for), or None when the job is settled: bound, or
    failed for good after an apply was rolled back and retried from a fresh read.
    `requeueable`: Slurm may requeue the job (its record says since when)."""
    from ..core import planner
    from ..node.executor import ApplyFailed, apply
    jl = JobLog(job)
    # Ampere cannot switch MIG on without a reset: a job that needs such a GPU
    # (Slurm's GPU, or any when nothing else fits) is a problem the admin must fix.
    reset_needed = [g for g in gpus if g.model is not None and g.mig_capable and not g.mig_on
                    and g.model.mig_toggle_needs_reset and gpu in (None, g.index)]
    if reset_needed and gpu is not None:
        raise _mig_off_problem(reset_needed[0])
    unplaceable = next((_unplaceable(g) for g in gpus if g.index == gpu), f"GPU {gpu} does not exist on this node") \
        if gpu is not None else None
    if unplaceable:                 # a fact of the node, not a lack of room: the job fails at once
        node.fail(job, uid, unplaceable, Record(job=job, state=State.FAILED, request=request, uid=uid))
        return None
    for attempt in range(attempts):
        try:
            view = reservation.apply(read_view(node, gpus if attempt == 0 else None),
                                     reservations.load(node.cfg.state_dir), job)
            p = _plan_with_fallback(planner, view, request, gpu, policy, node.cfg.gpu_fallback, jl)
        except NoFit as e:
            if reset_needed:
                raise _mig_off_problem(reset_needed[0]) from e
            if isinstance(e, NeverFits):         # waiting cannot help
                node.fail(job, uid, str(e), Record(job=job, state=State.FAILED, request=request, uid=uid))
                return None
            return str(e)
        uuid_of = {g.index: g.uuid for g in gpus}
        rec = Record(job=job, state=State.PREPARE_STARTED, request=request, uid=uid,
                     requeueable_since=time.time() if requeueable else 0.0,
                     gpu_uuids=[uuid_of[g] for g in p.gpus if g in uuid_of], instances=[
            Held(gpu=pl.gpu, profile=pl.profile.name, profile_id=pl.profile.id,
                 start=pl.start, size=pl.profile.mem_slots,
                 gi_id=pl.reuse.gi_id if pl.reuse else None,
                 uuid=pl.reuse.uuid if pl.reuse else None) for pl in p.placements])
        node.ledger.put(rec)
        try:
            bound = apply(node.devices.driver, p)
        except ApplyFailed as e:
            problem = node_problem(e.cause, "creating instances")
            if problem is not None and (problem is e.cause or attempt + 1 == attempts):
                # A node problem (an NVML one once retried): what apply left stays named (leaked instances, else the
                # planned places) so reconcile undoes it; "failed" would orphan it.
                rec.instances = [Held.of(i) for i in e.leaked] or rec.instances
                node.ledger.put(rec.move(State.RELEASING, str(problem)))
                raise problem from e.cause
            jl.warning("apply failed (attempt %d/%d): %s", attempt + 1, attempts, e)
            if e.leaked:
                rec.instances = [Held.of(i) for i in e.leaked]
                rec.move(State.RELEASING, f"rollback incomplete: {e}")
            else:
                rec.move(State.RELEASED, f"apply failed: {e}")
            node.ledger.put(rec)
            last = f"creating instances failed: {e}"
            continue
        rec.instances = [Held.of(i) for i in bound]
        node.ledger.put(rec.move(State.CREATED))
        if not hand_over(node, rec):        # isolate_devices: its cap nodes, or the job fails alone
            return None
        node.handout.bind(job, uid, rec.uuids, rec)
        node.ledger.put(rec.move(State.PREPARE_COMPLETED))
        jl.info("bound %s (%s)", ",".join(rec.uuids), request)
        return None
    node.fail(job, uid, last, Record(job=job, state=State.FAILED, request=request, uid=uid))
    return None


def _unplaceable(g: "Gpu") -> Optional[str]:
    """Why MIG instances can never be made on GPU `g`, if they cannot."""
    if g.model is None:
        return (f"GPU {g.index} ({g.name}, PCI device id {g.pci_device_id:#010x}) is a model the catalog "
                f"does not know: `slurm-mig catalog import --gpu {g.index}` prints the entry to add")
    if not g.mig_capable:
        return f"GPU {g.index} ({g.name}) does not support MIG"
    return None


def _mig_off_problem(g: "Gpu") -> NodeProblem:
    return NodeProblem(f"GPU {g.index} ({g.model.key}) has MIG mode off and enabling it resets "
                       f"the GPU: run `nvidia-smi -i {g.index} -mig 1` when it is idle, or apply a "
                       "layout with `slurm-mig apply`")


def _plan_with_fallback(planner, view, request, gpu, policy, fallback: bool, jl):
    """Plan on Slurm's GPU; with gpu_fallback, on any GPU of the node when that
    one cannot take the request (Slurm's per-GPU shard counts then no longer
    match the instances; bench/cluster_sim.py measures what it buys)."""
    try:
        return planner.plan(view, request, gpu, policy)
    except NoFit:
        if not fallback or gpu is None:
            raise
        p = planner.plan(view, request, None, policy)
        jl.warning("GPU %d (Slurm's choice) has no room; placing on GPU %s", gpu,
                   ",".join(map(str, p.gpus)))
        return p
