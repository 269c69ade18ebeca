"""The planner: NodeState + request -> Plan. Pure: no I/O, no NVML.

Complete: whenever placements exist that avoid every busy instance, `plan`
finds one (exhaustive backtracking, most-constrained profile first). Which
fit it returns is the policy's choice, made through the order in which it
offers GPUs and starts.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..errors import NeverFits, NoFit
from .catalog import GiProfile, GpuModel
from .policies import POLICIES, FirstFit, Policy
from .view import GpuView, Occupied, overlaps


class Placement(NamedTuple):
    gpu: int
    profile: GiProfile
    start: int
    reuse: Optional[Occupied] = None     # an idle instance taken over as it is


class Plan(NamedTuple):
    placements: Tuple[Placement, ...]
    destroy: Tuple[Occupied, ...] = ()          # idle instances removed first
    enable_mig: Tuple[int, ...] = ()        # GPUs whose MIG mode must be turned on

    @property
    def gpus(self) -> List[int]:
        return sorted({p.gpu for p in self.placements})

    def describe(self) -> List[str]:
        lines = [f"enable MIG on GPU {g}" for g in self.enable_mig]
        lines += [f"destroy idle GI {s.gi_id} on GPU {s.gpu} at {s.start}:{s.size}"
                  for s in self.destroy]
        for p in self.placements:
            verb = f"reuse idle GI {p.reuse.gi_id}" if p.reuse else "create"
            lines.append(f"{verb} {p.profile.name} on GPU {p.gpu} at {p.start}:{p.profile.mem_slots}")
        return lines


def _expand(views: Sequence[GpuView], request: Mapping[str, int]) -> Optional[List[str]]:
    """The request as one name per instance, most constrained first (fewest
    starts, then largest); None when some name is offered by none of `views`."""
    def key(name: str):
        offered = [p for v in views if (p := v.model.find_profile(name))]
        return (min(len(p.starts) for p in offered), -max(p.mem_slots for p in offered), name) \
            if offered else None
    keys = {name: key(name) for name in request}
    if any(k is None for k in keys.values()):
        return None
    return [name for name in sorted(request, key=keys.__getitem__) for _ in range(request[name])]


class _GpuSearch:
    """Mutable occupancy of one GPU during the backtracking search."""

    def __init__(self, view: GpuView):
        self.view = view
        self.taken: List[Tuple[int, int]] = [(s.start, s.size) for s in view.busy]
        self.counts = Counter(s.profile_id for s in view.busy)
        self.slices = sum(s.slices for s in view.busy)
        self.mem = sum(z for _, z in self.taken)

    def free(self) -> Tuple[int, int]:
        """(memory slots, compute slices) not taken."""
        m = self.view.model
        return m.memory_slots - self.mem, m.compute_slices - self.slices

    def fits(self, p: GiProfile, start: int) -> bool:
        return (self.counts[p.id] < p.max
                and self.slices + p.slices <= self.view.model.compute_slices
                and not any(overlaps(start, p.mem_slots, s, z) for s, z in self.taken))

    def room_for(self, p: GiProfile, starts: List[int]) -> int:
        """An upper bound on how many more of `p` fit: its instance limit, and
        one per start still free."""
        return min(p.max - self.counts[p.id], sum(1 for st in starts if self.fits(p, st)))

    def push(self, p: GiProfile, start: int) -> None:
        self.taken.append((start, p.mem_slots))
        self.counts[p.id] += 1
        self.slices += p.slices
        self.mem += p.mem_slots

    def pop(self, p: GiProfile) -> None:
        self.taken.pop()
        self.counts[p.id] -= 1
        self.slices -= p.slices
        self.mem -= p.mem_slots


def _search(names: List[str], searches: List["_GpuSearch"], policy: Policy,
            orders: Optional[dict] = None) -> Optional[List[Tuple[GiProfile, int, int]]]:
    """Backtracking: each name -> (profile, search index, start), in policy order.
    Identical consecutive names take increasing (gpu, start-rank) pairs, so
    permutations of one placement set are tried once; a branch is cut when the
    names left need more memory slots or compute slices than are free.
    `orders` caches start orders across searches of one plan() call."""
    orders = {} if orders is None else orders
    table = []
    for si, s in enumerate(searches):
        row = {}
        for name in set(names):
            key = (name, s.view.index)
            if key not in orders:
                p = s.view.model.find_profile(name)
                orders[key] = (p, policy.start_order(s.view, p) if p else [])
            row[name] = orders[key]
        table.append(row)
    sizes = {n: [row[n][0] for row in table if row[n][0]] for n in set(names)}
    need = [(0, 0)] * (len(names) + 1)
    for i in range(len(names) - 1, -1, -1):
        offered = sizes[names[i]]
        need[i] = (need[i + 1][0] + min(p.mem_slots for p in offered),
                   need[i + 1][1] + min(p.slices for p in offered))
    rest = [Counter(names[i:]) for i in range(len(names) + 1)]
    out: List[Tuple[GiProfile, int, int]] = []

    def go(i: int, floor: Tuple[int, int]) -> bool:
        if i == len(names):
            return True
        free = [s.free() for s in searches]
        if need[i][0] > sum(f[0] for f in free) or need[i][1] > sum(f[1] for f in free):
            return False
        if i == 0 or names[i - 1] != names[i]:
            floor = (-1, -1)
            # At each new profile: instance limits (e.g. +me: 1) and free starts.
            for name, count in rest[i].items():
                if count > sum(s.room_for(*row[name]) for row, s in zip(table, searches) if row[name][0]):
                    return False
        for si, s in enumerate(searches):
            p, starts = table[si][names[i]]
            for rank, start in enumerate(starts):
                if (si, rank) <= floor or not s.fits(p, start):
                    continue
                s.push(p, start)
                out.append((p, si, start))
                if go(i + 1, (si, rank)):
                    return True
                s.pop(p)
                out.pop()
        return False

    return out if go(0, (-1, -1)) else None


def _finish(views: List[GpuView], chosen: List[Tuple[GiProfile, int, int]]) -> Plan:
    placements, used_idle = [], set()
    for p, vi, start in chosen:
        view = views[vi]
        reuse = next((s for s in view.idle if s.profile_id == p.id and s.start == start
                      and s not in used_idle), None)
        if reuse:
            used_idle.add(reuse)
        placements.append(Placement(gpu=view.index, profile=p, start=start, reuse=reuse))
    touched = [views[vi] for vi in sorted({vi for _, vi, _ in chosen})]
    # Idle instances on a GPU we use go, unless reused: they would otherwise
    # count against instance and slice limits the search did not see.
    destroy = [s for v in touched for s in v.idle if s not in used_idle]
    return Plan(placements=tuple(sorted(placements, key=lambda p: (p.gpu, p.start))),
                destroy=tuple(destroy),
                enable_mig=tuple(v.index for v in touched if not v.mig_enabled))


def plan(node: Iterable[GpuView], request: Mapping[str, int], gpu: Optional[int] = None,
         policy: Policy = POLICIES["most-room"], spread: bool = True) -> Plan:
    """Place `request` (profile name -> count) on the node: on one GPU when
    possible (Slurm's shards for a job come from one GPU), else, with
    `spread`, across GPUs unless `gpu` pins it. Raises NoFit with the reason."""
    views = [v for v in node if gpu is None or v.index == gpu]
    if gpu is not None and not views:
        raise NoFit(f"GPU {gpu} does not exist on this node")
    if gpu is not None and views[0].whole_by is not None:
        raise NoFit(f"GPU {gpu} is held whole by job {views[0].whole_by}")
    views = policy.gpu_order([v for v in views if v.whole_by is None])
    wanted = ", ".join(f"{n}:{c}" for n, c in sorted(request.items()))
    offered, orders = False, {}
    for view in views:
        names = _expand([view], request)
        if names is None:
            continue
        offered = True
        chosen = _search(names, [_GpuSearch(view)], policy, orders)
        if chosen is not None:
            return _finish([view], chosen)
    names = _expand(views, request) if len(views) > 1 and spread else None
    if names is not None:
        offered = True
        chosen = _search(names, [_GpuSearch(v) for v in views], policy, orders)
        if chosen is not None:
            return _finish(views, chosen)
    if not offered:
        models = ", ".join(sorted({v.model.key for v in views}))
        raise NoFit(f"{wanted}: no GPU here offers these profiles (models: {models})")
    never = [never_fits(v.model, request) for v in views]
    if all(never) and (len(views) == 1 or not spread or _search(_expand(views, request), [
            _GpuSearch(v._replace(occupied=())) for v in views], policy) is None):
        raise NeverFits(f"{wanted} can never fit here: {never[0]}")
    room = ", ".join(f"GPU {v.index}: {v.free_memory_slots()}/{v.model.memory_slots} slots free"
                     for v in sorted(views, key=lambda v: v.index))
    raise NoFit(f"{wanted} does not fit next to the running jobs' instances ({room})")


def never_fits(model: GpuModel, request: Mapping[str, int]) -> Optional[str]:
    """Why `request` cannot fit even on an empty GPU of `model`, naming the
    limit; None when it can (the planner's exact search decides)."""
    empty = GpuView(index=0, model=model)
    names = _expand([empty], request)
    if names is None:
        return f"a {model.key} offers none of {', '.join(sorted(request))}"
    if _search(names, [_GpuSearch(empty)], FirstFit()) is not None:
        return None
    for name, count in sorted(request.items()):
        p = model.find_profile(name)
        most = capacity(empty, p)
        if count > most:
            return f"at most {most} x {p.name} on one {model.key}"
    return (f"together they need more than one {model.key} has ({model.compute_slices} "
            f"compute slices, {model.memory_slots} memory slots)")


def capacity(view: GpuView, profile: GiProfile) -> int:
    """How many more of `profile` fit next to the GPU's instances (all kept)."""
    n = 0
    while n < profile.max and _search([profile.name] * (n + 1), [_GpuSearch(view)], FirstFit()):
        n += 1
    return n

