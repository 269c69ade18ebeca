"""Prolog, epilog, task-prolog and reconcile: the node-side hook contract.

Per-job problems (bad request, no room, a failed create) never drain the
node: the prolog records the reason, exits 0, and the task-prolog prints it
and fails the job. Node problems (NVML unusable, MIG mode stuck) raise
NodeProblem, which the CLI turns into exit 1 with the reason.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from .config import Config
from .errors import BadInput, NoFit, NodeProblem
from .fsutil import atomic_write
from .jobfiles import ENV, FAIL, job_file
from .ledger import Ledger, Record
from .log import JobLog
from .request import check_job_id, format_spec, parse_spec

if TYPE_CHECKING:      # imported where used: the epilog needs no planner
    from . import planner
    from .driver import Driver, Gpu, Instance

POLL_INTERVAL = 0.5


class Node:
    """One node's hook context: config, ledger and (lazily) the NVML driver."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ledger = Ledger(cfg.state_dir, cfg.lock_timeout)
        self._driver: Optional[Driver] = None

    @property
    def driver(self) -> Driver:
        if self._driver is None:
            from .driver import Driver, open_backend
            self._driver = Driver(open_backend(self.cfg.backend))
        return self._driver

    # -- job files read by the TaskProlog ---------------------------------
    def _job_file(self, job: str, suffix: str) -> str:
        return job_file(self.cfg.run_dir, job, suffix)

    def _write_job_file(self, job: str, suffix: str, text: str, uid: Optional[int]) -> None:
        os.makedirs(self.cfg.run_dir, mode=0o755, exist_ok=True)
        atomic_write(self._job_file(job, suffix), text.encode(), mode=0o400, uid=uid)

    def remove_job_files(self, job: str) -> None:
        for suffix in (ENV, FAIL):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._job_file(job, suffix))

    def bind(self, job: str, uid: Optional[int], uuids: List[str]) -> None:
        self.remove_job_files(job)
        self._write_job_file(job, ENV, f"export CUDA_VISIBLE_DEVICES={','.join(uuids)}\n", uid)

    def fail(self, job: str, uid: Optional[int], request: dict, reason: str,
             keep_record: bool = False) -> None:
        """Fail only this job: record why; the TaskProlog prints it and exits 1.
        keep_record: the job's record still owns something to clean; leave it."""
        JobLog(job).error("job refused: %s", reason)
        if not keep_record:
            self.ledger.put(Record(job=job, state="failed", request=request, reason=reason, uid=uid))
        self.remove_job_files(job)
        self._write_job_file(job, FAIL, f"slurm-mig: job {job} could not get its MIG "
                             f"devices: {reason}\n", uid)

    # -- reading the node --------------------------------------------------
    def live_instances(self, gpus: Optional[List[int]] = None) -> Dict[Tuple[int, int], Instance]:
        d = self.driver
        indices = range(d.count()) if gpus is None else gpus
        return {(i.gpu, i.gi_id): i for g in indices for i in d.gpu(g).instances}

    def view(self, gpus: Optional[List[Gpu]] = None) -> List[planner.GpuView]:
        from .executor import node_view
        return node_view(self.driver.gpus() if gpus is None else gpus, self.ledger.live())


def _matches(entry: dict, inst: Instance) -> bool:
    """A ledger entry names this live instance: same UUID, or for an entry
    written before creation finished, same profile at the same place."""
    if entry.get("uuid"):
        return entry["uuid"] == inst.uuid
    return entry.get("profile_id") == inst.profile_id and entry.get("start") == inst.start


def release(node: Node, rec: Record, retries: int, delay: float) -> Record:
    """Destroy the record's instances (CIs first). Instances still held by a
    process are retried, then kept owned by the record in state 'releasing'."""
    d, jl = node.driver, JobLog(rec.job)
    live: Dict[int, Dict[Tuple[int, int], Instance]] = {}     # per GPU, read once, again after a failure

    def find(entry: dict) -> Optional[Instance]:
        g = entry.get("gpu")
        if g is None:
            return None
        if g not in live:
            live[g] = node.live_instances([g])
        return next((i for i in live[g].values() if _matches(entry, i)), None)

    remaining = []
    for entry in rec.instances:
        for attempt in range(retries + 1):
            inst = find(entry)
            if inst is None:
                break
            try:
                d.destroy(inst.gpu, inst.gi_id)
                jl.info("destroyed %s %s on GPU %d (GI %d)", inst.profile, inst.uuid, inst.gpu, inst.gi_id)
                break
            except d.nvml.NVMLError as e:
                live.pop(inst.gpu, None)
                pids = d.busy_pids(inst.uuid) if inst.uuid else []
                jl.warning("cannot destroy %s on GPU %d yet (%s; pids %s), attempt %d/%d",
                           inst.uuid, inst.gpu, e, pids or "none", attempt + 1, retries + 1)
                if attempt < retries:
                    time.sleep(delay)
        else:
            remaining.append(entry)
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
        rec.state, rec.instances = "releasing", remaining
        rec.reason = "; ".join(filter(None, [
            "instances still in use: " + ", ".join(str(e.get("uuid")) for e in remaining) if remaining else "",
            "MIG mode not back on for GPU " + ",".join(map(str, still_off)) if still_off else ""]))
        jl.error("%s; `slurm-mig reconcile` retries them", rec.reason)
    else:
        rec.state = "released"
    node.ledger.put(rec)
    return rec


