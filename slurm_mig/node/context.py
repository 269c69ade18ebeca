"""One node's context for a hook or a verb: config, ledger, the NVML driver
(opened on first use) and the per-job files the TaskProlog reads."""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from ..config import Config
from ..errors import NodeProblem
from ..fsutil import atomic_write, safe_dir
from ..log import JobLog
from . import counters
from ..core.lifecycle import IllegalTransition, Record, State
from .jobfiles import ENV, FAIL, REQUEUED, STEPS, WHOLE_GPU, Device, devices_text, job_file
from .ledger import Ledger

# The reason of the record an Epilog leaves for a job it found no record of:
# a Prolog still waiting for room sees it and gives up instead of binding.
EPILOG_FIRST = "the epilog ran before the prolog bound anything"

if TYPE_CHECKING:      # imported where used: the epilog needs no planner
    from ..core.view import Gpu, GpuView, Instance, Owner
    from ..nvml.driver import Driver


def owner_of(inst: "Instance", records: List[Record]) -> Optional["Owner"]:
    """The job whose live record owns `inst`, or None."""
    from ..core.view import job_owner
    return next((job_owner(r.job) for r in records if r.owns(inst)), None)


def unowned(inst: "Instance", in_use: Set[str], quarantine: bool) -> Optional["Owner"]:
    """The owner of an instance no live record owns: IN_USE when processes
    run on it, QUARANTINED while an unreadable record may own it, else None
    (idle)."""
    from ..core.view import IN_USE, QUARANTINED
    return IN_USE if inst.uuid in in_use else QUARANTINED if quarantine else None


def node_view(gpus: List["Gpu"], records: List[Record], in_use: Set[str] = frozenset(),
              quarantine: bool = False) -> List["GpuView"]:
    """What the planner sees: catalog-known GPUs, instances marked with the live
    records owning them, or `unowned`'s owner; a GPU a job holds whole names
    that job."""
    from ..core.view import GpuView, occupied
    held = {g: r.job for r in records for g in r.mig_off_gpus}
    views = []
    for g in gpus:
        if g.model is None or not g.mig_capable:
            continue
        if not g.mig_on and g.model.mig_toggle_needs_reset and g.index not in held:
            continue       # Ampere with MIG off: unusable without a reset
        views.append(GpuView(index=g.index, model=g.model, mig_enabled=g.mig_on,
                             occupied=tuple(occupied(i, owner_of(i, records) or unowned(i, in_use, quarantine))
                                            for i in g.instances),
                             whole_by=held.get(g.index)))
    return views


