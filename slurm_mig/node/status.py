"""The node's status as one document: GPUs, MIG mode, instances with their
owning jobs, and what each GPU could still take per profile."""
from __future__ import annotations

from typing import List

from ..core import planner
from ..core.view import GpuView
from .context import NodeContext, node_view, owner_of


def status_doc(ctx: NodeContext) -> List[dict]:
    gpus = ctx.driver.gpus()
    try:
        records = ctx.ledger.live()
    except PermissionError:
        records = []
    views = {v.index: v for v in node_view(gpus, records)}
    doc = []
    for g in gpus:
        view = views.get(g.index)
        free = {}
        if view is not None:      # idle instances count as taken: "each alone, as the node is"
            as_busy = GpuView(view.index, view.model, True,
                              tuple(s._replace(owner=s.owner or "-") for s in view.occupied))
            free = {p.name: planner.capacity(as_busy, p) for p in view.model.profiles}
        doc.append({
            "index": g.index, "name": g.name, "model": g.model_key, "uuid": g.uuid, "minor": g.minor,
            "mig": {"current": _mode(g.mig_capable, g.mig_on),
                    "pending": _mode(g.mig_capable, g.mig_pending_on)},
            "instances": [{"profile": i.profile, "profile_id": i.profile_id, "gi_id": i.gi_id,
                           "ci_id": i.ci_id, "placement": [i.start, i.size], "uuid": i.uuid,
                           "owner": owner_of(i, records) or (None if i.known else "unknown profile")}
                          for i in g.instances],
            "can_create": free})
    return doc


def _mode(capable: bool, on: bool) -> int:
    """NVML's numbers in the JSON document: 1 on, 0 off, -1 not MIG-capable."""
    return -1 if not capable else int(on)