def tidy(node: Node, destroy_unowned: bool = False, dry_run: bool = False,
         active_jobs: Optional[set] = None, gpus: Optional[List[Gpu]] = None) -> List[str]:
    """Reconcile ledger and NVML; the caller holds the node lock. Returns what it did.

    - planned/created records: their prolog died mid-way; undo them.
    - releasing records: retry destroying their instances.
    - bound records whose instances vanished (GPU reset, reboot): close them.
    - bound records of jobs Slurm no longer runs (when `active_jobs` is known).
    - with destroy_unowned: instances no live record owns are destroyed.
    `gpus` is a fresh read of the node, when the caller has one.
    """
    actions = []
    live = ({(i.gpu, i.gi_id): i for g in gpus for i in g.instances} if gpus is not None
            else node.live_instances())
    for rec in node.ledger.live():
        present = [e for e in rec.instances if any(_matches(e, i) for i in live.values())]
        if rec.static:       # static instances stay; only the record of an ended job closes
            if active_jobs is not None and rec.job not in active_jobs:
                actions.append(f"job {rec.job}: ended; static record closed")
                if not dry_run:
                    rec.state = "released"
                    node.ledger.put(rec)
            continue
        if rec.state in ("planned", "created", "releasing") or (
                active_jobs is not None and rec.job not in active_jobs):
            actions.append(f"job {rec.job}: release {len(present)} instance(s) ({rec.state})")
            if not dry_run:
                rec.reason = rec.reason or f"cleaned by reconcile from state {rec.state}"
                release(node, rec, retries=0, delay=0)
                if rec.state == "released":
                    node.remove_job_files(rec.job)
        elif rec.instances and not present:
            actions.append(f"job {rec.job}: instances vanished; record closed")
            if not dry_run:
                rec.state, rec.reason = "released", "instances vanished (GPU reset or reboot)"
                node.ledger.put(rec)
    if destroy_unowned:
        entries = [e for r in node.ledger.live() for e in r.instances]
        for (gpu, gi_id), inst in sorted(node.live_instances().items()):
            if any(_matches(e, inst) for e in entries if e.get("gpu") == gpu):
                continue
            actions.append(f"GPU {gpu}: destroy unowned {inst.profile} GI {gi_id} ({inst.uuid})")
            if not dry_run:
                node.driver.destroy(gpu, gi_id)
    return actions


def prolog(cfg: Config, job: str, spec: str, gpu: Optional[int] = None,
           uid: Optional[int] = None) -> None:
    """Create and bind the job's instances. Raises NodeProblem only for node faults."""
    job = check_job_id(job)
    node, jl = Node(cfg), JobLog(job)
    try:
        request = parse_spec(spec)
    except BadInput as e:
        with node.ledger.lock():
            node.fail(job, uid, {}, str(e))
        return
    from . import planner
    policy = planner.POLICIES[cfg.policy]
    deadline = time.monotonic() + cfg.wait_for_room
    nvml_errors = 0
    while True:
        with node.ledger.lock():
            nvml = node.driver.nvml          # NVML that cannot even start is a node problem
            try:
                rec = node.ledger.get(job)
                if rec is not None and rec.state == "bound":
                    live = node.live_instances()
                    if all(any(_matches(e, i) for i in live.values()) for e in rec.instances):
                        node.bind(job, uid, rec.uuids)
                        jl.info("already bound to %s", ",".join(rec.uuids))
                        return
                gpus = node.driver.gpus()
                if tidy(node, gpus=gpus):
                    gpus = node.driver.gpus()       # tidy changed the node: read it again
                reason = _try_place(node, job, request, gpu, uid, policy, gpus)
            except nvml.NVMLError as e:
                nvml_errors += 1
                reason = f"NVML error while reading the node: {e}"
                jl.warning("%s (%d/2)", reason, nvml_errors)
                if nvml_errors < 2:
                    continue
                break
            if reason is None:
                return
        if time.monotonic() >= deadline:
            break
        jl.info("waiting for room: %s", reason)
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
    with node.ledger.lock():
        node.fail(job, uid, request, reason)


def run_prolog(cfg: Config, job: str, spec: Optional[str] = None, gpu: Optional[int] = None,
               uid: Optional[int] = None, idx: Optional[str] = None,
               whole_gpus: Optional[List[int]] = None) -> None:
    """The Prolog for either mode. What is not given is read from Slurm
    (`scontrol show job -d -o`); a job given whole GPUs (--gres=gpu) gets them
    usable; a job with neither is left alone."""
    if cfg.mode == "static":
        from . import static
        if idx is None:
            from .slurm import read_job
            indices = read_job(job, cfg.job_source).mig_idx
            if not indices:
                return
        else:
            indices = static.parse_idx(idx)
        static.prolog(Node(cfg), job, indices, uid)
        return
    if spec is None and whole_gpus is None:
        from .slurm import read_job
        req = read_job(job, cfg.job_source)
        spec, gpu = req.spec or None, gpu if gpu is not None else req.gpu
        whole_gpus = req.whole_gpus if not spec else None
    if whole_gpus:
        from .wholegpu import prolog as whole_gpu_prolog
        whole_gpu_prolog(Node(cfg), job, whole_gpus, uid)
    elif spec:
        prolog(cfg, job, spec, gpu, uid)


