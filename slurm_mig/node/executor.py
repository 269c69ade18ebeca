"""Applies a Plan through the driver, verifies it, and rolls back on failure."""
from __future__ import annotations

from typing import List, Optional

from ..core.planner import Plan
from ..core.view import Instance, Occupied
from ..errors import NodeProblem, SlurmMigError
from ..log import log
from ..nvml.driver import Driver
from ..nvml.errors import NVMLError, describe


class ApplyFailed(Exception):
    """Applying failed; `leaked` lists instances the rollback could not remove."""

    def __init__(self, cause: Exception, leaked: List[Instance]):
        super().__init__(describe(cause))
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
    except (NVMLError, SlurmMigError) as e:
        raise ApplyFailed(e, rollback(driver, created)) from e
    except BaseException:     # a bug or a signal: still nothing this call made may leak
        rollback(driver, created)
        raise


def _existing(driver: Driver, gpu: int, slot: Occupied) -> Instance:
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
        except NVMLError as e:
            log.error("rollback: could not destroy %s on GPU %d (GI %d): %s",
                      inst.uuid, inst.gpu, inst.gi_id, describe(e))
            leaked.append(inst)
    return leaked
