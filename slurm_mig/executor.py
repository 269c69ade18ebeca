"""Applies a Plan through the driver, verifies it, and rolls back on failure."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

from .driver import Driver, Gpu, Instance
from .errors import NodeProblem
from .log import log
from .planner import GpuView, Plan, Slot



def owners(records: Iterable) -> Dict[tuple, str]:
    """(gpu, gi_id) -> job, from live ledger records."""
    return {(i["gpu"], i["gi_id"]): r.job for r in records for i in r.instances}


def node_view(gpus: List[Gpu], records: Iterable) -> List[GpuView]:
    """What the planner sees: catalog-known GPUs, instances marked with the live
    records owning them; GPUs a job holds whole (MIG off for it) are not offered."""
    records = list(records)
    owned = owners(records)
    held = {g for r in records for g in r.mig_off_gpus}
    views = []
    for g in gpus:
        if g.model is None or g.mig_current < 0 or g.index in held:
            continue
        if g.mig_current == 0 and g.model.mig_toggle_needs_reset:
            continue       # Ampere with MIG off: unusable without a reset
        slots = tuple(Slot(gpu=g.index, profile_id=i.profile_id, start=i.start, size=i.size,
                           gi_id=i.gi_id, owner=owned.get((g.index, i.gi_id)), uuid=i.uuid)
                      for i in g.instances)
        views.append(GpuView(index=g.index, model=g.model, mig_enabled=g.mig_current == 1,
                             slots=slots))
    return views


class ApplyFailed(Exception):
    """Applying failed; `leaked` lists instances the rollback could not remove."""

    def __init__(self, cause: Exception, leaked: List[Instance]):
        super().__init__(str(cause))
        self.cause, self.leaked = cause, leaked


def apply(driver: Driver, plan: Plan) -> List[Instance]:
    """Make the plan real; return the bound instances in plan order.
    On failure, everything this call created is destroyed again."""
    for index in plan.enable_mig:
        status = driver.set_mig_mode(index, True)
        if status != 0:
            raise NodeProblem(f"GPU {index}: enabling MIG mode left it pending (NVML status "
                              f"{status}); stop GPU clients (e.g. DCGM) and run "
                              f"`nvidia-smi -i {index} -mig 1`")
    created: List[Instance] = []
    try:
        for slot in plan.destroy:
            driver.destroy(slot.gpu, slot.gi_id)
        bound = []
        for p in plan.placements:
            if p.reuse is not None:
                bound.append(_existing(driver, p.gpu, p.reuse))
                continue
            inst = driver.create(p.gpu, p.profile, p.start)
            created.append(inst)
            bound.append(inst)
        verify(driver, bound)
        return bound
    except Exception as e:     # whatever went wrong, nothing this call made may leak
        raise ApplyFailed(e, rollback(driver, created)) from e


def _existing(driver: Driver, gpu: int, slot: Slot) -> Instance:
    live = {i.gi_id: i for i in driver.gpu(gpu).instances}
    inst = live.get(slot.gi_id)
    if inst is None or inst.uuid is None:
        raise NodeProblem(f"GPU {gpu}: idle GI {slot.gi_id} vanished while being reused")
    return inst


def verify(driver: Driver, bound: List[Instance]) -> None:
    """Re-read NVML: every bound instance exists where the plan put it."""
    live = {(i.gpu, i.gi_id): i for g in sorted({b.gpu for b in bound})
            for i in driver.gpu(g).instances}
    for b in bound:
        got: Optional[Instance] = live.get((b.gpu, b.gi_id))
        if got is None or got.uuid != b.uuid or got.start != b.start or got.profile_id != b.profile_id:
            raise NodeProblem(f"GPU {b.gpu}: instance {b.uuid} ({b.profile} at {b.start}) "
                              "not found on re-read after creation")


def rollback(driver: Driver, created: List[Instance]) -> List[Instance]:
    """Destroy what was created, newest first; return what could not be destroyed."""
    leaked = []
    for inst in reversed(created):
        try:
            driver.destroy(inst.gpu, inst.gi_id)
        except driver.nvml.NVMLError as e:
            log.error("rollback: could not destroy %s on GPU %d (GI %d): %s",
                      inst.uuid, inst.gpu, inst.gi_id, e)
            leaked.append(inst)
    return leaked