def _try_place(node: Node, job: str, request: dict, gpu: Optional[int], uid: Optional[int],
               policy: planner.Policy, gpus: List[Gpu], attempts: int = 2) -> Optional[str]:
    """Plan and apply under the lock. Returns why the request does not fit
    now (worth waiting for), or None when the job is settled: bound, or
    failed for good after an apply was rolled back and retried from a fresh read."""
    from . import planner
    from .executor import ApplyFailed, apply
    jl = JobLog(job)
    # Ampere cannot switch MIG on without a reset: a job that needs such a GPU
    # (Slurm's GPU, or any when nothing else fits) is a problem the admin must fix.
    reset_needed = [g for g in gpus if g.model is not None and g.mig_current == 0
                    and g.model.mig_toggle_needs_reset and gpu in (None, g.index)]
    if reset_needed and gpu is not None:
        raise _mig_off_problem(reset_needed[0])
    for attempt in range(attempts):
        try:
            view = node.view(gpus if attempt == 0 else None)
            p = _plan_with_fallback(planner, view, request, gpu, policy, node.cfg.gpu_fallback, jl)
        except NoFit as e:
            if reset_needed:
                raise _mig_off_problem(reset_needed[0]) from e
            return str(e)
        rec = Record(job=job, state="planned", request=request, uid=uid, instances=[
            {"gpu": pl.gpu, "profile": pl.profile.name, "profile_id": pl.profile.id,
             "start": pl.start, "size": pl.profile.mem_slots,
             "gi_id": pl.reuse.gi_id if pl.reuse else None,
             "uuid": pl.reuse.uuid if pl.reuse else None} for pl in p.placements])
        node.ledger.put(rec)
        try:
            bound = apply(node.driver, p)
        except ApplyFailed as e:
            if isinstance(e.cause, NodeProblem):
                rec.state, rec.reason = "failed", str(e.cause)
                node.ledger.put(rec)
                raise e.cause
            jl.warning("apply failed (attempt %d/%d): %s", attempt + 1, attempts, e.cause)
            if e.leaked:
                rec.state, rec.reason = "releasing", f"rollback incomplete: {e.cause}"
                rec.instances = [i._asdict() for i in e.leaked]
            else:
                rec.state, rec.reason = "released", f"apply failed: {e.cause}"
            node.ledger.put(rec)
            last = f"creating instances failed: {e.cause}"
            continue
        rec.state, rec.instances = "created", [i._asdict() for i in bound]
        node.ledger.put(rec)
        node.bind(job, uid, rec.uuids)
        rec.state = "bound"
        node.ledger.put(rec)
        jl.info("bound %s (%s)", ",".join(rec.uuids), format_spec(request))
        return None
    node.fail(job, uid, request, last)
    return None


def _mig_off_problem(g: Gpu) -> NodeProblem:
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


def epilog(cfg: Config, job: str) -> Record:
    """Tear the job's instances down. Idempotent; nothing to do is success."""
    job = check_job_id(job)
    node = Node(cfg)
    with node.ledger.lock():
        node.remove_job_files(job)
        rec = node.ledger.get(job)
        if rec is None or not rec.live:
            return rec
        if not rec.static:
            # Intent first: whatever fails below, reconcile knows the job is over.
            rec.state = "releasing"
            node.ledger.put(rec)
        nvml = node.driver.nvml
        try:
            return _release_job(node, rec, cfg)
        except nvml.NVMLError as e:
            # The instances stay owned by the record; reconcile finishes the job.
            rec.state, rec.reason = "releasing", f"NVML error during epilog: {e}"
            node.ledger.put(rec)
            JobLog(job).error("%s; `slurm-mig reconcile` retries", rec.reason)
            return rec


def _release_job(node: Node, rec: Record, cfg: Config) -> Record:
    """Static instances stay (a process left on one is logged); dynamic ones go."""
    if rec.static:
        for uuid in rec.uuids:
            pids = node.driver.busy_pids(uuid)
            if pids:
                JobLog(rec.job).warning("static instance %s still used by pids %s", uuid, pids)
        rec.state = "released"
        node.ledger.put(rec)
        return rec
    return release(node, rec, cfg.epilog_retries, cfg.epilog_retry_delay)


def reconcile(cfg: Config, dry_run: bool = False, active_jobs: Optional[set] = None) -> List[str]:
    node = Node(cfg)
    with node.ledger.lock():
        actions = tidy(node, destroy_unowned=cfg.mode == "dynamic", dry_run=dry_run,
                       active_jobs=active_jobs)
        if not dry_run:
            node.ledger.prune()
    return actions
