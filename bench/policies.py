"""Compare placement policies on random arrival/departure sequences.

For each policy, the same seeded trace of jobs (one MIG profile each, mixed
sizes, exponential lifetimes) arrives at one node. A job the node's counters
admit (memory slots and compute slices free on its GPU, the way shard-style
accounting admits it) but the planner cannot place is a fragmentation
failure. Usage: python bench/policies.py [--gpus 1] [--jobs 20000] [--seeds 5]
"""
import argparse
import heapq
import random
import statistics

from slurm_mig.core import catalog, planner as P
from slurm_mig.core.policies import POLICIES
from slurm_mig.core.view import GpuView, Occupied, job_owner
from slurm_mig.errors import NoFit

MIX = {"1g.10gb": 4, "1g.20gb": 2, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}


def run(policy, seed, gpus, jobs, load):
    model = catalog.load().model("H100-80GB")
    rng = random.Random(seed)
    names, weights = zip(*MIX.items())
    slots = {g: [] for g in range(gpus)}           # gpu -> [Slot]
    ends, t, next_id = [], 0.0, 0
    admitted = failed = refused = 0
    for _ in range(jobs):
        t += rng.expovariate(1.0)
        while ends and ends[0][0] <= t:
            _, gpu, slot = heapq.heappop(ends)
            slots[gpu].remove(slot)
        p = model.find_profile(rng.choices(names, weights)[0])
        # Slurm-side admission: one GPU with enough free memory slots and slices.
        fits_counts = [g for g in range(gpus)
                       if sum(s.size for s in slots[g]) + p.mem_slots <= model.memory_slots
                       and sum(model.profile_by_id(s.profile_id).slices for s in slots[g]) + p.slices
                       <= model.compute_slices]
        if not fits_counts:
            refused += 1
            continue
        admitted += 1
        views = [GpuView(g, model, occupied=tuple(slots[g])) for g in fits_counts]
        try:
            plan = P.plan(views, {p.name: 1}, policy=POLICIES[policy])
        except NoFit:
            failed += 1
            continue
        pl = plan.placements[0]
        next_id += 1
        slot = Occupied(gpu=pl.gpu, profile_id=p.id, start=pl.start, size=p.mem_slots, slices=p.slices,
                      gi_id=next_id, owner=job_owner(str(next_id)))
        slots[pl.gpu].append(slot)
        heapq.heappush(ends, (t + rng.expovariate(1.0 / (load * gpus)), pl.gpu, slot))
    return failed / max(admitted, 1), refused / jobs, (admitted - failed) / jobs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--load", type=float, default=3.0, help="mean lifetime per GPU (arrivals = 1/unit)")
    args = ap.parse_args()
    print(f"{args.gpus} x H100-80GB, {args.jobs} jobs x {args.seeds} seeds, mix {MIX}")
    print(f"{'policy':<10} {'fragmentation failures / admitted':>34} {'refused by counts':>18} {'served':>8}")
    for policy in POLICIES:
        runs = [run(policy, s, args.gpus, args.jobs, args.load) for s in range(args.seeds)]
        fail = statistics.median(r[0] for r in runs)
        refused = statistics.median(r[1] for r in runs)
        served = statistics.median(r[2] for r in runs)
        print(f"{policy:<10} {fail:>33.2%} {refused:>18.2%} {served:>8.2%}")


if __name__ == "__main__":
    main()
