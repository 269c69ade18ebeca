"""Planner decision time: worst-case states on an 8-GPU node, and scaling 1..16 GPUs.

States: every GPU holds random busy instances (a random feasible layout, then
about half of it kept), requests mix 1-3 profiles with counts 1-3, a share of
them unplaceable (the search must then exhaust every option). Times are per
plan() call, in-process. Usage: python bench/planner.py [--samples 2000]
"""
import argparse
import random
import statistics
import time

from slurm_mig.core import catalog, planner as P
from slurm_mig.core.policies import POLICIES
from slurm_mig.core.view import GpuView, Occupied, job_owner
from slurm_mig.errors import NoFit

MODEL = catalog.load().model("H100-80GB")


def random_gpu(rng, index):
    placed = []
    for _ in range(12):
        p = rng.choice(MODEL.profiles)
        s = rng.choice(p.starts)
        trial = _GpuCheck(placed + [(p, s)])
        if trial.ok():
            placed.append((p, s))
    kept = [x for x in placed if rng.random() < 0.5]
    return GpuView(index, MODEL, occupied=tuple(
        Occupied(gpu=index, profile_id=p.id, start=s, size=p.mem_slots, slices=p.slices, gi_id=i,
                 owner=job_owner("1"))
        for i, (p, s) in enumerate(kept)))


class _GpuCheck:
    def __init__(self, placed):
        self.placed = placed

    def ok(self):
        spans = sorted((s, s + p.mem_slots) for p, s in self.placed)
        counts = {}
        for p, _ in self.placed:
            counts[p.id] = counts.get(p.id, 0) + 1
        return (all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
                and all(counts[p.id] <= p.max for p, _ in self.placed)
                and sum(p.slices for p, _ in self.placed) <= MODEL.compute_slices)


def random_request(rng):
    names = rng.sample([p.name for p in MODEL.profiles], rng.randint(1, 3))
    return {n: rng.randint(1, 3) for n in names}


def measure(gpus, samples, seed):
    rng = random.Random(seed)
    times, fits = [], 0
    for _ in range(samples):
        node = [random_gpu(rng, g) for g in range(gpus)]
        request = random_request(rng)
        t = time.perf_counter()
        try:
            P.plan(node, request)
            fits += 1
        except NoFit:
            pass
        times.append(time.perf_counter() - t)
    times.sort()
    return (statistics.median(times) * 1e3, times[int(0.99 * (len(times) - 1))] * 1e3,
            times[-1] * 1e3, fits / samples)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    args = ap.parse_args()
    print(f"{'GPUs':>4} {'median ms':>10} {'p99 ms':>8} {'max ms':>8} {'fit':>6}")
    results = {}
    for gpus in (1, 2, 4, 8, 16):
        results[gpus] = measure(gpus, args.samples, seed=gpus)
        med, p99, worst, fit = results[gpus]
        print(f"{gpus:>4} {med:10.3f} {p99:8.3f} {worst:8.2f} {fit:6.0%}")
    print(f"SUMMARY planner: 8 GPUs p99={results[8][1]:.2f}ms (target <5ms), "
          f"16 GPUs p99={results[16][1]:.2f}ms")


if __name__ == "__main__":
    main()
