"""One node's context for a hook or a verb: config, ledger, the NVML driver
(opened on first use) and the per-job files the TaskProlog reads."""
from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..config import Config
from ..fsutil import atomic_write
from ..log import JobLog
from .jobfiles import ENV, FAIL, devices_text, job_file
from .ledger import Ledger, Record

if TYPE_CHECKING:      # imported where used: the epilog needs no planner
    from ..core.view import Gpu, GpuView, Instance
    from ..nvml.driver import Driver


def owner_of(inst: "Instance", records: List[Record]) -> Optional[str]:
    """The job whose live record owns `inst`, or None."""
    return next((r.job for r in records if r.owns(inst)), None)


def node_view(gpus: List["Gpu"], records: List[Record]) -> List["GpuView"]:
    """What the planner sees: catalog-known GPUs, instances marked with the live
    records owning them; GPUs a job holds whole (MIG off for it) are not offered."""
    from ..core.view import GpuView, occupied
    held = {g for r in records for g in r.mig_off_gpus}
    views = []
    for g in gpus:
        if g.model is None or not g.mig_capable or g.index in held:
            continue
        if not g.mig_on and g.model.mig_toggle_needs_reset:
            continue       # Ampere with MIG off: unusable without a reset
        views.append(GpuView(index=g.index, model=g.model, mig_enabled=g.mig_on,
                             occupied=tuple(occupied(i, owner_of(i, records)) for i in g.instances)))
    return views


class NodeContext:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.ledger = Ledger(cfg.state_dir, cfg.lock_timeout)
        self._driver: Optional[Driver] = None

    @property
    def driver(self) -> "Driver":
        if self._driver is None:
            from ..nvml.backend import open_driver
            self._driver = open_driver(self.cfg.backend)
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
        if self.cfg.dcgm_job_mapping_dir:
            from . import dcgm
            dcgm.remove(self.cfg.dcgm_job_mapping_dir, job)

    def bind(self, job: str, uid: Optional[int], uuids: List[str],
             rec: Optional[Record] = None) -> None:
        """Write the job's device list; with dcgm_job_mapping_dir, label its
        devices (from `rec`) for dcgm-exporter."""
        self.remove_job_files(job)
        self._write_job_file(job, ENV, devices_text(uuids), uid)
        if rec is not None and self.cfg.dcgm_job_mapping_dir:
            from . import dcgm
            dcgm.write(self.cfg.dcgm_job_mapping_dir, job, dcgm.mapping_names(rec))

    def fail(self, job: str, uid: Optional[int], reason: str, record: Optional[Record] = None,
             keep_record: bool = False) -> None:
        """Fail only this job: record why; the TaskProlog prints it and exits 1.
        `record` names what the job asked for; keep_record: the job's record
        still owns something to clean, so it stays as it is."""
        JobLog(job).error("job refused: %s", reason)
        if not keep_record:
            rec = record or Record(job=job, state="failed", uid=uid)
            rec.state, rec.reason, rec.instances = "failed", reason, []
            self.ledger.put(rec)
        self.remove_job_files(job)
        self._write_job_file(job, FAIL, f"slurm-mig: job {job} could not get its MIG "
                             f"devices: {reason}\n", uid)

    # -- reading the node --------------------------------------------------
    def live_instances(self, gpus: Optional[List[int]] = None) -> Dict[Tuple[int, int], "Instance"]:
        d = self.driver
        indices = range(d.count()) if gpus is None else gpus
        return {(i.gpu, i.gi_id): i for g in indices for i in d.gpu(g).instances}

    def view(self, gpus: Optional[List["Gpu"]] = None) -> List["GpuView"]:
        return node_view(self.driver.gpus() if gpus is None else gpus, self.ledger.live())