class NodeContext:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ledger = Ledger(cfg.state_dir, cfg.lock_timeout, local_gpus=self.local_gpus)
        self.started = time.time()
        self._local: Optional[Set[str]] = None
        self._driver: Optional[Driver] = None

    @property
    def driver(self) -> "Driver":
        if self._driver is None:
            from ..nvml.backend import open_driver
            self._driver = open_driver(self.cfg.backend)
        return self._driver

    def local_gpus(self) -> Optional[Set[str]]:
        """UUIDs of this node's GPUs (read once), None while NVML cannot list them."""
        from ..nvml.errors import NVMLError
        if self._local is None:
            try:
                self._local = {g.uuid for g in self.driver.gpus(False)}
            except (NVMLError, NodeProblem):
                return None
        return self._local

    # -- job files read by the TaskProlog ---------------------------------
    def _job_file(self, job: str, suffix: str) -> str:
        return job_file(self.cfg.run_dir, job, suffix)

    def _write_job_file(self, job: str, suffix: str, text: str, uid: Optional[int]) -> None:
        safe_dir(self.cfg.run_dir, 0o755, "run_dir")
        atomic_write(self._job_file(job, suffix), text.encode(), mode=0o400, uid=uid)

    def remove_job_files(self, job: str) -> None:
        for suffix in (ENV, FAIL, REQUEUED):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(self._job_file(job, suffix))   # a bad run_dir is refused when written
        steps = self._job_file(job, STEPS)
        if os.path.isdir(steps) and not os.path.islink(steps):
            shutil.rmtree(steps, ignore_errors=True)     # the user's: rmtree follows no link in it
        if self.cfg.dcgm_job_mapping_dir:
            from . import dcgm
            dcgm.remove(self.cfg.dcgm_job_mapping_dir, job)

    def bind(self, job: str, uid: Optional[int], uuids: List[str],
             rec: Optional[Record] = None) -> None:
        """Write the job's device list; with dcgm_job_mapping_dir, label its
        devices (from `rec`) for dcgm-exporter."""
        self.remove_job_files(job)
        self._write_job_file(job, ENV, devices_text(_devices(uuids, rec)), uid)
        if rec is not None and rec.request and uid is not None:
            self._steps_dir(job, uid)
        if rec is not None and self.cfg.dcgm_job_mapping_dir:
            from . import dcgm
            dcgm.write(self.cfg.dcgm_job_mapping_dir, job, dcgm.mapping_names(rec))

    def _steps_dir(self, job: str, uid: int) -> None:
        """Where the job's steps claim their instances (node/stepclaims.py):
        the user's own, made here because only root may write run_dir."""
        path = self._job_file(job, STEPS)
        os.mkdir(path, 0o700)
        os.chown(path, uid, -1, follow_symlinks=False)

    def rebind(self, rec: Record, uid: Optional[int], visible: Optional[List[str]] = None) -> None:
        """A prolog re-run for a bound job: the same devices (`visible`, default
        its instances), and the record touched (reconcile spares records
        written after its Slurm query started)."""
        self.bind(rec.job, uid, visible or rec.uuids, rec)
        self.ledger.put(rec)

    def claim(self, job: str, uid: Optional[int], **ident) -> Optional[Record]:
        """The asking job's own record (Record.same_job), or None: a live record
        of an earlier job with this id is moved aside for reconcile, which
        releases its instances when idle. Under the node lock."""
        rec = self.ledger.get(job)
        if rec is None:
            return None
        if rec.same_job(job, uid, gpu_uuids=self.local_gpus(), **ident):
            return rec
        if rec.live and rec.static:          # static instances stay: only the record closes
            self.ledger.put(rec.move(State.RELEASED, "job id reused by a newer job"))
        elif rec.live:
            JobLog(job).warning("the live record of an earlier job %s (uid %s, %s) is another "
                                "job's: moved aside for reconcile", job, rec.uid, rec.state.value)
            self.ledger.stash(rec)
        return None

    def ended_since_start(self, job: str) -> bool:
        """An Epilog for `job` ran after this context was made (see epilog.py)."""
        rec = self.ledger.get(job)
        return rec is not None and rec.state is State.RELEASED and rec.updated >= self.started \
            and rec.reason == EPILOG_FIRST

    def fail(self, job: str, uid: Optional[int], reason: str, record: Optional[Record] = None,
             keep_record: bool = False) -> None:
        """Fail only this job: record why; the TaskProlog prints it and exits 1.
        `record`: a new FAILED record naming what the job asked for;
        keep_record: the job's record still owns something to clean, so it
        stays as it is."""
        JobLog(job).error("job refused: %s", reason)
        counters.bump(self.cfg.state_dir, "jobs_failed")
        if not keep_record:
            rec = record or Record(job=job, state=State.FAILED, uid=uid)
            if rec.state is not State.FAILED or rec.instances:
                raise IllegalTransition(f"job {job}: a refused job's record is a new one, "
                                        f"not one in state {rec.state.name}")
            rec.reason = reason
            self.ledger.put(rec)
        self.remove_job_files(job)
        self._write_job_file(job, FAIL, f"slurm-mig: job {job} could not get its MIG "
                             f"devices: {reason}\n", uid)

    # -- reading the node --------------------------------------------------
    def live_instances(self, gpus: Optional[List[int]] = None) -> Dict[Tuple[int, int], "Instance"]:
        d = self.driver
        indices = range(d.count()) if gpus is None else gpus
        return {(i.gpu, i.gi_id): i for g in indices for i in d.gpu(g).instances}

    def in_use(self, gpus: List["Gpu"], records: List[Record]) -> Set[str]:
        """UUIDs of instances no record owns that processes run on: never idle."""
        return {i.uuid for g in gpus for i in g.instances
                if i.uuid and owner_of(i, records) is None and self.driver.busy_pids(i.uuid)}

    def view(self, gpus: Optional[List["Gpu"]] = None) -> List["GpuView"]:
        gpus = self.driver.gpus() if gpus is None else gpus
        records = self.ledger.live()
        return node_view(gpus, records, self.in_use(gpus, records), bool(self.ledger.quarantined()))


def _devices(uuids: List[str], rec: Optional[Record]) -> List[Device]:
    """The job file's lines: each device with its GPU and profile (or `gpu`
    for a whole GPU), the UUID alone where the record says neither (static
    mode: Slurm's own File= devices)."""
    if rec is None or rec.static:
        return [Device(u) for u in uuids]
    held = {h.uuid: h for h in rec.instances if h.uuid}
    whole = dict(zip(rec.gpu_uuids, rec.whole_gpus))
    devices = []
    for u in uuids:
        if u in whole:
            devices.append(Device(u, whole[u], WHOLE_GPU))
        elif u in held:
            devices.append(Device(u, held[u].gpu, WHOLE_GPU if rec.whole_gpus else held[u].profile))
        else:
            devices.append(Device(u))
    return devices
