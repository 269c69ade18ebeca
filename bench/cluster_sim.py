"""Trace-driven cluster simulator: what per-job MIG buys over fixed layouts,
and what admitting it through Slurm's shard count costs.

Event-driven, using the real planner and catalog. N nodes x G H100-80GB GPUs.
Jobs arrive with one MIG request (profile x count) and a run time; at every
event the first 64 jobs of the queue (in job id order) are scanned and
every one that can start does (Slurm's backfill without reservations).
Policies, all on the same trace:

  static:<layout>   a fixed mig-parted layout on every GPU (instances never
                    change); a job runs on the smallest instance profile of the
                    layout that holds its request (same or more slices and
                    memory), or never, if none does
  static:best       the static layout with the lowest mean JCT, in hindsight
  dynamic:most-room per-job reshaping with exact admission: a job starts on the
                    first node where the planner places it (any GPU); no job
                    ever fails or waits for a requeue. The bound for the rest.
  slurm:<weights>   what slurm-mig's dynamic mode does, with one shard weight
                    candidate (WEIGHTS; SHIPPED is what gres-conf ships):
                    - job_submit.lua refuses at sbatch a request no empty GPU
                      can hold or whose shard units exceed C ("refused");
                    - Slurm charges count x w(profile) shards on the first node
                      with a GPU having that many free, lowest-index GPU first;
                    - the Prolog plans on that GPU only (gpu_fallback off;
                      --fallback adds slurm:<weights>+fallback, where it
                      places on any GPU of the node when that one has no
                      room, the shards staying where Slurm put them);
                      instances of ended jobs count as free (it destroys idle
                      ones);
                    - no room there: a batch job is requeued at once (its shards
                      freed) and kept off that node (ExcNodeList): it is back in
                      the queue, in its old place (same job id), STEER_DELAY s
                      later (its Epilog) and starts at once (StartTime=now
                      wakes the scheduler: WAKE_LATENCY); once every node has
                      turned it away, the nodes are given back and Slurm's own
                      delay applies (REQUEUE_DELAY: cred_expire + 1 after its
                      Epilog, plus Slurm's scheduling latency once a begin
                      time passes, uniform LATENCY); --no-steer: never kept
                      off, always Slurm's delay; the steerer gives the node
                      back --steer-return s after the job's Epilog there if
                      the job still pends (steer_return; 0: only once every
                      node turned it away);
                    - from its --guarantee-after-th requeue on, a batch job is
                      charged the guarantee (guarantee_after: the product's
                      job_submit.lua recharges it in the steerer's update), so
                      Slurm only picks GPUs that hold it;
                    - after --max-requeues requeues the Prolog waits
                      --prolog-wait s holding the shards, starts the job if an
                      ending job frees room, and else fails it (final:
                      counted, never run);
                    - an interactive job (srun/salloc: --interactive share of
                      the jobs) is charged what the product's job_submit.lua
                      charges (core/guarantee.py interactive_units, with
                      --interactive-charge and --interactive-charge-one-start),
                      is never requeued, and its Prolog
                      waits --interactive-wait s, holding its shards and the
                      place it waits for (core/reservation.py: other jobs are
                      planned around it; --no-reserve: not); with
                      --interactive-evict-age S its first try requeues the
                      batch jobs on that GPU that started at most S s ago,
                      youngest first, none not needed (core/eviction.py):
                      they go back to the queue with Slurm's delay, their
                      run lost, and it starts at once (their Epilogs, a few
                      seconds on a real node, are not modelled)
  before:memory-slots  what slurm-mig did before issue 12: memory-slot weights
                    (C = 8) and no requeue: every job that does not fit waits
                    --prolog-wait s, then fails (sbatch refusals as today;
                    the synthetic mixes have none)

Dynamic policies pay --setup seconds per job (instance creation). Reported:
jobs failed (batch, interactive), refused at sbatch, never served (static),
requeues per job (mean, max), mean and p95 queueing delay (start - arrival,
requeue delays included), mean job completion time (JCT = finish - arrival,
over completed jobs only: failing jobs makes a policy look faster), GPU
slice-hours used / available until the makespan.

The product's own code decides: the planner and placement policy (every
Prolog's plan), the catalog and shard weights (gres-conf's), the interactive
charge (job_submit.lua's table) and the waiting Prolog's reservation. What
each path costs: a start pays --setup s (instance creation; the Prolog's
~0.07 s run is inside it), a steered requeue STEER_DELAY (its Prolog, the
requeue and its Epilog, ~1 s end to end) plus WAKE_LATENCY, an unsteered one
Slurm's REQUEUE_DELAY plus LATENCY; a waiting Prolog holds its shards.

Modelled, not the product's code: Slurm's choice (first node, lowest-index
GPU with the units free; no backfill reservations or scheduler cadence: a
job starts at the event that frees room), the steerer's node exclusions and
its giving them back (a job update wakes the scheduler: the job may start
at once), and the hooks' timing above. Not modelled: whole-GPU (gpu:) and
multi-GPU jobs, node failures, instances held by processes no job owns,
per-profile speed differences, and users resubmitting failed jobs.

Workloads: --workload mixed|small|large (synthetic: Poisson arrivals at --load
of the cluster's compute slices, log-normal run times with median --median-min
minutes and sigma 1.0, profile mix as in MIXES; --multi: that share of the jobs
also asks for a second profile on the same GPU), or --trace FILE.csv with
columns arrival_s,profile,count,duration_s[,interactive]. --grid runs every
--workloads x --loads x seeds (1..--seeds, or --seed-list) x --interactive
shares and prints the medians over seeds, or with --json one object per line
per trace and Slurm policy (jct_vs_exact: batch jobs' mean JCT against exact
admission's, a fraction), so that runs compare across versions.
Usage: python bench/cluster_sim.py [--nodes 4] [--gpus 8] [--jobs 3000] [--seed 1]
       python bench/cluster_sim.py --grid --jobs 2000 --seeds 3 [--procs 2]
       python bench/cluster_sim.py --grid --json --seed-list 7,8 --interactive 0.1,0.3
"""
import argparse
import bisect
import csv
import heapq
import math
import pathlib
import random
import statistics
import sys
from collections import Counter, defaultdict

