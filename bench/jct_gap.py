"""Where admission through Slurm loses batch JCT against exact admission, on
one trace of bench/cluster_sim.py.

For each variant of the Slurm model it prints batch mean JCT against exact
admission, requeues (and how many took Slurm's own delay because every node
had turned the job away), Prolog waits (srun/salloc jobs whose GPU had no
start for them: they wait for room holding their shards), the seconds requeues cost, per profile the mean
wait (start - arrival) of exact admission and of the variant, and how often a
job was left pending while some node could place it: there, the planner
finds a place on a node the job is kept off (ExcNodeList), or only on nodes
where Slurm's count has no room for it.

Variants (each changes one thing of `slurm:conservative56` with the shipped
defaults):
  shipped          the product's defaults (steer_return included)
  keep-off         steer_return = 0: kept off a node until every node turned it away
  no-delay         requeues cost nothing (no Epilog, no wake-up, no Slurm delay)
  exact-gpu        Slurm's count still admits, but its GPU choice is one the
                   planner places on (not real: how much the lowest-index pick costs)
  no-count         no shard count: first node and GPU the planner places on
                   (not real: how much the count itself costs)
  requeue-srun     srun/salloc jobs charged batch units and sent back to the queue
                   like batch jobs (not real: Slurm requeues batch jobs only; how much
                   serving interactive jobs in their Prolog costs the batch jobs)
  batch-units      srun/salloc jobs charged their batch units (interactive_charge
                   and interactive_charge_one_start 0): they wait in their Prolog
                   where the GPU Slurm picked has no start for them
  evict-young      batch-units, and interactive_evict_age = EVICT_AGE: an srun/salloc
                   job whose GPU has no start for it requeues the batch jobs on that
                   GPU that started at most that long ago, youngest first, none not
                   needed (core/eviction.py); each goes back to the queue with
                   Slurm's delay, its run lost

Usage: python bench/jct_gap.py --workload small --load 0.9 --seed 1 [--interactive 0.3]
"""
import argparse
import contextlib
import pathlib
import statistics
import sys
from collections import Counter

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import cluster_sim as cs  # noqa: E402  (bench/cluster_sim.py)


class Traced(cs.SlurmCluster):
    """The Slurm model, counting what becomes of each try."""
    delay_free = exact_gpu = countless = requeue_srun = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = Counter()

    def room_anywhere(self, job):
        """'kept off' / 'count' when the planner could place the job on some
        node now but Slurm's model did not start it, else None."""
        nodes = [n for n in range(len(self.slots)) if self.plan(n, job) is not None]
        if not nodes:
            return None
        kept = self.kept_off.get(job.id, ())
        return "kept off" if all(n in kept for n in nodes) else "count"

    def slurm_gpu(self, units, kept_off=()):
        if not (self.exact_gpu or self.countless):
            return super().slurm_gpu(units, kept_off)
        for n, used in enumerate(self.shards):
            if n not in kept_off:
                for g, u in enumerate(used):
                    if (self.countless or u + units <= self.count) and self.plan(n, self.trying, g):
                        return n, g
        return None if self.countless else super().slurm_gpu(units, kept_off)

    @contextlib.contextmanager
    def as_batch(self, job):
        """requeue-srun: the job is charged and sent back as a batch job while inside."""
        interactive, job.interactive = job.interactive, job.interactive and not self.requeue_srun
        try:
            yield
        finally:
            job.interactive = interactive

    def try_start(self, job):
        self.trying = job
        with self.as_batch(job):
            outcome = super().try_start(job)
        self.seen[outcome] += 1
        if outcome == "requeued" and job.id not in self.kept_off:
            self.seen[SLURM_DELAY] += 1
        if outcome == "queued":
            why = self.room_anywhere(job)
            if why:
                self.seen[f"pending with room ({why}) {job.profile}"] += 1
        return outcome

    def evict(self, victims):
        super().evict(victims)
        self.seen["evicted"] += len(victims)
        self.seen["evicted run seconds"] += sum(self.now - v.start for v in victims)

    def requeue_delay(self, job, rng):
        delay = 0.0 if self.delay_free else super().requeue_delay(job, rng)
        self.seen["requeue seconds"] += delay
        return delay


SLURM_DELAY = "requeued, Slurm's delay"
BATCH_UNITS = {"interactive_charge": 0.0, "interactive_charge_one_start": 0.0}
EVICT_AGE = 300.0       # s: evict-young requeues batch jobs that started at most this long ago
VARIANTS = {"shipped": {}, "keep-off": {"steer_return": 0.0}, "no-delay": {"delay_free": True},
            "exact-gpu": {"exact_gpu": True}, "no-count": {"countless": True},
            "requeue-srun": {"requeue_srun": True}, "batch-units": BATCH_UNITS,
            "evict-young": {**BATCH_UNITS, "interactive_evict_age": EVICT_AGE}}


def waits(jobs, profile):
    w = [j.start - j.arrival for j in jobs if j.profile == profile and not j.interactive and j.end is not None]
    return statistics.mean(w) / 60 if w else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=sorted(cs.MIXES), default="small")
    ap.add_argument("--load", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--interactive", type=float, default=0.0)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    a = ap.parse_args()
    jobs = cs.synthetic(a.workload, a.jobs, 4, 8, a.load, 30.0, a.seed, a.interactive)
    exact, exact_jobs = cs.simulate(jobs, cs.ExactCluster(4, 8), 2.0, a.seed)
    profiles = list(cs.MIXES[a.workload])
    summary = []
    print(f"{a.workload} mix, load {a.load}, seed {a.seed}, interactive {a.interactive}: exact admission's "
          f"batch waits (min) " + ", ".join(f"{p} {waits(exact_jobs, p):.2f}" for p in profiles))
    for name in a.variants:
        settings = dict(VARIANTS[name])
        cluster = Traced(4, 8, cs.WEIGHTS["conservative56"], 100, 30.0, False, True,
                         cs.DEFAULTS.interactive_charge, cs.DEFAULTS.interactive_wait, True,
                         settings.pop("steer_return", cs.DEFAULTS.steer_return),
                         cs.DEFAULTS.interactive_charge_one_start, cs.DEFAULTS.guarantee_after)
        for key, value in settings.items():
            setattr(cluster, key, value)
        r, done = cs.simulate(jobs, cluster, 2.0, a.seed)
        seen = cluster.seen
        summary.append(f"{name} {r['batch_jct_min'] / exact['batch_jct_min'] - 1:+.1%}")
        pending = ", ".join(f"{k[len('pending with room '):]} {v}" for k, v in sorted(seen.items())
                            if k.startswith("pending with room")) or "-"
        print(f"{name}: batch JCT vs exact {r['batch_jct_min'] / exact['batch_jct_min'] - 1:+.1%}, failed "
              f"{r['failed']}+{r['failed_interactive']}, requeues {seen['requeued']} (Slurm's delay "
              f"{seen[SLURM_DELAY]}), Prolog waits {seen['waiting']}, requeue cost "
              f"{seen['requeue seconds'] / 60:.0f} min in all, evicted {seen['evicted']} (their runs lost: "
              f"{seen['evicted run seconds'] / 60:.0f} min); waits (min) "
              + ", ".join(f"{p} {waits(done, p):.2f}" for p in profiles)
              + f"; pending with room (tries): {pending}")
    print(f"SUMMARY jct_gap {a.workload} load {a.load} seed {a.seed} interactive {a.interactive}: batch JCT vs "
          f"exact {', '.join(summary)}")


if __name__ == "__main__":
    main()
