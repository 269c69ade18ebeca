"""Shard weights for MIG profiles: one Slurm capacity counter per GPU.

What `gres-conf` ships (``shard_units``): per catalog layout, the catalog's
measured ``shard_weights`` where the layout has them (checked here to admit no
impossible set), else the weights of ``search`` over every profile the
cluster's models list on it. Both admit no set of instances an empty GPU
cannot hold (Slurm never hands the Prolog an impossible request); search
admits as many placeable sets as one counter can, the measured ones give up
a few more to leave less room that no start can use once jobs come and go.
What a layout's weights give up (``given_up``), job_submit.lua refuses at
submit time instead of letting it pend.

Slurm sees one counter per GPU (``gres/shard`` with ``Count=C``); a job asking
``mig:<profile>:<n>`` is charged ``n * w(profile)`` shards on one GPU, so a set
of jobs fits a GPU, as far as Slurm knows, iff ``sum(w * n) <= C``.  The truth
is MIG placement.  This module finds integer weights and C such that Slurm
never admits a multiset that cannot be placed, while admitting as many
placeable multisets as possible.

Pure: standard library only, no I/O.  Geometry comes in as data.

Public API (the benchmarks' research tools live in bench/shard_research.py)
----------
Profile, Geometry, Weights                      (frozen dataclasses)
placeable(geometry, counts) -> bool
placeable_sets(geometry) -> tuple[tuple[int, ...], ...]
minimal_unplaceable(geometry) -> tuple[...]
dominance(geometry) -> tuple[(b, a), ...]     # b can always stand in for a
admitted(geometry, weights, C, caps=()) -> Iterator[tuple[int, ...]]   # every n with w.n <= C
evaluate(geometry, weights, C, method='given', caps=()) -> Weights
lift_weights(geometry, weights, C, caps=()) -> tuple[int, ...]
search(geometry, c_max=64, use_dominance=True, caps=(), raise_weights=True) -> Weights
given_up(geometry, result, minimal=True) -> tuple[str, ...]
describe(geometry, counts) -> str               # "1g.20gb + 2g.20gb + 4g.40gb"
shard_units(models) -> {layout: LayoutUnits}     # what gres-conf ships
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Callable, Dict, Iterable, Iterator, List, Mapping,
                    NamedTuple, Optional, Sequence, Tuple, Union)

if TYPE_CHECKING:
    from .catalog import GpuModel

Counts = Tuple[int, ...]


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Profile:
    name: str
    slices: int              # compute slices
    mem_slots: int           # placement size in memory slots
    max: int                 # max instances per GPU
    starts: Tuple[int, ...]  # legal start slots


@dataclass(frozen=True)
class Geometry:
    memory_slots: int
    compute_slices: int
    profiles: Tuple[Profile, ...]

    def __post_init__(self):
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate profile names: {names}")
        for p in self.profiles:
            if p.mem_slots < 1 or p.max < 0:
                raise ValueError(f"bad profile {p}")
            for s in p.starts:
                if s < 0 or s + p.mem_slots > self.memory_slots:
                    raise ValueError(f"{p.name}: start {s} runs off the GPU")

    @property
    def names(self) -> Tuple[str, ...]:
        return tuple(p.name for p in self.profiles)

    def counts(self, spec: Union[Mapping[str, int], Sequence[int]]) -> Counts:
        """Normalise {name: n} or a sequence aligned with profiles to a tuple."""
        if isinstance(spec, Mapping):
            unknown = set(spec) - set(self.names)
            if unknown:
                raise KeyError(f"unknown profiles {sorted(unknown)}")
            return tuple(int(spec.get(n, 0)) for n in self.names)
        t = tuple(int(x) for x in spec)
        if len(t) != len(self.profiles):
            raise ValueError(f"expected {len(self.profiles)} counts, got {len(t)}")
        return t


@dataclass(frozen=True)
class Weights:
    """Shard weights for one geometry, and what they admit."""
    names: Tuple[str, ...]
    weights: Tuple[int, ...]       # aligned with names
    count: int                     # C: shards per GPU
    placeable: int                 # placeable multisets (non-empty)
    admitted_placeable: int        # placeable multisets with w.n <= C
    admitted_unplaceable: int      # unplaceable multisets with w.n <= C (exact, all of N^k)
    given_up: Tuple[Counts, ...]   # placeable multisets not admitted
    method: str                    # "exhaustive(c<=..)", "memory-slots", "given"
    optimal: Optional[bool] = None  # True: proven optimal within the search bounds
    nodes: int = 0                 # search nodes visited (0 when not searched)
    caps: Tuple[str, ...] = ()     # profiles Slurm also caps at their max by a
                                   # separate per-GPU counter (none: shards alone)

    @property
    def by_name(self) -> Dict[str, int]:
        return dict(zip(self.names, self.weights))


# ------------------------------------------------------------------------ oracle

def placeable(geometry: Geometry, counts) -> bool:
    """Exact: the multiset has a non-overlapping placement on one GPU."""
    return _placement(geometry, geometry.counts(counts)) is not None


@functools.lru_cache(maxsize=None)
def _placement(geometry: Geometry, counts: Counts):
    profs = geometry.profiles
    if any(n < 0 for n in counts):
        raise ValueError("negative count")
    if any(n > p.max for n, p in zip(counts, profs)):
        return None
    if sum(n * p.slices for n, p in zip(counts, profs)) > geometry.compute_slices:
        return None
    if sum(n * p.mem_slots for n, p in zip(counts, profs)) > geometry.memory_slots:
        return None
    # instances, most constrained first (fewest starts, then biggest)
    order = sorted((i for i, n in enumerate(counts) if n),
                   key=lambda i: (len(profs[i].starts), -profs[i].mem_slots))
    items: List[int] = [i for i in order for _ in range(counts[i])]
    masks = [[(s, ((1 << profs[i].mem_slots) - 1) << s) for s in profs[i].starts]
             for i in range(len(profs))]
    chosen: List[Tuple[str, int]] = []

    def go(k: int, used: int, min_start_idx: int) -> bool:
        if k == len(items):
            return True
        i = items[k]
        opts = masks[i]
        for j in range(min_start_idx, len(opts)):
            s, m = opts[j]
            if used & m:
                continue
            chosen.append((profs[i].name, s))
            # identical instances of one profile take increasing starts
            nxt = j + 1 if k + 1 < len(items) and items[k + 1] == i else 0
            if go(k + 1, used | m, nxt):
                return True
            chosen.pop()
        return False

    return tuple(chosen) if go(0, 0, 0) else None


# ------------------------------------------------------------------- enumeration

@functools.lru_cache(maxsize=None)
def placeable_sets(geometry: Geometry) -> Tuple[Counts, ...]:
    """All non-empty placeable multisets (the family is downward closed, so a
    DFS that stops at the first unplaceable extension finds them all)."""
    k = len(geometry.profiles)
    out: List[Counts] = []

    def rec(cur: List[int], first: int) -> None:
        for i in range(first, k):
            cur[i] += 1
            t = tuple(cur)
            if _placement(geometry, t) is not None:
                out.append(t)
                rec(cur, i)
            cur[i] -= 1

    rec([0] * k, 0)
    return tuple(sorted(out))


def _bump(c: Counts, i: int, d: int = 1) -> Counts:
    return c[:i] + (c[i] + d,) + c[i + 1:]


@functools.lru_cache(maxsize=None)
def minimal_unplaceable(geometry: Geometry) -> Tuple[Counts, ...]:
    """Unplaceable multisets whose every one-smaller subset is placeable.
    Every unplaceable multiset contains one, so weights that put all of these
    over C admit no unplaceable multiset at all."""
    ps = set(placeable_sets(geometry))
    k = len(geometry.profiles)
    cands = {_bump(p, i) for p in ps | {(0,) * k} for i in range(k)}
    out = []
    for u in cands:
        if u in ps:
            continue
        if all(u[j] == 0 or _bump(u, j, -1) in ps or not any(_bump(u, j, -1)) for j in range(k)):
            out.append(u)
    return tuple(sorted(out))


def dominance(geometry: Geometry) -> Tuple[Tuple[int, int], ...]:
    """Pairs (b, a), b != a: in every placeable multiset, one instance of a can
    be swapped for one of b and the result is still placeable.  Then optimal
    weights may take w[b] <= w[a] without loss (the search uses this)."""
    ps = placeable_sets(geometry)
    pset = set(ps)
    k = len(geometry.profiles)
    out = []
    for a in range(k):
        with_a = [p for p in ps if p[a] > 0]
        for b in range(k):
            if a != b and all(_bump(_bump(p, a, -1), b) in pset for p in with_a):
                out.append((b, a))
    return tuple(out)


# ------------------------------------------------------------------ evaluation

def _cap_index(geometry: Geometry, caps: Iterable[str]) -> Dict[int, int]:
    caps = tuple(caps)
    unknown = set(caps) - set(geometry.names)
    if unknown:
        raise KeyError(f"unknown profiles {sorted(unknown)}")
    return {i: p.max for i, p in enumerate(geometry.profiles) if p.name in caps}


def admitted(geometry: Geometry, weights: Sequence[int], C: int,
             caps: Iterable[str] = ()) -> Iterator[Counts]:
    """Every non-empty multiset n (no other bound) with sum(w * n) <= C and,
    for the profiles named in caps, n <= that profile's max."""
    k = len(geometry.profiles)
    capi = _cap_index(geometry, caps)
    if any(w <= 0 for w in weights):
        raise ValueError("weights must be positive (else Slurm admits unbounded sets)")
    cur = [0] * k

    def rec(i: int, left: int) -> Iterator[Counts]:
        if i == k:
            if any(cur):
                yield tuple(cur)
            return
        for n in range(min(left // weights[i], capi.get(i, left)) + 1):
            cur[i] = n
            yield from rec(i + 1, left - n * weights[i])
        cur[i] = 0

    yield from rec(0, C)


def evaluate(geometry: Geometry, weights: Sequence[int], C: int, method: str = "given",
             optimal: Optional[bool] = None, nodes: int = 0,
             caps: Iterable[str] = ()) -> Weights:
    """What weights w and Count C admit: exact counts over every multiset."""
    weights = tuple(int(w) for w in weights)
    caps = tuple(caps)
    ps = placeable_sets(geometry)
    adm_p = adm_u = 0
    for n in admitted(geometry, weights, C, caps):
        if _placement(geometry, n) is not None:
            adm_p += 1
        else:
            adm_u += 1
    gave = tuple(p for p in ps if sum(w * x for w, x in zip(weights, p)) > C)
    assert adm_p + len(gave) == len(ps)
    return Weights(names=geometry.names, weights=weights, count=C, placeable=len(ps),
                   admitted_placeable=adm_p, admitted_unplaceable=adm_u, given_up=gave,
                   method=method, optimal=optimal, nodes=nodes, caps=caps)


# ----------------------------------------------------------------------- search

def search(geometry: Geometry, c_max: int = 64, use_dominance: bool = True,
           caps: Iterable[str] = (), raise_weights: bool = True) -> Weights:
    """Integer weights w >= 1 and C <= c_max admitting no unplaceable multiset
    and the most placeable ones; ties go to the smaller C, then to the
    lexicographically smallest weights (profiles biggest first).

    Exhaustive branch and bound, per C = 1..c_max, over w[i] in 1..C+1 (any
    weight > C means "never admitted" and is the same as C+1):
      * feasibility: every minimal unplaceable u needs w.u >= C+1; a u is
        checked when its last non-zero profile is assigned (lower bound on w[i]);
      * lower bounds propagate: each unassigned w[j] is at least what the
        single-profile u (max+1 copies) and the u over assigned profiles plus j
        force; admitted-count upper bound = unassigned weights at those lower
        bounds (a weaker, monotone-in-w[i] version cuts the w[i] loop);
        only strict improvements are kept, so the first C reaching the best
        count wins;
      * dominance (optional, exact): w[b] <= w[a] when b can always replace a
        (see dominance()); lowering w[b] to w[a] never admits an unplaceable
        set, so some optimum satisfies these.
    The result is optimal among integer solutions with C <= c_max (method says
    so).  By itself that proves nothing for larger C or real weights; for the
    catalog's layouts an independent MILP (run outside this repository) found real weights
    cannot admit more either.

    raise_weights: afterwards lift each weight (biggest profile first) as far
    as it goes without changing the admitted set (see lift_weights); the
    whole-GPU profile then costs C.  Same admission, so same optimum.

    caps: profiles that Slurm also limits to their max per GPU through a
    separate counter (e.g. a +me profile, max 1); the shards then need not
    enforce those maxima.  Empty: shards alone must keep every set placeable.
    """
    caps = tuple(caps)
    capi = _cap_index(geometry, caps)
    profs = geometry.profiles
    k = len(profs)
    P = placeable_sets(geometry)
    # with caps, only the unplaceable sets within the caps need excluding
    U = tuple(u for u in minimal_unplaceable(geometry)
              if all(u[i] <= m for i, m in capi.items()))
    nP, nU = len(P), len(U)
    colP = [[p[i] for p in P] for i in range(k)]
    colU = [[u[i] for u in U] for i in range(k)]
    support = [frozenset(i for i in range(k) if u[i]) for u in U]
    # groups[i][j] (j > i): the u whose support lies in {0..i} | {j} and holds j;
    # once w[0..i] are fixed, each gives w[j] >= ceil((C+1 - w.u) / u[j]).
    groups = [[[t for t in range(nU) if j in support[t] and all(l <= i or l == j for l in support[t])]
               if j > i else [] for j in range(k)] for i in range(-1, k)]
    # the u with support {j} alone (max+1 copies, or too big alone)
    single = [[t for t in range(nU) if support[t] == frozenset((j,))] for j in range(k)]
    upper_of: List[List[int]] = [[] for _ in range(k)]   # i -> earlier a with w[i] <= w[a]
    lower_of: List[List[int]] = [[] for _ in range(k)]   # i -> earlier b with w[b] <= w[i]
    if use_dominance:
        for b, a in dominance(geometry):
            if a in capi:
                continue    # swapping b -> a could break a's cap: no WLOG
            if a < b:
                upper_of[b].append(a)
            else:
                lower_of[a].append(b)

    best_count = -1
    best: Optional[Tuple[int, Tuple[int, ...]]] = None
    nodes = 0

    for C in range(1, c_max + 1):
        # static lower bounds: independent of any assignment
        static = [max([1] + [-(-(C + 1) // U[t][j]) for t in single[j]]) for j in range(k)]
        w = [0] * k
        srest = [[sum(static[j] * p[j] for j in range(i + 1, k)) for p in P] for i in range(k)]

        def lower_bounds(i: int, sU: List[int]) -> List[int]:
            """Lower bounds on w[j], j > i, given w[0..i] (sU = their part of w.u)."""
            L = [0] * k
            for j in range(i + 1, k):
                lj = static[j]
                for t in groups[i + 1][j]:
                    need = C + 1 - sU[t]
                    if need > 0:
                        v = -(-need // U[t][j])
                        if v > lj:
                            lj = v
                for b in lower_of[j]:
                    if b <= i and w[b] > lj:
                        lj = w[b]
                L[j] = lj
            return L

        def rec(i: int, sP: List[int], sU: List[int], lo: int) -> None:
            nonlocal best_count, best, nodes
            nodes += 1
            hi = C + 1
            for a in upper_of[i]:
                hi = min(hi, w[a])
            cP, cU = colP[i], colU[i]
            for wi in range(lo, hi + 1):
                nP_ = [s + wi * c for s, c in zip(sP, cP)]
                # weak bound (monotone in wi): later weights at their static minimum
                weak = sum(1 for s, r in zip(nP_, srest[i]) if s + r <= C)
                if weak <= best_count:
                    break
                w[i] = wi
                nU_ = [s + wi * c for s, c in zip(sU, cU)]
                if i + 1 == k:
                    # all u were checked through lower bounds; weak is exact here
                    best_count, best = weak, (C, tuple(w))
                    continue
                L = lower_bounds(i, nU_)
                if any(L[j] > C + 1 for j in range(i + 1, k)):
                    continue
                strong = sum(1 for t in range(nP) if nP_[t] + sum(L[j] * P[t][j] for j in range(i + 1, k)) <= C)
                if strong <= best_count:
                    continue
                rec(i + 1, nP_, nU_, L[i + 1])
            w[i] = 0

        L0 = lower_bounds(-1, [0] * nU)
        rec(0, [0] * nP, [0] * nU, L0[0])
        if best_count == nP:
            break   # everything placeable admitted: a larger C could only tie
    assert best is not None
    C, ws = best
    if raise_weights:
        ws = lift_weights(geometry, ws, C, caps)
    res = evaluate(geometry, ws, C, method=f"exhaustive(C<={c_max})", optimal=True, nodes=nodes,
                   caps=caps)
    assert res.admitted_unplaceable == 0 and res.admitted_placeable == best_count
    return res


def lift_weights(geometry: Geometry, weights: Sequence[int], C: int,
                 caps: Iterable[str] = ()) -> Tuple[int, ...]:
    """Raise each weight in turn (profiles in geometry order: biggest first) to
    the most it can be without dropping an admitted placeable multiset.
    Raising weights never admits anything new, so the admitted set is
    unchanged; a profile nothing admits is set to C + 1."""
    ws = list(weights)
    adm = [n for n in admitted(geometry, ws, C, caps)]
    for i in range(len(ws)):
        slack = [(C - sum(w * x for w, x in zip(ws, n))) // n[i] for n in adm if n[i]]
        ws[i] += min(slack) if slack else (C + 1 - ws[i])
    assert sorted(admitted(geometry, ws, C, caps)) == sorted(adm)
    return tuple(ws)


# ------------------------------------------------------------------------ docs

def describe(geometry: Geometry, counts) -> str:
    """'1g.20gb + 2g.20gb + 4g.40gb'; repeats as '2x 1g.10gb'. Smallest first."""
    c = geometry.counts(counts)
    parts = []
    for p, n in sorted(zip(geometry.profiles, c), key=lambda t: (t[0].mem_slots, t[0].slices, t[0].name)):
        if n:
            parts.append(p.name if n == 1 else f"{n}x {p.name}")
    return " + ".join(parts) if parts else "(nothing)"


def given_up(geometry: Geometry, result: Weights, minimal: bool = True) -> Tuple[str, ...]:
    """Placeable combinations the weights refuse.  minimal=True lists only the
    smallest ones (their placeable supersets are refused too)."""
    gave = result.given_up
    if minimal:
        gs = set(gave)
        k = len(geometry.profiles)
        gave = tuple(g for g in gave
                     if not any(g[i] and _bump(g, i, -1) in gs for i in range(k)))
    return tuple(describe(geometry, g) for g in gave)


# ------------------------------------------------------------- catalog models

class LayoutUnits(NamedTuple):
    """Shard units of one catalog layout: `count` shards per GPU, and what one
    instance of each profile (by NVML enum) costs."""
    count: int
    units: Dict[int, int]
    result: Weights
    geometry: Geometry
    enums: Tuple[int, ...]       # the enum of each geometry profile, in geometry order


def shard_units(models: Iterable["GpuModel"]) -> Dict[str, LayoutUnits]:
    """Per layout of `models`, its weights over the union of their profiles
    (models on one layout share shapes by enum, so one set of weights serves
    each of them): the catalog's measured ones where the layout has them,
    else the searched ones. Profiles take the name the first model (by key)
    gives them."""
    profiles: Dict[str, Dict[int, tuple]] = {}
    sizes: Dict[str, Tuple[int, int]] = {}
    measured: Dict[str, Optional[tuple]] = {}
    for m in sorted(models, key=lambda m: m.key):
        sizes[m.layout] = (m.memory_slots, m.compute_slices)
        measured[m.layout] = m.shard_weights
        for p in m.profiles:
            profiles.setdefault(m.layout, {}).setdefault(
                p.enum, (p.name, p.slices, p.mem_slots, p.max, tuple(p.starts)))
    return {layout: _layout_units(*sizes[layout], tuple(sorted(enums.items())), measured[layout])
            for layout, enums in sorted(profiles.items())}


@functools.lru_cache(maxsize=None)
def _layout_units(memory_slots: int, compute_slices: int, enums: tuple,
                  measured: Optional[tuple] = None) -> LayoutUnits:
    geometry = Geometry(memory_slots=memory_slots, compute_slices=compute_slices, profiles=tuple(
        sorted((Profile(name, slices, mem, mx, starts) for _, (name, slices, mem, mx, starts) in enums),
               key=lambda p: (-p.mem_slots, -p.slices, p.name))))
    enum_of = {name: enum for enum, (name, *_) in enums}
    if measured is None:
        result = search(geometry)
    else:
        count, units = measured[0], dict(measured[1])
        missing = [n for n in geometry.names if enum_of[n] not in units]
        if missing:
            raise ValueError(f"the catalog's shard weights price no {', '.join(missing)}")
        result = evaluate(geometry, [units[enum_of[n]] for n in geometry.names], count)
        if result.admitted_unplaceable:
            raise ValueError(f"the catalog's shard weights admit {result.admitted_unplaceable} "
                             "sets no empty GPU can hold")
    return LayoutUnits(result.count, {enum_of[n]: w for n, w in zip(result.names, result.weights)},
                       result, geometry, tuple(enum_of[n] for n in geometry.names))


def common_scales(prices: Mapping[str, Mapping[str, int]]) -> Dict[str, int]:
    """Per GPU model, the smallest whole factor for its shard units (and its
    Count) such that every profile name costs the same number of shards on
    every model that has it: job_submit.lua prices a request before Slurm
    picks the node, so '1g.10gb' (one memory slot on an H100-80GB, two on an
    A100-40GB) must cost the same scaled weight on both. Scaling a model's
    weights and Count together admits exactly the same sets. `prices`: model
    -> {profile name: units}. ValueError names two models whose shared
    profiles no factors reconcile."""
    from fractions import Fraction
    models = sorted(prices)
    scale: Dict[str, Fraction] = {}
    for first in models:
        if first in scale:
            continue
        scale[first], group, todo = Fraction(1), [first], [first]
        while todo:
            a = todo.pop()
            for b in models:
                for name in sorted(set(prices[a]) & set(prices[b])):
                    want = scale[a] * prices[a][name] / prices[b][name]
                    if b not in scale:
                        scale[b] = want
                        group.append(b)
                        todo.append(b)
                    elif scale[b] != want:
                        raise ValueError(f"profile {name} costs {prices[a][name]} shards on {a} and "
                                         f"{prices[b][name]} on {b}, and no factors make every "
                                         "profile they share cost the same")
        lcm = functools.reduce(lambda x, y: x * y // math.gcd(x, y), (scale[m].denominator for m in group))
        whole = [int(scale[m] * lcm) for m in group]
        divisor = functools.reduce(math.gcd, whole)
        scale.update({m: Fraction(w // divisor) for m, w in zip(group, whole)})
    return {m: int(s) for m, s in scale.items()}