from slurm_mig.core import catalog, eviction, guarantee, planner as P, reservation, shards

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import shard_research  # noqa: E402  (bench/shard_research.py)
from slurm_mig.config import Config
from slurm_mig.core.policies import POLICIES
from slurm_mig.core.view import GpuView, Occupied, job_owner
from slurm_mig.errors import NoFit

MODEL = catalog.load().model("H100-80GB")
UNITS = shards.shard_units([MODEL])[MODEL.layout]          # what gres-conf ships
GEOMETRY = UNITS.geometry
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
CONSERVATIVE56 = {"1g.10gb": 8, "1g.20gb": 13, "2g.20gb": 15, "3g.40gb": 25, "4g.40gb": 29, "7g.80gb": 56,
                  "1g.10gb+me": 29}
REQUEUE_DELAY = 121.0        # Slurm: cred_expire (120 s) + 1 after the requeued job's Epilog
STEER_DELAY = 1.0            # a job kept off its node: back in the queue after its Epilog
WAKE_LATENCY = (0.04, 0.5)   # Slurm starting a job after a job update woke it (observed)
LATENCY = (10.0, 60.0)       # Slurm starting a job after its begin time passes (observed)
FIXED_ROWS = ("static:best", "dynamic:most-room", "before:memory-slots")
DEFAULTS = Config()          # the product's defaults: interactive_charge, interactive_wait


def geometry_of(names):
    """GEOMETRY restricted to the named profiles."""
    return shards.Geometry(GEOMETRY.memory_slots, GEOMETRY.compute_slices,
                           tuple(p for p in GEOMETRY.profiles if p.name in names))


def weight_candidates():
    """The shard weights compared: name -> shards.Weights over GEOMETRY's
    profiles. searched: exact on an empty GPU (shards.search); conservative56:
    the issue's weights, with 1g.10gb+me priced as high as admits no set an
    empty GPU cannot hold."""
    return {
        "searched": shards.search(GEOMETRY),
        "memory-slots": shard_research.memory_slot_weights(GEOMETRY),
        "conservative56": shards.evaluate(GEOMETRY, [CONSERVATIVE56[n] for n in GEOMETRY.names], 56),
    }


WEIGHTS = weight_candidates()
SHIPPED = next(name for name, w in WEIGHTS.items()          # what gres-conf ships
               if (w.count, w.by_name) == (UNITS.result.count, UNITS.result.by_name))


def demand_mixes(jobs, gpus):
    """Per-node GPU layouts sized to the trace's demand (known in hindsight):
    each profile's share of slice-time decides how many GPUs carry the layout
    made of that profile (or the smallest one covering it)."""
    demand = Counter()
    for j in jobs:
        for profile, count in j.request.items():
            demand[profile] += MODEL.find_profile(profile).slices * count * j.duration
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
    """One job of a trace, and what became of it in one simulation: started
    (start, end set) or a fate ("failed", "refused", "never"). It asks for
    `count` x `profile`, plus `extra` ((profile, count), ...) on the same GPU."""
    __slots__ = ("id", "arrival", "profile", "count", "duration", "interactive", "extra",
                 "start", "end", "requeues", "fate")

    def __init__(self, id, arrival, profile, count, duration, interactive=False, extra=()):
        self.id, self.arrival, self.profile, self.count, self.duration = id, arrival, profile, count, duration
        self.interactive, self.extra = interactive, tuple(extra)
        self.start = self.end = self.fate = None
        self.requeues = 0

    def fresh(self):
        return Job(self.id, self.arrival, self.profile, self.count, self.duration, self.interactive, self.extra)

    @property
    def request(self):
        """profile -> count, as a job's --gres=mig:... names it."""
        req = Counter({self.profile: self.count})
        for profile, count in self.extra:
            req[profile] += count
        return dict(req)

    @property
    def slices(self):
        return sum(MODEL.find_profile(p).slices * n for p, n in self.request.items())


def synthetic(workload, n_jobs, nodes, gpus, load, median_min, seed, interactive=0.0, multi=0.0):
    """Poisson arrivals at `load`; the interactive flags come from their own
    random stream, so the rest of the trace does not depend on that share.
    A `multi` share of the jobs also asks for a second profile of the mix on
    the same GPU (drawn among those an empty GPU holds with the first, from a
    stream of its own; none beside a 7g.80gb), and jobs arrive less often, so
    that the load stays near `load`."""
    rng, flags, second = random.Random(seed), random.Random(f"interactive-{seed}"), random.Random(f"multi-{seed}")
    mix = MIXES[workload]
    names, weights = zip(*mix.items())
    mean_slices = sum(MODEL.find_profile(n).slices * w for n, w in mix.items()) / sum(weights) * (1 + multi)
    sigma = 1.0
    mean_duration = median_min * 60 * math.exp(sigma ** 2 / 2)
    capacity = nodes * gpus * MODEL.compute_slices
    rate = load * capacity / (mean_slices * mean_duration)        # arrivals per second
    t, jobs = 0.0, []
    for i in range(n_jobs):
        t += rng.expovariate(rate)
        profile = rng.choices(names, weights)[0]
        extra = ()
        if second.random() < multi:
            fits = [(n, w) for n, w in mix.items() if shards.placeable(GEOMETRY, Counter([profile, n]))]
            if fits:
                extra = ((second.choices(*zip(*fits))[0], 1),)
        jobs.append(Job(i, t, profile, 1, rng.lognormvariate(math.log(median_min * 60), sigma),
                        flags.random() < interactive, extra))
    return jobs


