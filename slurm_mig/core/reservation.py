"""What a Prolog that waits for room holds while it waits.

An srun/salloc job cannot go back to the queue: its Prolog waits on the GPU
Slurm gave it until running instances end. Without a hold, jobs that arrive
meanwhile take the room as it frees and the wait can last as long as the
GPU stays busy. So the waiting job reserves one place for its request (the
one the fewest running instances block): other jobs planned on that GPU may
not use its free memory slots, nor the compute slices it will need beyond
what its blockers give back. bench/cluster_sim.py measures what it buys.

Pure: no I/O.
"""
from __future__ import annotations

import itertools
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence

from .view import GpuView, Occupied, job_owner, overlaps


class Reservation(NamedTuple):
    job: str
    gpu: int
    starts: tuple           # ((memory-slot start, size), ...) of the places it waits for
    slices: int             # compute slices the request needs


def target(gpu: GpuView, job: str, request: Dict[str, int],
           others: Iterable[Reservation] = ()) -> Optional[Reservation]:
    """The places on `gpu` for `request` that the fewest busy instances
    block (lowest starts on ties), outside the places `others` (other
    waiting jobs' reservations) hold: two waiting jobs holding one place
    would each keep the other off it. None if the GPU lacks a profile or
    cannot hold the request even empty, or others hold every such place."""
    taken = [pl for r in others if r.gpu == gpu.index and r.job != job for pl in r.starts]
    model, choices = gpu.model, []
    for name, count in sorted(request.items()):
        p = model.find_profile(name)
        if p is None:
            return None
        choices.append([tuple((s, p.mem_slots) for s in c) for c in itertools.combinations(p.starts, count)])
    best = None
    for combo in itertools.product(*choices):
        places = [pl for group in combo for pl in group]
        if any(overlaps(*a, *b) for a, b in itertools.combinations(places, 2)) or \
                any(overlaps(*a, *b) for a in places for b in taken):
            continue
        blocked = sum(1 for s in gpu.busy if any(overlaps(s.start, s.size, *pl) for pl in places))
        key = (blocked, sorted(places))
        if best is None or key < best[0]:
            best = (key, tuple(sorted(places)))
    if best is None:
        return None
    slices = sum(model.find_profile(n).slices * c for n, c in request.items())
    return Reservation(job, gpu.index, best[1], slices)


def held(gpu: GpuView, reservations: Iterable[Reservation], job: str) -> tuple:
    """Busy stand-ins, owned by the waiting job, for what other jobs'
    reservations hold on `gpu`: each free memory slot of their places, and
    the compute slices their blockers will not give back."""
    out: List[Occupied] = []
    for r in reservations:
        if r.gpu != gpu.index or r.job == job:
            continue
        blockers = [s for s in gpu.busy if any(overlaps(s.start, s.size, *pl) for pl in r.starts)]
        out.append(Occupied(gpu=gpu.index, profile_id=-1, start=0, size=0, gi_id=-1, owner=job_owner(r.job),
                            slices=max(0, r.slices - sum(s.slices for s in blockers))))
        out += [Occupied(gpu=gpu.index, profile_id=-1, start=slot, size=1, slices=0, gi_id=-1,
                         owner=job_owner(r.job))
                for start, size in r.starts for slot in range(start, start + size)
                if not any(overlaps(s.start, s.size, slot, 1) for s in gpu.busy)]
    return tuple(out)


def of_plan(job: str, placements: Iterable) -> Reservation:
    """The reservation of exactly the places a plan (planner.Placement
    list, one GPU) puts `job` on."""
    placements = list(placements)
    return Reservation(job, placements[0].gpu, tuple(sorted((pl.start, pl.profile.mem_slots) for pl in placements)),
                       sum(pl.profile.slices for pl in placements))


def apply(view: Sequence[GpuView], reservations: Sequence[Reservation], job: str) -> List[GpuView]:
    """`view` as `job` may plan on it: other jobs' reservations held."""
    return [g._replace(occupied=g.occupied + held(g, reservations, job)) for g in view]
