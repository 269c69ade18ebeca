"""Making room for an srun/salloc job by sending young batch jobs back to the queue.

An interactive job cannot go back to the queue: where the GPU Slurm gave it
has no start for it, its Prolog waits for running instances to end. With
`interactive_evict_age` set, it first requeues batch jobs on that GPU that
started at most that long ago (each loses at most that much run time and
starts again from the queue): the youngest first until they make room,
keeping none that is not needed. Other waiting jobs' reservations stay
theirs: a place one of them holds is never freed for this job, so two
waiting jobs never send back jobs for one place. bench/jct_gap.py measures
what it buys and costs.

Pure: no I/O.
"""
from __future__ import annotations

from typing import Collection, List, Mapping, NamedTuple, Optional, Sequence

from ..errors import NoFit
from . import planner, reservation
from .policies import Policy
from .view import GpuView


class Eviction(NamedTuple):
    victims: List[str]                  # the jobs to send back, youngest first
    hold: reservation.Reservation       # the place they free, which the waiting job holds


def without(gpu: GpuView, jobs: Collection[str]) -> GpuView:
    """`gpu` as it will be once `jobs` have ended (their instances freed)."""
    return gpu._replace(occupied=tuple(o for o in gpu.occupied if o.owner is None or o.owner.job not in jobs))


def make_room(gpu: GpuView, job: str, request: Mapping[str, int], evictable: Mapping[str, float],
              others: Sequence[reservation.Reservation], policy: Policy) -> Optional[Eviction]:
    """The jobs of `evictable` (job id -> when it started) whose end lets
    `job` place `request` on `gpu` (as NVML shows it; `others`: the other
    waiting jobs' reservations, which keep their places): the youngest that
    suffice, less any of them not needed (the oldest tried first), and the
    place they free. None when even all of them do not make room."""
    def plan(gone: Collection[str]) -> Optional[planner.Plan]:
        try:
            return planner.plan(reservation.apply([without(gpu, gone)], others, job), request, gpu.index, policy)
        except NoFit:
            return None
    on_gpu = {o.owner.job for o in gpu.busy if o.owner.job is not None}
    youngest_first = sorted((j for j in evictable if j in on_gpu and j != job), key=lambda j: (-evictable[j], j))
    chosen = next((youngest_first[:k] for k in range(len(youngest_first) + 1) if plan(youngest_first[:k])), None)
    if chosen is None:
        return None
    for victim in sorted(chosen, key=lambda j: (evictable[j], j)):
        if plan([j for j in chosen if j != victim]):
            chosen.remove(victim)
    return Eviction(chosen, reservation.of_plan(job, plan(chosen).placements))