def read_trace(path):
    with open(path, newline="") as f:
        return [Job(i, float(r["arrival_s"]), r["profile"], int(r["count"]), float(r["duration_s"]),
                    r.get("interactive", "0").strip() in ("1", "true", "yes"))
                for i, r in enumerate(csv.DictReader(f))]


def covering_profile(layout_profiles, request):
    """Smallest profile in the layout with at least the request's slices and memory."""
    want = MODEL.find_profile(request)
    fits = [p for p in layout_profiles if p.slices >= want.slices and p.mem_slots >= want.mem_slots]
    return min(fits, key=lambda p: (p.mem_slots, p.slices), default=None)


class Cluster:
    """Every cluster's try_start(job) answers one of: "started", "queued" (no
    room now), "never" (cannot run here), "refused" (at sbatch), "requeued"
    (back in the queue after requeue_delay) or "waiting" (a prolog waits for
    room). `now` is the time of the event being handled."""
    now = 0.0

    def poll_waiting(self):
        return []

    def take_evicted(self):
        """Running jobs requeued since the last call, their instances gone
        (SlurmCluster with interactive_evict_age has them)."""
        return []

    def give_up(self, job):
        return False

    def blocking_key(self, job):
        """Jobs with one key start or wait alike within a scheduling pass."""
        return tuple(sorted(job.request.items()))


class StaticCluster(Cluster):
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
        need = Counter()
        for profile, count in job.request.items():
            p = covering_profile(self.profiles.values(), profile)
            if p is None:
                return "never"
            need[p.name] += count
        for n, free in enumerate(self.free):
            if all(free[name] >= count for name, count in need.items()):
                free.subtract(need)
                self.held[job.id] = (n, need)
                return "started"
        return "queued"

    def finish(self, job):
        n, need = self.held.pop(job.id)
        self.free[n].update(need)


class MigCluster(Cluster):
    """Nodes of GPUs whose instances are created per job and destroyed at its end."""

    def __init__(self, nodes, gpus, policy="most-room"):
        self.slots = [[[] for _ in range(gpus)] for _ in range(nodes)]
        self.policy = POLICIES[policy]
        self.held = {}                  # job id -> (node, [Occupied])
        self.total_slices = nodes * gpus * MODEL.compute_slices

    def view(self, n, g):
        """GPU g of node n as NVML would show it."""
        return GpuView(g, MODEL, occupied=tuple(self.slots[n][g]))

    def plan(self, n, job, gpu=None):
        """The real planner on node n (only on `gpu` when given); None: no room."""
        views = reservation.apply([self.view(n, g) for g in range(len(self.slots[n]))],
                                  self.reservations_on(n), str(job.id))
        try:
            return P.plan(views, job.request, gpu=gpu, policy=self.policy)
        except NoFit:
            return None

    def reservations_on(self, n):
        """What waiting Prologs on node n hold (none here)."""
        return ()

    def bind(self, n, job, plan):
        held = [Occupied(gpu=pl.gpu, profile_id=pl.profile.id, start=pl.start, size=pl.profile.mem_slots,
                         slices=pl.profile.slices, gi_id=job.id, owner=job_owner(str(job.id)))
                for pl in plan.placements]
        for slot in held:
            self.slots[n][slot.gpu].append(slot)
        self.held[job.id] = (n, held)

    def finish(self, job):
        n, held = self.held.pop(job.id)
        for slot in held:
            self.slots[n][slot.gpu].remove(slot)


class ExactCluster(MigCluster):
    """Admission by the planner itself: a job starts where it can be placed."""

    def try_start(self, job):
        slots = sum(MODEL.find_profile(p).mem_slots * n for p, n in job.request.items())
        for n, gpus in enumerate(self.slots):
            if (sum(s.size for g in gpus for s in g) + slots
                    > len(gpus) * MODEL.memory_slots):
                continue                # a quick bound before planning
            plan = self.plan(n, job)
            if plan is not None:
                self.bind(n, job, plan)
                return "started"
        return "queued"


