"""Shard units that guarantee a start: what an interactive job is charged.

Slurm gives a job the lowest-index GPU whose free shard count covers its
units. Running instances cannot move, so a GPU can show enough free shards
and still have no legal start for the request ("phantom room"). A batch job
sent there goes back to the queue; an srun/salloc job cannot. Charging it
``guarantee(...)`` units instead makes every GPU Slurm could pick able to hold
it: the smallest free count at which the request fits in every state a GPU
can be in (any non-overlapping instances whose units Slurm admitted).

Pure: standard library only, no I/O.
"""
from __future__ import annotations

import functools
import math
from typing import Dict, Sequence, Tuple

from .shards import Counts, Geometry

State = Tuple[int, int, Counts]        # (used memory-slot mask, used compute slices, instances per profile)


@functools.lru_cache(maxsize=None)
def states(geometry: Geometry, weights: Tuple[int, ...], count: int) -> Dict[State, int]:
    """Every state a GPU can reach under shard count `count` -> its free shards."""
    profs = geometry.profiles
    found: Dict[State, int] = {}

    def visit(mask: int, slices: int, held: Tuple[int, ...], used: int, first: Tuple[int, int]) -> None:
        found[(mask, slices, held)] = count - used
        for i in range(first[0], len(profs)):
            p = profs[i]
            if held[i] >= p.max or slices + p.slices > geometry.compute_slices or used + weights[i] > count:
                continue
            for s in p.starts:
                if (i, s) <= first:
                    continue
                m = ((1 << p.mem_slots) - 1) << s
                if not mask & m:
                    visit(mask | m, slices + p.slices, held[:i] + (held[i] + 1,) + held[i + 1:],
                          used + weights[i], (i, s))

    visit(0, 0, (0,) * len(profs), 0, (0, -1))
    return found


@functools.lru_cache(maxsize=None)
def fits(geometry: Geometry, state: State, request: Counts) -> bool:
    """Whether the request's instances have legal starts next to `state`."""
    mask, slices, held = state
    profs = geometry.profiles
    need = [i for i, n in enumerate(request) for _ in range(n)]
    if any(held[i] + n > profs[i].max for i, n in enumerate(request)) or \
            slices + sum(profs[i].slices for i in need) > geometry.compute_slices:
        return False

    def place(k: int, used: int) -> bool:
        if k == len(need):
            return True
        p = profs[need[k]]
        for s in p.starts:
            m = ((1 << p.mem_slots) - 1) << s
            if not used & m and place(k + 1, used | m):
                return True
        return False

    return place(0, mask)


@functools.lru_cache(maxsize=None)
def guarantee(geometry: Geometry, weights: Tuple[int, ...], count: int, request: Counts) -> int:
    """The fewest free shards at which `request` (counts aligned with the
    geometry's profiles) fits whatever the GPU holds; never below the
    request's own units. More than `count` only if an empty GPU cannot hold it."""
    own = sum(w * n for w, n in zip(weights, request))
    worst = max((free for state, free in states(geometry, weights, count).items()
                 if not fits(geometry, state, tuple(request))), default=-1)
    return max(own, worst + 1)


def interactive_units(geometry: Geometry, weights: Sequence[int], count: int, request: Counts,
                      share: float, one_start: float) -> int:
    """What job_submit.lua charges an srun/salloc job: its own units plus
    `share` (0..1, the `interactive_charge` setting) of the way up to the
    guarantee. 1: Slurm only picks GPUs that can hold it; less: cheaper for
    everyone else, and the Prolog waits for room when the pick was wrong.
    A request with a profile that has one legal start (4g.40gb) is charged
    `one_start` (0..1, `interactive_charge_one_start`) of the way instead,
    whatever `share` is: any instance in that place blocks it until it ends,
    and no other place will do, while a request of profiles with several
    starts waits only until one of its places frees (the Prolog's wait and
    hold, interactive_wait). 0 and 0: charged as a batch job."""
    own = sum(w * n for w, n in zip(weights, request))
    if any(n and len(p.starts) == 1 for p, n in zip(geometry.profiles, request)):
        share = one_start
    return own + math.ceil(share * (guarantee(geometry, tuple(weights), count, tuple(request)) - own))
