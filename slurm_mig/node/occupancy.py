"""Who holds each instance, and the planner's view of the node built from it:
live records own instances (Record.owns); what no record owns is in use
(processes run on it), held for a quarantined record, or idle."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Set

from ..core.view import IN_USE, QUARANTINED, GpuView, Owner, job_owner, occupied

if TYPE_CHECKING:
    from ..core.lifecycle import Record
    from ..core.view import Gpu, Instance
    from .context import NodeContext


def owner_of(inst: "Instance", records: List["Record"]) -> Optional[Owner]:
    """The job whose live record owns `inst`, or None."""
    return next((job_owner(r.job) for r in records if r.owns(inst)), None)


def unowned(inst: "Instance", in_use: Set[str], quarantine: bool) -> Optional[Owner]:
    """The owner of an instance no live record owns: IN_USE when processes
    run on it, QUARANTINED while an unreadable record may own it, else None
    (idle)."""
    return IN_USE if inst.uuid in in_use else QUARANTINED if quarantine else None


def node_view(gpus: List["Gpu"], records: List["Record"], in_use: Set[str] = frozenset(),
              quarantine: bool = False) -> List[GpuView]:
    """What the planner sees: catalog-known GPUs, instances marked with the live
    records owning them, or `unowned`'s owner; a GPU a job holds whole names
    that job."""
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


def read_view(ctx: "NodeContext", gpus: Optional[List["Gpu"]] = None) -> List[GpuView]:
    """The planner's view of the node now (`gpus`: a fresh read, if the caller has one)."""
    gpus = ctx.devices.driver.gpus() if gpus is None else gpus
    records = ctx.ledger.live()
    return node_view(gpus, records, ctx.devices.in_use(gpus, records), bool(ctx.ledger.quarantined()))