class SlurmCluster(MigCluster):
    """Slurm's shard count admits, the Prolog places on Slurm's GPU (see the
    module docstring for what it does when it cannot)."""

    def __init__(self, nodes, gpus, weights, max_requeues=10, wait=30.0, fallback=False, steer=True,
                 interactive_charge=0.0, interactive_wait=None, reserve=True, steer_return=0.0,
                 interactive_charge_one_start=0.0, guarantee_after=0, interactive_evict_age=0.0):
        super().__init__(nodes, gpus)
        self.interactive_evict_age = interactive_evict_age
        self.running, self.evicted = {}, []     # job id -> running job; jobs requeued for an interactive one
        self.weight_vector, self.interactive_charge = weights.weights, interactive_charge
        self.interactive_charge_one_start = interactive_charge_one_start
        self.guarantee_after = guarantee_after
        self.interactive_wait = wait if interactive_wait is None else interactive_wait
        self.fallback, self.steer = fallback, steer
        self.kept_off = {}              # job id -> nodes its requeues keep it off (ExcNodeList)
        self.steer_return, self.last_off = steer_return, None
        self.returns = {}               # job id -> {node: when its steerer gives it back}
        self.weights, self.count = weights.by_name, weights.count
        self.shards = [[0] * gpus for _ in range(nodes)]    # used shards per GPU
        self.charged = {}               # job id -> (node, gpu, units)
        self.waiting = []               # jobs whose prolog waits for room
        self.max_requeues, self.wait = max_requeues, wait
        self.reserve = reserve
        self.reserved = {}              # waiting job id -> (node, its Reservation)

    def units(self, job):
        """The job's shard units, or None when job_submit.lua refuses it."""
        if any(p not in self.weights for p in job.request):
            return None
        units = sum(self.weights[p] * n for p, n in job.request.items())
        if units > self.count or not shards.placeable(GEOMETRY, job.request):
            return None
        if job.interactive:             # the product's own charge (what job_submit.lua holds)
            return guarantee.interactive_units(GEOMETRY, self.weight_vector, self.count,
                                               GEOMETRY.counts(job.request), self.interactive_charge,
                                               self.interactive_charge_one_start)
        if self.guarantee_after and job.requeues >= self.guarantee_after:
            return guarantee.guarantee(GEOMETRY, tuple(self.weight_vector), self.count,
                                       GEOMETRY.counts(job.request))
        return units

    def slurm_gpu(self, units, kept_off=()):
        """(node, gpu): the first node's lowest-index GPU with `units` free
        shards, skipping the nodes in kept_off, or None."""
        for n, used in enumerate(self.shards):
            if n in kept_off:
                continue
            for g, u in enumerate(used):
                if u + units <= self.count:
                    return n, g
        return None

    def try_start(self, job):
        units = self.units(job)
        if units is None:
            return "refused"
        where = self.slurm_gpu(units, self.kept_off.get(job.id, ()))
        if where is None:
            return "queued"
        n, g = where
        plan = self.prolog_plan(n, job, g)
        if plan is None and not job.interactive and job.requeues < self.max_requeues:
            self.keep_off(job, n)
            return "requeued"           # its shards are back before anyone else is scheduled
        self.kept_off.pop(job.id, None)
        self.shards[n][g] += units
        self.charged[job.id] = (n, g, units)
        if plan is None:
            self.wait_here(n, g, job)
            return "waiting"
        self.bind(n, job, plan)
        return "started"

    def wait_here(self, n, g, job):
        """A waiting Prolog holds the place it waits for (core/reservation.py)."""
        self.waiting.append(job)
        if self.reserve:
            held = reservation.target(self.view(n, g), str(job.id), job.request, self.reservations_on(n))
            if held is not None:
                self.reserved[job.id] = (n, held)

    def reservations_on(self, n):
        return [r for node, r in self.reserved.values() if node == n]

    def keep_off(self, job, n):
        """The Prolog's steering: add node n to the job's ExcNodeList; when
        that would leave no node, give them all back."""
        if not self.steer:
            return
        nodes = self.kept_off.setdefault(job.id, set())
        nodes.add(n)
        self.last_off = n
        if len(nodes) == len(self.shards):
            del self.kept_off[job.id]

    def schedule_return(self, job, t):
        """When the steerer of the requeue just made (at t) gives its node
        back (its Epilog, then steer_return s), or None. A later requeue
        from the same node supersedes it, as the product's round file does."""
        if not self.steer_return or job.id not in self.kept_off:
            return None
        due = t + STEER_DELAY + self.steer_return
        self.returns.setdefault(job.id, {})[self.last_off] = due
        return due

    def give_back(self, job, t):
        """The steerers due by t take their nodes out of the pending job's ExcNodeList."""
        returns = self.returns.get(job.id, {})
        for n, due in list(returns.items()):
            if due <= t:
                del returns[n]
                self.kept_off.get(job.id, set()).discard(n)
        if not self.kept_off.get(job.id, True):
            del self.kept_off[job.id]

    def requeue_delay(self, job, rng):
        """Seconds from the requeue until Slurm starts the job again, if it can."""
        if job.id in self.kept_off:
            return STEER_DELAY + rng.uniform(*WAKE_LATENCY)
        return REQUEUE_DELAY + rng.uniform(*LATENCY)

    def blocking_key(self, job):
        return tuple(sorted(job.request.items())), frozenset(self.kept_off.get(job.id, ()))

    def prolog_plan(self, n, job, g):
        """Where the Prolog puts the job: on Slurm's GPU, else (with
        fallback) anywhere on the node, else (an interactive job's first
        try, with interactive_evict_age) there once young batch jobs are
        requeued; None: no room."""
        plan = self.plan(n, job, g)
        plan = self.plan(n, job) if plan is None and self.fallback else plan
        if plan is None and job.interactive and self.interactive_evict_age and job not in self.waiting:
            young = {str(j.id): j.start for j in self.running.values()
                     if not j.interactive and j.start is not None and j.requeues + 1 < self.max_requeues
                     and self.now - j.start <= self.interactive_evict_age}
            room = eviction.make_room(self.view(n, g), str(job.id), job.request, young, self.reservations_on(n),
                                      self.policy) if young else None
            if room is not None and room.victims:
                self.evict([self.running[int(v)] for v in room.victims])
                plan = self.plan(n, job, g)
        return plan

    def evict(self, victims):
        """Requeue running batch jobs (their instances and shards freed)."""
        for v in victims:
            self.finish(v)
        self.evicted.extend(victims)

    def take_evicted(self):
        evicted, self.evicted = self.evicted, []
        return evicted

    def bind(self, n, job, plan):
        super().bind(n, job, plan)
        self.running[job.id] = job

    def poll_waiting(self):
        """Waiting prologs try again (an epilog freed room): the jobs that now start."""
        started = []
        for job in list(self.waiting):
            n, g, _ = self.charged[job.id]
            plan = self.prolog_plan(n, job, g)
            if plan is not None:
                self.waiting.remove(job)
                self.reserved.pop(job.id, None)
                self.bind(n, job, plan)
                started.append(job)
        return started

    def wait_for(self, job):
        return self.interactive_wait if job.interactive else self.wait

    def give_up(self, job):
        """The prolog's wait ran out: True when the job was still waiting (it fails)."""
        if job not in self.waiting:
            return False
        self.waiting.remove(job)
        self.reserved.pop(job.id, None)
        self.release(job)
        return True

    def finish(self, job):
        super().finish(job)
        self.release(job)
        del self.running[job.id]

    def release(self, job):
        n, g, units = self.charged.pop(job.id)
        self.shards[n][g] -= units


