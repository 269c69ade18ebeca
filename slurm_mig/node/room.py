"""What this node could start now, per GPU and profile: the free-slice
summary it publishes for users (core/roomtext.py, slurm/room.py).

A profile can start on a GPU when the planner places it next to the
instances there (each profile alone, idle instances counted as taken, as
`slurm-mig status` shows) and Slurm's shard count of that GPU still covers
its units: the weights refuse a few sets the GPU could hold, and a job is
only sent where Slurm finds the units.
"""
from __future__ import annotations

import time

from ..core import planner, shards
from ..core.roomtext import GpuRoom, NodeRoom
from ..core.view import IN_USE, GpuView, Holder
from .context import NodeContext
from .occupancy import read_view


def node_room(ctx: NodeContext) -> NodeRoom:
    views = read_view(ctx)
    layouts = shards.shard_units({v.model.key: v.model for v in views}.values())
    return NodeRoom(int(time.time()), [gpu_room(v, layouts[v.model.layout]) for v in views])


def gpu_room(view: GpuView, layout: "shards.LayoutUnits") -> GpuRoom:
    if view.whole_by is not None:
        return GpuRoom(view.index, view.model.key, {})
    charged = sum(layout.units[view.model.profile_by_id(s.profile_id).enum] for s in view.occupied
                  if s.owner is not None and s.owner.holder is Holder.JOB)     # jobs hold these shards
    taken = idle_taken(view)
    free = {}
    for p in view.model.profiles:
        free[p.name] = min(planner.capacity(taken, p), (layout.count - charged) // layout.units[p.enum])
    return GpuRoom(view.index, view.model.key, free)


def idle_taken(view: GpuView) -> GpuView:
    """`view` with its idle instances counted as taken: room "each alone, as the node is"."""
    return GpuView(view.index, view.model, True,
                   tuple(s._replace(owner=s.owner or IN_USE) for s in view.occupied))
