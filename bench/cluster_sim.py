"""Trace-driven cluster simulator: what per-job MIG buys over fixed layouts.

Event-driven, using the real planner and catalog. N nodes x G H100-80GB GPUs.
Jobs arrive with one MIG request (profile x count) and a run time; the queue
is scanned in order at every event and every job that can start does (Slurm's
backfill without reservations). Policies, all on the same trace:

  static:<layout>   a fixed mig-parted layout on every GPU (instances never
                    change); a job runs on the smallest instance profile of the
                    layout that holds its request (same or more slices and
                    memory), or never, if none does
  static:best       the static layout with the lowest mean JCT, in hindsight
  dynamic:most-room per-job reshaping, exact admission by the planner (default policy)
  dynamic:first-fit the same with first-fit placement
  dynamic:slurm     Slurm admits by shard units (memory slots) on the first GPU
                    with enough free units and the prolog places only on that
                    GPU; when it cannot, the prolog waits up to --prolog-wait
                    seconds for an epilog to free room (holding the job's
                    shards), then the job fails and is requeued after
                    --retry-delay (a "mis-admission"); run with the configured
                    wait and with one hour
  dynamic:slurm+fallback  the same, but the prolog places on another GPU of the
                    node when Slurm's GPU cannot take the request (what
                    slurm-mig does with gpu_fallback = true)

Dynamic policies pay --setup seconds per job (instance creation). Reports mean
and p95 queueing delay, mean job completion time (JCT = finish - arrival),
GPU slice-hours used / available until the makespan, and the makespan.

Workloads: --workload mixed|small|large (synthetic: Poisson arrivals at --load
of the cluster's compute slices, log-normal run times with median --median-min
minutes and sigma 1.0, profile mix as in MIXES), or --trace FILE.csv with
columns arrival_s,profile,count,duration_s.
Usage: python bench/cluster_sim.py [--nodes 4] [--gpus 8] [--jobs 3000] [--seed 1]
"""
import argparse
import csv
import heapq
import math
import random
import statistics
from collections import Counter

from slurm_mig.core import catalog, planner as P
from slurm_mig.core.policies import POLICIES
from slurm_mig.core.view import GpuView, Occupied
from slurm_mig.errors import NoFit