ARRIVE, FINISH, BACK, GIVE_UP, RETURN = range(5)


def simulate(jobs, cluster, setup=0.0, seed=0, window=64):
    """Run the trace through `cluster`; returns (results dict, the simulated jobs)."""
    jobs = [j.fresh() for j in jobs]
    by_id = {j.id: j for j in jobs}
    latency = random.Random(f"latency-{seed}")
    events = [(j.arrival, ARRIVE, j.id) for j in jobs]
    heapq.heapify(events)
    queue, busy_slices, last_t, used = [], 0, 0.0, 0.0     # queue: job ids, in order

    def start(job, t):
        nonlocal busy_slices
        job.start, job.end = t, t + setup + job.duration
        busy_slices += job.slices
        heapq.heappush(events, (job.end, FINISH, job.id))

    while events:
        t, kind, jid = heapq.heappop(events)
        used += busy_slices * (t - last_t)
        last_t = t
        job = by_id[jid]
        cluster.now = t
        if kind == FINISH and job.end != t:
            continue                    # the job was requeued while it ran
        if kind == FINISH:
            cluster.finish(job)
            busy_slices -= job.slices
            for q in cluster.poll_waiting():
                start(q, t)
        elif kind == GIVE_UP:
            if cluster.give_up(job):
                job.fate = "failed"
        elif kind == RETURN:
            cluster.give_back(job, t)
        else:
            bisect.insort(queue, jid)
        for q, outcome in scan(cluster, [by_id[i] for i in queue[:window]]):
            queue.remove(q.id)
            if outcome == "started":
                start(q, t)
            elif outcome == "requeued":
                q.requeues += 1
                heapq.heappush(events, (t + cluster.requeue_delay(q, latency), BACK, q.id))
                due = cluster.schedule_return(q, t)
                if due is not None:
                    heapq.heappush(events, (due, RETURN, q.id))
            elif outcome == "waiting":
                heapq.heappush(events, (t + cluster.wait_for(q), GIVE_UP, q.id))
            else:
                q.fate = outcome
        for v in cluster.take_evicted():    # back in the queue as any requeued job, its run lost
            busy_slices -= v.slices
            v.start = v.end = None
            v.requeues += 1
            heapq.heappush(events, (t + REQUEUE_DELAY + latency.uniform(*LATENCY), BACK, v.id))
    return summarize(jobs, used, cluster.total_slices), jobs


def scan(cluster, pending):
    """One scheduling pass: (job, outcome) for each job that leaves the queue."""
    left, blocked = [], set()
    for q in pending:
        if cluster.blocking_key(q) in blocked:      # counters only fill up during a pass
            continue
        outcome = cluster.try_start(q)
        if outcome == "queued":
            blocked.add(cluster.blocking_key(q))
        else:
            left.append((q, outcome))
    return left


def summarize(jobs, used, total_slices):
    done = [j for j in jobs if j.end is not None]
    fates = Counter((j.fate, j.interactive) for j in jobs)
    valid = [j for j in jobs if j.fate not in ("refused", "never")]
    r = {"failed": fates["failed", False], "failed_interactive": fates["failed", True],
         "refused": fates["refused", False] + fates["refused", True],
         "never": fates["never", False] + fates["never", True],
         "requeues_mean": statistics.mean(j.requeues for j in valid) if valid else 0.0,
         "requeues_max": max((j.requeues for j in valid), default=0)}
    if not done:
        return {**r, "mean_wait_min": math.nan, "p95_wait_min": math.nan, "mean_jct_min": math.nan,
                "util": 0.0, "makespan_h": math.nan}
    makespan = max(j.end for j in done) - min(j.arrival for j in jobs)
    batch = [j.end - j.arrival for j in done if not j.interactive]
    inter = sorted(j.start - j.arrival for j in done if j.interactive)
    r.update(batch_jct_min=statistics.mean(batch) / 60 if batch else math.nan,
             interactive_total=sum(1 for j in valid if j.interactive),
             interactive_wait_mean_min=statistics.mean(inter) / 60 if inter else 0.0,
             interactive_wait_max_min=inter[-1] / 60 if inter else 0.0)
    waits = sorted(j.start - j.arrival for j in done)
    return {**r,
            "mean_wait_min": statistics.mean(waits) / 60,
            "p95_wait_min": waits[int(0.95 * (len(waits) - 1))] / 60,
            "mean_jct_min": statistics.mean(j.end - j.arrival for j in done) / 60,
            "util": used / (makespan * total_slices),
            "makespan_h": makespan / 3600}


