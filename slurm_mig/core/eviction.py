"""Making room for an srun/salloc job by sending young batch jobs back to the queue.

An interactive job cannot go back to the queue: where the GPU Slurm gave it
has no start for it, its Prolog waits for running instances to end. With
`interactive_evict_age` set, it first requeues batch jobs on that GPU that
started at most that long ago (each loses at most that much run time and
starts again from the queue), youngest first and as few as make room.
bench/jct_gap.py measures what it buys and costs.

Pure: no I/O.
"""
from __future__ import annotations

from typing import Collection, List, Mapping, Optional

from ..errors import NoFit
from . import planner
from .policies import Policy
from .view import GpuView


def without(gpu: GpuView, jobs: Collection[str]) -> GpuView:
    """`gpu` as it will be once `jobs` have ended (their instances freed)."""
    return gpu._replace(occupied=tuple(o for o in gpu.occupied if o.owner is None or o.owner.job not in jobs))


def victims(gpu: GpuView, request: Mapping[str, int], evictable: Mapping[str, float],
            policy: Policy) -> Optional[List[str]]:
    """The fewest jobs of `evictable` (job id -> when it started, or any time
    that orders them alike) whose end makes room for `request` on `gpu`:
    the youngest that suffice, less any of them not needed (oldest tried
    first). [] when it fits already; None when even all of them do not make
    room."""
    def fits(gone: Collection[str]) -> bool:
        try:
            planner.plan([without(gpu, gone)], request, gpu.index, policy)
            return True
        except NoFit:
            return False
    on_gpu = {o.owner.job for o in gpu.busy if o.owner.job is not None}
    youngest_first = sorted((j for j in evictable if j in on_gpu), key=lambda j: (-evictable[j], j))
    chosen = next((youngest_first[:k] for k in range(len(youngest_first) + 1) if fits(youngest_first[:k])), None)
    if chosen is None:
        return None
    for job in sorted(chosen, key=lambda j: (evictable[j], j)):
        if fits([j for j in chosen if j != job]):
            chosen.remove(job)
    return chosen