MODEL = catalog.load().model("H100-80GB")
MIXES = {
    "mixed": {"1g.10gb": 40, "2g.20gb": 25, "3g.40gb": 20, "4g.40gb": 5, "7g.80gb": 10},
    "small": {"1g.10gb": 60, "1g.20gb": 15, "2g.20gb": 20, "3g.40gb": 5},
    "large": {"2g.20gb": 15, "3g.40gb": 45, "4g.40gb": 10, "7g.80gb": 30},
}
STATIC_LAYOUTS = {   # mig-parted's common configs for A100/H100-80GB, one per GPU
    "all-1g.10gb": {"1g.10gb": 7},
    "all-2g.20gb": {"2g.20gb": 3},
    "all-3g.40gb": {"3g.40gb": 2},
    "all-7g.80gb": {"7g.80gb": 1},
    "all-balanced": {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
    "4g+3g": {"4g.40gb": 1, "3g.40gb": 1},
}


def demand_mixes(jobs, gpus):
    """Per-node GPU layouts sized to the trace's demand (known in hindsight):
    each profile's share of slice-time decides how many GPUs carry the layout
    made of that profile (or the smallest one covering it)."""
    demand = Counter()
    for j in jobs:
        demand[j.profile] += MODEL.find_profile(j.profile).slices * j.count * j.duration
    home = {"1g.10gb": "all-1g.10gb", "1g.20gb": "all-2g.20gb", "2g.20gb": "all-2g.20gb",
            "3g.40gb": "all-3g.40gb", "4g.40gb": "4g+3g", "7g.80gb": "all-7g.80gb"}
    share = Counter()
    for profile, d in demand.items():
        share[home.get(profile, "all-7g.80gb")] += d
    total = sum(share.values())
    mixes = {}
    for bias in (0.0, 0.5, 1.0):          # rounding variants
        counts = {k: max(1, int(v / total * gpus + bias)) for k, v in share.items()}
        while sum(counts.values()) > gpus:
            counts[max(counts, key=counts.get)] -= 1
        while sum(counts.values()) < gpus:
            counts[max(share, key=lambda k: share[k] / total * gpus - counts[k])] += 1
        layout = [name for name, c in sorted(counts.items()) for _ in range(c)]
        mixes["mix(" + ",".join(f"{c}x{k}" for k, c in sorted(counts.items())) + ")"] = layout
    return mixes


class Job:
    __slots__ = ("id", "arrival", "profile", "count", "duration", "start", "end", "tries")

    def __init__(self, id, arrival, profile, count, duration):
        self.id, self.arrival, self.profile, self.count, self.duration = id, arrival, profile, count, duration
        self.start = self.end = None
        self.tries = 0


def synthetic(workload, n_jobs, nodes, gpus, load, median_min, seed):
    rng = random.Random(seed)
    mix = MIXES[workload]
    names, weights = zip(*mix.items())
    mean_slices = sum(MODEL.find_profile(n).slices * w for n, w in mix.items()) / sum(weights)
    sigma = 1.0
    mean_duration = median_min * 60 * math.exp(sigma ** 2 / 2)
    capacity = nodes * gpus * MODEL.compute_slices
    rate = load * capacity / (mean_slices * mean_duration)        # arrivals per second
    t, jobs = 0.0, []
    for i in range(n_jobs):
        t += rng.expovariate(rate)
        jobs.append(Job(i, t, rng.choices(names, weights)[0], 1,
                        rng.lognormvariate(math.log(median_min * 60), sigma)))
    return jobs


def read_trace(path):
    with open(path, newline="") as f:
        return [Job(i, float(r["arrival_s"]), r["profile"], int(r["count"]), float(r["duration_s"]))
                for i, r in enumerate(csv.DictReader(f))]


def covering_profile(layout_profiles, request):
    """Smallest profile in the layout with at least the request's slices and memory."""
    want = MODEL.find_profile(request)
    fits = [p for p in layout_profiles if p.slices >= want.slices and p.mem_slots >= want.mem_slots]
    return min(fits, key=lambda p: (p.mem_slots, p.slices), default=None)


class StaticCluster:
    def __init__(self, nodes, gpu_layouts):
        """gpu_layouts: one layout name per GPU of a node (every node the same)."""
        self.free = [Counter() for _ in range(nodes)]       # node -> profile name -> free instances
        self.profiles = {}
        for name in gpu_layouts:
            for profile, count in STATIC_LAYOUTS[name].items():
                p = MODEL.find_profile(profile)
                self.profiles[p.name] = p
                for n in range(nodes):
                    self.free[n][p.name] += count
        self.held = {}
        self.total_slices = nodes * len(gpu_layouts) * MODEL.compute_slices

    def try_start(self, job):
        p = covering_profile(self.profiles.values(), job.profile)
        if p is None:
            return "never"
        for n, free in enumerate(self.free):
            if free[p.name] >= job.count:
                free[p.name] -= job.count
                self.held[job.id] = (n, p.name)
                return True
        return False

    def finish(self, job):
        n, name = self.held.pop(job.id)
        self.free[n][name] += job.count

    def poll_waiting(self):
        return []


class DynamicCluster:
    def __init__(self, nodes, gpus, policy, slurm_accounting=False, fallback=False, prolog_wait=0.0):
        self.gpus, self.prolog_wait = gpus, prolog_wait
        self.waiting = []              # (job, node, gpu, need, deadline): prologs waiting for room
        self.slots = [[[] for _ in range(gpus)] for _ in range(nodes)]
        self.units = [[0] * gpus for _ in range(nodes)]     # Slurm's shard view per GPU
        self.policy = POLICIES[policy]
        self.slurm, self.fallback = slurm_accounting, fallback
        self.held = {}
        self.misadmitted = 0

    def _views(self, n):
        return [GpuView(g, MODEL, occupied=tuple(s)) for g, s in enumerate(self.slots[n])]

    def try_start(self, job):
        p = MODEL.find_profile(job.profile)
        need, slices = p.mem_slots * job.count, p.slices * job.count
        for n in range(len(self.slots)):
            free = [MODEL.memory_slots - sum(s.size for s in gpu) for gpu in self.slots[n]]
            if self.slurm:
                units = self.units[n]
                gpu = next((g for g in range(self.gpus) if MODEL.memory_slots - units[g] >= need), None)
                if gpu is None:
                    continue
                plan = self._prolog_plan(n, job, gpu)
                units[gpu] += need
                if plan is None:
                    self.waiting.append((job, n, gpu, need))
                    return "waiting"
            else:
                free_slices = [MODEL.compute_slices - sum(MODEL.profile_by_id(x.profile_id).slices
                                                          for x in gpu) for gpu in self.slots[n]]
                if sum(free) < need or sum(free_slices) < slices:
                    continue
                try:
                    plan = P.plan(self._views(n), {job.profile: job.count}, policy=self.policy)
                except NoFit:
                    continue
                gpu = None
            self._bind(n, job, plan, gpu, need)
            return True
        return False

    def _prolog_plan(self, n, job, gpu):
        """What the prolog does on Slurm's GPU (or, with fallback, the node); None: no room."""
        try:
            return P.plan(self._views(n), {job.profile: job.count}, gpu=gpu, policy=self.policy)
        except NoFit:
            if not self.fallback:
                return None
        try:
            return P.plan(self._views(n), {job.profile: job.count}, policy=self.policy)
        except NoFit:
            return None

    def _bind(self, n, job, plan, gpu, need):
        slots = []
        for pl in plan.placements:
            slot = Occupied(gpu=pl.gpu, profile_id=pl.profile.id, start=pl.start,
                          size=pl.profile.mem_slots, slices=pl.profile.slices, gi_id=job.id, owner=str(job.id))
            self.slots[n][pl.gpu].append(slot)
            slots.append(slot)
        self.held[job.id] = (n, slots, gpu, need)

    def poll_waiting(self):
        """Prologs waiting for room retry (after an epilog): the jobs that now start."""
        started = []
        for entry in list(self.waiting):
            job, n, gpu, need = entry
            plan = self._prolog_plan(n, job, gpu)
            if plan is not None:
                self.waiting.remove(entry)
                self._bind(n, job, plan, gpu, need)
                started.append(job)
        return started

    def give_up(self, job):
        """The prolog's wait ran out: the job fails and is requeued (a mis-admission)."""
        for entry in self.waiting:
            if entry[0] is job:
                self.waiting.remove(entry)
                self.units[entry[1]][entry[2]] -= entry[3]
                self.misadmitted += 1
                return True
        return False

    def finish(self, job):
        n, slots, gpu, need = self.held.pop(job.id)
        for s in slots:
            self.slots[n][s.gpu].remove(s)
        if gpu is not None:
            self.units[n][gpu] -= need


def simulate(jobs, cluster, setup=0.0, retry_delay=30.0, window=64):
    jobs = [Job(j.id, j.arrival, j.profile, j.count, j.duration) for j in jobs]
    # (time, kind, job): 0 arrive, 1 finish, 2 requeued job back, 3 a waiting prolog gives up
    events = [(j.arrival, 0, j.id) for j in jobs]
    heapq.heapify(events)
    by_id = {j.id: j for j in jobs}
    queue, never, busy_slices, last_t, used = [], [], 0, 0.0, 0.0

    def start(q, t):
        nonlocal busy_slices
        q.start, q.end = t, t + setup + q.duration
        busy_slices += MODEL.find_profile(q.profile).slices * q.count
        heapq.heappush(events, (q.end, 1, q.id))

    while events:
        t, kind, jid = heapq.heappop(events)
        used += busy_slices * (t - last_t)
        last_t = t
        job = by_id[jid]
        if kind == 1:
            cluster.finish(job)
            busy_slices -= MODEL.find_profile(job.profile).slices * job.count
            for q in cluster.poll_waiting():
                start(q, t)
        elif kind == 3:
            if cluster.give_up(job):
                job.tries += 1
                heapq.heappush(events, (t + retry_delay, 2, job.id))
        else:
            queue.append(job)
        started, failed = [], set()
        for q in queue[:window]:
            if (q.profile, q.count) in failed:      # the node only fills up during a scan
                continue
            r = cluster.try_start(q)
            if r is False:
                failed.add((q.profile, q.count))
                continue
            started.append(q)
            if r is True:
                start(q, t)
            elif r == "never":
                never.append(q)
            elif r == "waiting":
                heapq.heappush(events, (t + cluster.prolog_wait, 3, q.id))
        for q in started:
            queue.remove(q)
    done = [j for j in jobs if j.end is not None]
    if not done:
        return {"mean_wait_min": math.nan, "p95_wait_min": math.nan, "mean_jct_min": math.nan,
                "util": 0.0, "makespan_h": math.nan, "never": len(never), "misadmitted": 0}
    makespan = max(j.end for j in done) - min(j.arrival for j in jobs)
    waits = sorted(j.start - j.arrival for j in done)
    return {
        "mean_wait_min": statistics.mean(waits) / 60,
        "p95_wait_min": waits[int(0.95 * (len(waits) - 1))] / 60,
        "mean_jct_min": statistics.mean(j.end - j.arrival for j in done) / 60,
        "util": used / (makespan * cluster_slices(cluster)),
        "makespan_h": makespan / 3600,
        "never": len(never),
        "misadmitted": getattr(cluster, "misadmitted", 0),
    }


def cluster_slices(cluster):
    if isinstance(cluster, DynamicCluster):
        return len(cluster.slots) * cluster.gpus * MODEL.compute_slices
    return cluster.total_slices


def run_all(jobs, nodes, gpus, setup, retry_delay, prolog_wait):
    results = {}
    for name in STATIC_LAYOUTS:
        results[f"static:{name}"] = simulate(jobs, StaticCluster(nodes, [name] * gpus))
    for name, layout in demand_mixes(jobs, gpus).items():
        results[f"static:{name}"] = simulate(jobs, StaticCluster(nodes, layout))
    candidates = {k: v for k, v in results.items() if v["never"] == 0}
    if candidates:
        best = min(candidates, key=lambda k: candidates[k]["mean_jct_min"])
        results[f"static:best ({best.split(':')[1]})"] = candidates[best]
    for policy in ("most-room", "first-fit"):
        results[f"dynamic:{policy}"] = simulate(jobs, DynamicCluster(nodes, gpus, policy), setup)
    for fallback in (False, True):
        for wait in (prolog_wait, 3600.0):
            name = f"dynamic:slurm{'+fallback' if fallback else ''} (prolog waits {wait:g}s)"
            results[name] = simulate(jobs, DynamicCluster(nodes, gpus, "most-room", True, fallback, wait),
                                     setup, retry_delay)
    return results


def plot(results, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = {k: r for k, r in results.items()
             if r["never"] == 0 and not math.isnan(r["mean_jct_min"]) and not k.startswith("static:best")}
    names = [k.replace("xall-", "x").replace(".10gb", "").replace(".20gb", "").replace(".40gb", "")
             .replace(".80gb", "") for k in shown]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(shown) + 1.5))
    y = range(len(shown))
    ax.barh([i + 0.2 for i in y], [r["mean_jct_min"] for r in shown.values()], 0.4, label="mean JCT (min)")
    ax.barh([i - 0.2 for i in y], [r["p95_wait_min"] for r in shown.values()], 0.4, label="p95 wait (min)")
    ax.set_yticks(list(y))
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("symlog")
    ax.set_xlabel("minutes (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--workload", choices=sorted(MIXES), default="mixed")
    ap.add_argument("--trace", help="CSV trace: arrival_s,profile,count,duration_s")
    ap.add_argument("--load", type=float, default=0.9, help="offered load, share of compute slices")
    ap.add_argument("--median-min", type=float, default=30.0)
    ap.add_argument("--setup", type=float, default=2.0, help="seconds to create a job's instances")
    ap.add_argument("--retry-delay", type=float, default=30.0,
                    help="seconds before a failed job is scheduled again")
    ap.add_argument("--prolog-wait", type=float, default=30.0,
                    help="how long the prolog waits for room (wait_for_room)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", metavar="FILE.png", help="also draw mean JCT and p95 wait per policy "
                    "(needs matplotlib: pip install '.[bench]')")
    args = ap.parse_args()
    jobs = read_trace(args.trace) if args.trace else synthetic(
        args.workload, args.jobs, args.nodes, args.gpus, args.load, args.median_min, args.seed)
    source = args.trace or f"{args.workload} mix, {args.jobs} jobs, load {args.load}, seed {args.seed}"
    print(f"{args.nodes} nodes x {args.gpus} H100-80GB; {source}")
    results = run_all(jobs, args.nodes, args.gpus, args.setup, args.retry_delay, args.prolog_wait)
    print(f"{'policy':<52} {'wait min':>9} {'p95 wait':>9} {'JCT min':>8} {'util':>6} "
          f"{'makespan h':>10} {'never':>6} {'misadm':>7}")
    for name, r in results.items():
        print(f"{name:<52} {r['mean_wait_min']:9.1f} {r['p95_wait_min']:9.1f} {r['mean_jct_min']:8.1f} "
              f"{r['util']:6.1%} {r['makespan_h']:10.1f} {r['never']:6d} {r['misadmitted']:7d}")
    if args.plot:
        plot(results, f"{args.nodes}x{args.gpus} H100-80GB, {source}", args.plot)
    best = next((k for k in results if k.startswith("static:best")), None)
    if best:
        base = results[best]["mean_jct_min"]
        gains = ", ".join(f"{k} {1 - r['mean_jct_min'] / base:+.1%}" for k, r in results.items()
                          if k.startswith("dynamic"))
        print(f"SUMMARY cluster: mean JCT gain vs {best}: {gains} (MISO: 16%)")


if __name__ == "__main__":
    main()