def run_all(jobs, nodes, gpus, setup, seed, max_requeues=10, prolog_wait=30.0, weights=None,
            fallback=False, steer=True,
            interactive=((DEFAULTS.interactive_charge, DEFAULTS.interactive_charge_one_start,
                          DEFAULTS.interactive_wait),),
            baselines=True, reserve=True, steer_return=DEFAULTS.steer_return,
            guarantee_after=DEFAULTS.guarantee_after, evict_age=DEFAULTS.interactive_evict_age):
    """Every policy on one trace: name -> results. `weights`: candidate names
    for slurm:<weights> (default: all of WEIGHTS); fallback: each also with
    gpu_fallback; interactive: (interactive_charge, interactive_charge_one_start,
    interactive_wait) triples,
    each its own policy (named by them when there are several); baselines:
    also the static layouts and the product before issue 12 (exact admission
    always runs: the reference)."""
    results = {}
    if baselines:
        for name in STATIC_LAYOUTS:
            results[f"static:{name}"] = simulate(jobs, StaticCluster(nodes, [name] * gpus))[0]
        for name, layout in demand_mixes(jobs, gpus).items():
            results[f"static:{name}"] = simulate(jobs, StaticCluster(nodes, layout))[0]
        candidates = {k: v for k, v in results.items() if v["never"] == 0}
        if candidates:
            best = min(candidates, key=lambda k: candidates[k]["mean_jct_min"])
            results["static:best"] = {**candidates[best], "layout": best.split(":", 1)[1]}
    results["dynamic:most-room"] = simulate(jobs, ExactCluster(nodes, gpus), setup, seed)[0]
    if baselines:
        results["before:memory-slots"] = simulate(
            jobs, SlurmCluster(nodes, gpus, WEIGHTS["memory-slots"], 0, prolog_wait, reserve=False),
            setup, seed)[0]
    for name in weights or WEIGHTS:
        for fb in (False, True) if fallback else (False,):
            for charge, one_start, wait in interactive:
                label = (f" charge={charge:g} one_start={one_start:g} wait={wait:g}"
                         if len(interactive) > 1 else "")
                results[f"slurm:{name}{'+fallback' if fb else ''}{label}"] = simulate(
                    jobs, SlurmCluster(nodes, gpus, WEIGHTS[name], max_requeues, prolog_wait, fb, steer,
                                       charge, wait, reserve, steer_return, one_start, guarantee_after,
                                       evict_age),
                    setup, seed)[0]
    return results


def relative(results):
    """Mean JCT of each policy vs exact admission and vs the best static layout
    (+: longer), of every job and of batch jobs alone; NaN where there is no
    such reference."""
    exact = results["dynamic:most-room"]
    static = results.get("static:best", {}).get("mean_jct_min", math.nan)
    for r in results.values():
        r["vs_exact"] = r["mean_jct_min"] / exact["mean_jct_min"] - 1
        r["vs_static"] = r["mean_jct_min"] / static - 1
        r["jct_vs_exact"] = r.get("batch_jct_min", math.nan) / exact.get("batch_jct_min", math.nan) - 1
    return results


# ------------------------------------------------------------------ grid mode

GRID_COLUMNS = ("failed", "failed_interactive", "requeues_mean", "requeues_max", "mean_wait_min",
                "p95_wait_min", "mean_jct_min", "vs_exact", "vs_static", "jct_vs_exact")


def grid_cell(cell):
    """One trace, every policy: ((mix, load, seed, interactive share), results)."""
    workload, load, seed, share, a = cell
    jobs = synthetic(workload, a.jobs, a.nodes, a.gpus, load, a.median_min, seed, share, a.multi)
    interactive = interactive_settings(a)
    return (workload, load, seed, share), relative(run_all(
        jobs, a.nodes, a.gpus, a.setup, seed, a.max_requeues, a.prolog_wait, a.weights, a.fallback,
        not a.no_steer, interactive, baselines=not a.json, reserve=not a.no_reserve, steer_return=a.steer_return,
        guarantee_after=a.guarantee_after, evict_age=a.interactive_evict_age))


def interactive_settings(a):
    """(interactive_charge, interactive_charge_one_start, interactive_wait)
    triples the command line compares."""
    return [(c, o, w) for c in a.interactive_charge for o in a.interactive_charge_one_start
            for w in a.interactive_wait]


def grid_runs(a):
    """Every workload x load x seed x interactive share, in that order."""
    cells = [(w, load, seed, share, a) for w in a.workloads for load in a.loads for seed in a.seed_list
             for share in a.interactive]
    if a.procs > 1:
        import multiprocessing
        with multiprocessing.Pool(a.procs) as pool:
            return pool.map(grid_cell, cells)
    return [grid_cell(c) for c in cells]


