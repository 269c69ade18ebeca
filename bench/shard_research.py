"""The shard-weight research tools only the benchmarks use (bench/research/,
bench/cluster_sim.py): geometries from raw catalog layouts, every multiset,
the maximal placeable ones and the memory-slot weights compared against.
The product's part (the oracle, the search, what gres-conf ships) stays in
slurm_mig/core/shards.py."""
from __future__ import annotations

import re
from typing import Callable, Iterator, Mapping, Optional, Tuple

from slurm_mig.core.shards import Counts, Geometry, Profile, Weights, _bump, evaluate, placeable_sets


def geometry_from_layout(layout: Mapping, names: Optional[Mapping[str, str]] = None,
                         include: Optional[Callable[[str], bool]] = None) -> Geometry:
    """A Geometry from one catalog layout dict (``layouts[<key>]`` of catalog.json).

    ``names`` maps the layout's gi-profile enum keys (strings) to display names,
    e.g. ``{e: p["name"] for e, p in catalog["models"][m]["profiles"].items()}``;
    when given, only those enums are used (the profiles the model lists).
    ``include(name)`` filters further.
    """
    gi = layout["gi_profiles"]
    keys = list(names) if names is not None else list(gi)
    profiles = []
    for k in keys:
        shape = gi[str(k)]
        name = names[k] if names is not None else f"enum{k}"
        if include is not None and not include(name):
            continue
        profiles.append(Profile(name=name, slices=int(shape["slices"]),
                                mem_slots=int(shape["mem_slots"]), max=int(shape["max"]),
                                starts=tuple(int(s) for s in shape["starts"])))
    # biggest first: the oracle and the search both like that order
    profiles.sort(key=lambda p: (-p.mem_slots, -p.slices, p.name))
    return Geometry(memory_slots=int(layout["memory_slots"]),
                    compute_slices=int(layout["compute_slices"]), profiles=tuple(profiles))


_PLAIN = re.compile(r"^\d+g\.\d+gb$")


def is_plain(name: str) -> bool:
    """True for a profile name without a +me/-me/+gfx/... suffix."""
    return bool(_PLAIN.match(name))



def multisets(geometry: Geometry, max_total: Optional[int] = None,
              respect_max: bool = True) -> Iterator[Counts]:
    """Every non-empty multiset with total instances <= max_total (default:
    memory_slots) and, when respect_max, each count <= that profile's max."""
    k = len(geometry.profiles)
    total = geometry.memory_slots if max_total is None else max_total
    caps = [min(p.max, total) if respect_max else total for p in geometry.profiles]
    cur = [0] * k

    def rec(i: int, left: int) -> Iterator[Counts]:
        if i == k:
            if left != total:
                yield tuple(cur)
            return
        for n in range(min(caps[i], left) + 1):
            cur[i] = n
            yield from rec(i + 1, left - n)
        cur[i] = 0

    yield from rec(0, total)



def _leq(a: Counts, b: Counts) -> bool:
    return all(x <= y for x, y in zip(a, b))


def maximal_placeable(geometry: Geometry) -> Tuple[Counts, ...]:
    ps = set(placeable_sets(geometry))
    k = len(geometry.profiles)
    return tuple(p for p in sorted(ps)
                 if not any(_bump(p, i) in ps for i in range(k)))



def memory_slot_weights(geometry: Geometry, caps: Iterable[str] = ()) -> Weights:
    """The obvious weights: w = memory slots, C = the GPU's memory slots."""
    return evaluate(geometry, [p.mem_slots for p in geometry.profiles],
                    geometry.memory_slots, method="memory-slots", caps=caps)
