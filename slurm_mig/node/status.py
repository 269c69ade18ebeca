"""The node's status as one document: GPUs, MIG mode, instances with their
owning jobs, what each GPU could still take per profile, and the stuck-GPU
hold keeping a GPU from new jobs (node/holds.py)."""
from __future__ import annotations

from typing import List, Optional, Tuple

from ..core import planner
from ..core.view import UNKNOWN_PROFILE, UNREADABLE, Owner
from ..errors import NodeProblem, SlurmMigError
from . import holds
from .context import NodeContext
from .occupancy import node_view, owner_of, unowned
from .room import idle_taken


def status_doc(ctx: NodeContext) -> Tuple[List[dict], Optional[str]]:
    """The document, and why the ledger could not be read (None when it could):
    then every instance's owner is UNREADABLE and nothing is offered as free."""
    gpus = ctx.devices.driver.gpus()
    try:
        records, problem = ctx.ledger.live(), None
    except NodeProblem as e:
        records, problem = [], str(e)
    in_use = ctx.devices.in_use(gpus, records)
    quarantine = problem is None and bool(ctx.ledger.quarantined())
    views = {v.index: v for v in node_view(gpus, records, in_use, quarantine)} if problem is None else {}
    doc = []
    for g in gpus:
        view = views.get(g.index)
        free = {}
        if view is not None and view.whole_by is None:
            as_busy = idle_taken(view)
            free = {p.name: planner.capacity(as_busy, p) for p in view.model.profiles}
        doc.append({
            "index": g.index, "name": g.name, "model": g.model_key, "uuid": g.uuid, "minor": g.minor,
            "mig": {"current": _mode(g.mig_capable, g.mig_on),
                    "pending": _mode(g.mig_capable, g.mig_pending_on)},
            "instances": [{"profile": i.profile, "profile_id": i.profile_id, "gi_id": i.gi_id,
                           "ci_id": i.ci_id, "placement": [i.start, i.size], "uuid": i.uuid,
                           **_owner_fields(UNREADABLE if problem else owner_of(i, records) or (
                               unowned(i, in_use, quarantine) if i.known else UNKNOWN_PROFILE))}
                          for i in g.instances],
            "can_create": free, "hold": _hold(ctx, g.index)})
    return doc, problem


def _hold(ctx: NodeContext, gpu: int) -> Optional[dict]:
    """The GPU's stuck-GPU hold: the hold job (null while being submitted) and
    the busy instance no job owns; null when none, or state_dir is not readable."""
    try:
        hold = holds.read(ctx.cfg.state_dir, gpu)
    except SlurmMigError:
        return None
    return None if hold is None else {"job": hold.job, "instance": hold.instance}


def _owner_fields(owner: Optional[Owner]) -> dict:
    """`owner`: the owning job's id (else null); `owner_kind`: job, idle,
    in_use, quarantined, unknown_profile or unreadable; `owned_by`: as the
    table shows it."""
    return {"owner": owner.job if owner else None, "owner_kind": owner.holder.value if owner else "idle",
            "owned_by": str(owner) if owner else "idle"}


def _mode(capable: bool, on: bool) -> int:
    """NVML's numbers in the JSON document: 1 on, 0 off, -1 not MIG-capable."""
    return -1 if not capable else int(on)