def grid(runs):
    """Per (workload, load, share) and policy, the median over seeds of each
    column (ratios are taken per seed), and the worst seed's failures."""
    per = defaultdict(lambda: defaultdict(list))
    for (workload, load, _, share), results in runs:
        for name, r in results.items():
            if name in FIXED_ROWS or name.startswith("slurm:"):
                per[workload, load, share][name].append(r)
    return {key: {name: {**{c: statistics.median(r[c] for r in rs) for c in GRID_COLUMNS},
                         **{f"{c}_worst": max(r[c] for r in rs) for c in ("failed", "failed_interactive")}}
                  for name, rs in policies.items()} for key, policies in per.items()}


JSON_FIELDS = {"interactive_failed": "failed_interactive", "interactive_total": "interactive_total",
               "batch_failed": "failed", "jct_vs_exact": "jct_vs_exact", "batch_jct_min": "batch_jct_min",
               "requeues_mean": "requeues_mean", "requeues_max": "requeues_max",
               "interactive_wait_mean_min": "interactive_wait_mean_min",
               "interactive_wait_max_min": "interactive_wait_max_min"}


def print_json(runs, multi):
    """One JSON object per line: one cell (trace) and Slurm policy each."""
    import json
    for (workload, load, seed, share), results in runs:
        exact = results["dynamic:most-room"]["batch_jct_min"]
        for name, r in results.items():
            if name.startswith("slurm:"):
                print(json.dumps({"mix": workload, "load": load, "seed": seed, "interactive_share": share,
                                  "multi_share": multi,
                                  "policy": name, "exact_batch_jct_min": round(exact, 3),
                                  **{k: round(r[f], 5) if isinstance(r[f], float) else r[f]
                                     for k, f in JSON_FIELDS.items()}}))


