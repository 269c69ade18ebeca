"""Placement policies: the order in which the planner tries GPUs and starts.

The planner is complete whatever the policy; a policy only decides which of
the fits is found first. Compared with bench/policies.py.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from ..errors import BadInput
from .catalog import GiProfile
from .view import GpuView, overlaps


class Policy:
    """Orders the search. The first fit in this order is the answer."""
    name = "base"

    def gpu_order(self, gpus: Sequence[GpuView]) -> List[GpuView]:
        return list(gpus)

    def start_order(self, gpu: GpuView, profile: GiProfile) -> List[int]:
        return list(profile.starts)


class FirstFit(Policy):
    """GPUs by index, lowest start first: what a naive allocator does."""
    name = "first-fit"


class Packed(Policy):
    """Best-fit GPU (least free room first), small profiles packed from the
    high end and large ones from the low end, idle instances of the right
    profile reused first: keeps big aligned holes for later jobs."""
    name = "packed"

    def gpu_order(self, gpus):
        return sorted(gpus, key=lambda g: (g.free_memory_slots(), g.index))

    def start_order(self, gpu, profile):
        small = profile.mem_slots * 4 <= gpu.model.memory_slots
        starts = sorted(profile.starts, reverse=small)
        reusable = {s.start for s in gpu.idle if s.profile_id == profile.id}
        return sorted(starts, key=lambda s: s not in reusable)


class MostRoom(Policy):
    """The default. For each start, count what could still be placed next to
    the running instances afterwards (every legal placement of every profile,
    weighted by its size) and take the start that leaves the most; ties go
    small-from-the-top, large-from-the-bottom. Best-fit GPU. Measured against
    the others with bench/policies.py."""
    name = "most-room"

    def gpu_order(self, gpus):
        return sorted(gpus, key=lambda g: (g.free_memory_slots(), g.index))

    def start_order(self, gpu, profile):
        busy = [(s.start, s.size) for s in gpu.busy]
        def room(start):
            taken = busy + [(start, profile.mem_slots)]
            return sum(q.mem_slots for q in gpu.model.profiles for t in q.starts
                       if not any(overlaps(t, q.mem_slots, a, z) for a, z in taken))
        small = profile.mem_slots * 4 <= gpu.model.memory_slots
        reusable = {s.start for s in gpu.idle if s.profile_id == profile.id}
        return sorted(profile.starts, key=lambda s: (s not in reusable, -room(s), -s if small else s))


POLICIES: Dict[str, Policy] = {p.name: p for p in (MostRoom(), Packed(), FirstFit())}




def policy(name: str) -> Policy:
    """The policy called `name`."""
    try:
        return POLICIES[name]
    except KeyError:
        raise BadInput(f"unknown placement policy {name!r}; use one of {', '.join(POLICIES)}") from None
