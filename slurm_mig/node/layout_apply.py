"""Carrying out a static layout's diff (core.layout) on the node: removals,
MIG mode changes with the site's hooks around them, then creations."""
from __future__ import annotations

from typing import Dict, List

from ..core.layout import GpuChange
from ..errors import NodeProblem
from ..nvml.driver import Driver
from .context import NodeContext
from .executor import apply


def busy_instances(ctx: NodeContext, include_jobs: bool) -> Dict[str, str]:
    """MIG UUID -> why it is in use: a running process, or a job's ledger record."""
    busy = {}
    if include_jobs:
        for rec in ctx.ledger.live():
            for u in rec.uuids:
                busy[u] = f"job {rec.job}"
    for g in ctx.devices.driver.gpus():
        for i in g.instances:
            if i.uuid:
                pids = ctx.devices.driver.busy_pids(i.uuid)
                if pids:
                    busy[i.uuid] = "pids " + ",".join(map(str, pids))
    return busy


def mode_change(driver: Driver, index: int, enabled: bool, run_hooks, allow_reset: bool = False) -> None:
    """Switch MIG mode on one GPU, with the site's hooks around it. A change the
    driver leaves pending is completed by resetting that GPU alone when allowed
    and nothing runs on it; otherwise it is reported with what to do."""
    run_hooks("pre-mode-change", index, enabled)
    try:
        status = driver.set_mig_mode(index, enabled)
        if status != 0 and allow_reset and not driver.gpu_pids(index):
            driver.reset_gpu(index)
            status = 0 if driver.gpu(index, with_instances=False).mig_on == enabled else status
    finally:
        run_hooks("post-mode-change", index, enabled)
    if status != 0:
        gpu = driver.gpu(index, with_instances=False)
        pids = driver.gpu_pids(index)
        raise NodeProblem(f"GPU {index}: MIG mode is {'on' if gpu.mig_on else 'off'}, pending "
                          f"{'on' if gpu.mig_pending_on else 'off'} (NVML activation status {status})"
                          + (f"; processes {pids} use it" if pids else "")
                          + f"; stop what uses it (site hooks) and retry with --allow-reset, "
                          f"or reset this GPU only: `nvidia-smi --gpu-reset -i {index}`")


def apply_changes(driver: Driver, changes: List[GpuChange], run_hooks, allow_reset: bool = False) -> None:
    """Carry out a diff, GPU by GPU: removals, mode changes, then creations
    (which executor.apply rolls back if one fails)."""
    for c in changes:
        if c.empty:
            continue
        for i in c.destroy_all:
            driver.destroy(i.gpu, i.gi_id)
        if c.disable_mig:
            mode_change(driver, c.gpu.index, False, run_hooks, allow_reset)
        if c.plan is not None:
            for index in c.plan.enable_mig:
                mode_change(driver, index, True, run_hooks, allow_reset)
            if c.plan.placements or c.plan.destroy:
                apply(driver, c.plan._replace(enable_mig=()))