def print_grid(table, a):
    print(f"{a.nodes} nodes x {a.gpus} H100-80GB, {a.jobs} jobs per trace, medians over seeds "
          f"{','.join(map(str, a.seed_list))} (failures: median, worst seed); max requeues "
          f"{a.max_requeues}; JCT vs: + is longer (batch: batch jobs alone)")
    print("| mix | load | inter. share | policy | failed batch | failed inter. | requeues mean | requeues max "
          "| wait min | p95 wait | JCT min | JCT vs exact | batch JCT vs exact | JCT vs best static |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (workload, load, share), policies in table.items():
        for name, r in policies.items():
            print(f"| {workload} | {load:g} | {share:g} | {name} | {r['failed']:g} ({r['failed_worst']:g}) "
                  f"| {r['failed_interactive']:g} ({r['failed_interactive_worst']:g}) "
                  f"| {r['requeues_mean']:.3f} | {r['requeues_max']:g} | {r['mean_wait_min']:.1f} "
                  f"| {r['p95_wait_min']:.1f} | {r['mean_jct_min']:.1f} | {r['vs_exact']:+.1%} "
                  f"| {r['jct_vs_exact']:+.1%} | {r['vs_static']:+.1%} |")
    for name in [n for n in next(iter(table.values())) if n.startswith("slurm:")]:
        rows = [p[name] for p in table.values()]
        print(f"SUMMARY {name}: failed batch worst {max(r['failed_worst'] for r in rows):g}, "
              f"failed interactive worst {max(r['failed_interactive_worst'] for r in rows):g}, "
              f"JCT vs exact worst {max(r['vs_exact'] for r in rows):+.1%} "
              f"(batch {max(r['jct_vs_exact'] for r in rows):+.1%}), "
              f"vs best static worst {max(r['vs_static'] for r in rows):+.1%}")


# ---------------------------------------------------------------- single run

def plot(results, title, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shown = {k: r for k, r in results.items()
             if r["never"] == 0 and not math.isnan(r["mean_jct_min"]) and k != "static:best"}
    names = [k.replace("xall-", "x").replace(".10gb", "").replace(".20gb", "").replace(".40gb", "")
             .replace(".80gb", "") + (f" ({failed} failed)" if failed else "")
             for k, failed in ((k, r["failed"] + r["failed_interactive"]) for k, r in shown.items())]
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


def print_run(results):
    print(f"{'policy':<48} {'wait min':>8} {'p95 wait':>8} {'JCT min':>8} {'util':>6} {'never':>5} "
          f"{'failed':>6} {'f.inter':>7} {'requeues':>8} {'rq max':>6}")
    for name, r in results.items():
        label = f"{name} ({r['layout']})" if "layout" in r else name
        print(f"{label:<48} {r['mean_wait_min']:8.1f} {r['p95_wait_min']:8.1f} {r['mean_jct_min']:8.1f} "
              f"{r['util']:6.1%} {r['never']:5d} {r['failed']:6d} {r['failed_interactive']:7d} "
              f"{r['requeues_mean']:8.3f} {r['requeues_max']:6d}")
    if "static:best" in results:
        gains = ", ".join(f"{k} {r['vs_static']:+.1%}" for k, r in results.items()
                          if not k.startswith("static"))
        print(f"SUMMARY cluster: mean JCT vs static:best (+: longer): {gains}")


def weights_report():
    for name, w in WEIGHTS.items():
        given = shards.given_up(geometry_of(w.names), w)
        print(f"weights {name}: C={w.count} {w.by_name}; admits {w.admitted_placeable}/{w.placeable} "
              f"placeable sets and {w.admitted_unplaceable} unplaceable; gives up {len(given)} "
              f"(minimal): {'; '.join(given) or '-'}")


def floats(text):
    return [float(x) for x in text.split(",")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--workload", choices=sorted(MIXES), default="mixed")
    ap.add_argument("--trace", help="CSV trace: arrival_s,profile,count,duration_s[,interactive]")
    ap.add_argument("--load", type=float, default=0.9, help="offered load, share of compute slices")
    ap.add_argument("--median-min", type=float, default=30.0)
    ap.add_argument("--setup", type=float, default=2.0, help="seconds to create a job's instances")
    ap.add_argument("--interactive", type=floats, default=[0.0],
                    help="share of srun/salloc jobs; --grid: a comma-separated list, each its own cells")
    ap.add_argument("--multi", type=float, default=0.0,
                    help="share of jobs asking for two profiles on one GPU (synthetic workloads)")
    ap.add_argument("--interactive-charge", type=floats, default=[DEFAULTS.interactive_charge],
                    help="how far up to the guarantee job_submit.lua charges an interactive job (0..1, "
                         "core/guarantee.py); a comma-separated list compares them")
    ap.add_argument("--interactive-charge-one-start", type=floats,
                    default=[DEFAULTS.interactive_charge_one_start],
                    help="the same for a request with a profile of one legal start, 4g.40gb "
                         "(interactive_charge_one_start); a list compares them")
    ap.add_argument("--interactive-wait", type=floats, default=[DEFAULTS.interactive_wait],
                    help="seconds an interactive job's Prolog waits for room (interactive_wait); a list "
                         "compares them")
    ap.add_argument("--max-requeues", type=int, default=100)
    ap.add_argument("--prolog-wait", type=float, default=30.0,
                    help="how long the prolog waits for room when it cannot requeue (wait_for_room)")
    ap.add_argument("--weights", type=lambda s: s.split(","), default=None,
                    help=f"shard weight candidates, comma-separated (default all: {','.join(WEIGHTS)})")
    ap.add_argument("--fallback", action="store_true",
                    help="also each slurm:<weights> with gpu_fallback = true")
    ap.add_argument("--no-steer", action="store_true",
                    help="requeued jobs are not kept off the node that sent them back (as before "
                         "steering): Slurm's own delay every time")
    ap.add_argument("--guarantee-after", type=int, default=DEFAULTS.guarantee_after,
                    help="requeues after which a batch job is charged the guarantee (guarantee_after; 0: never)")
    ap.add_argument("--interactive-evict-age", type=float, default=DEFAULTS.interactive_evict_age,
                    help="an interactive job whose GPU has no start for it requeues batch jobs there that "
                         "started at most this many seconds ago (interactive_evict_age; 0: never)")
    ap.add_argument("--steer-return", type=float, default=DEFAULTS.steer_return,
                    help="seconds after its Epilog that a steered job's node is given back if it still pends "
                         "(steer_return; 0: only once every node turned it away, as before)")
    ap.add_argument("--no-reserve", action="store_true",
                    help="a Prolog waiting for room holds nothing (before issue 22): jobs arriving "
                         "meanwhile may take the room it waits for")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--grid", action="store_true", help="every --workloads x --loads x --seeds")
    ap.add_argument("--workloads", type=lambda s: s.split(","), default=["mixed", "small", "large"])
    ap.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.6, 0.75, 0.9])
    ap.add_argument("--seeds", type=int, default=3, help="--grid: seeds 1..N")
    ap.add_argument("--seed-list", type=lambda v: [int(x) for x in v.split(",")],
                    help="--grid: these seeds (e.g. 7,8) instead of 1..--seeds")
    ap.add_argument("--json", action="store_true",
                    help="--grid: one JSON object per line, per trace and Slurm policy (mix, load, seed, "
                         "interactive_share, policy, interactive_failed, interactive_total, batch_failed, "
                         "jct_vs_exact: batch mean JCT vs exact admission's, a fraction, ...); no static "
                         "layouts")
    ap.add_argument("--procs", type=int, default=1, help="--grid: processes")
    ap.add_argument("--plot", metavar="FILE.png", help="also draw mean JCT and p95 wait per policy "
                    "(needs matplotlib: pip install '.[bench]')")
    a = ap.parse_args()
    unknown = set(a.weights or ()) - set(WEIGHTS)
    if unknown:
        ap.error(f"unknown weights {sorted(unknown)}; known: {', '.join(WEIGHTS)}")
    a.seed_list = a.seed_list or list(range(1, a.seeds + 1))
    if a.grid:
        runs = grid_runs(a)
        if a.json:
            print_json(runs, a.multi)
        else:
            weights_report()
            print_grid(grid(runs), a)
        return
    weights_report()
    if len(a.interactive) > 1:
        ap.error("one --interactive share for a single run")
    jobs = read_trace(a.trace) if a.trace else synthetic(
        a.workload, a.jobs, a.nodes, a.gpus, a.load, a.median_min, a.seed, a.interactive[0], a.multi)
    source = a.trace or f"{a.workload} mix, {a.jobs} jobs, load {a.load}, seed {a.seed}"
    print(f"{a.nodes} nodes x {a.gpus} H100-80GB; {source}")
    results = relative(run_all(jobs, a.nodes, a.gpus, a.setup, a.seed, a.max_requeues, a.prolog_wait,
                               a.weights, a.fallback, not a.no_steer,
                               interactive_settings(a),
                               reserve=not a.no_reserve, steer_return=a.steer_return,
                               guarantee_after=a.guarantee_after, evict_age=a.interactive_evict_age))
    print_run(results)
    if a.plot:
        plot(results, f"{a.nodes}x{a.gpus} H100-80GB, {source}", a.plot)


if __name__ == "__main__":
    main()
