"""What the stuck-GPU hold (hooks/stuckgpu.py) saves, on real Slurm.

The 44-job mix of tests/test_admission_e2e.py (2 nodes x 2 simulated
H100s, whole-GPU jobs among MIG jobs, a busy 1g.10gb no job owns stuck on
GPU 0 of the first node), run --runs times with `hold_stuck_gpus` on and
off, alternating. Per run: jobs completed, requeues in all (Slurm's
Restarts), requeues whose reason was the stuck instance (the mark each
requeue sets, from the hooks' Slurm calls), holds submitted, and seconds
from the first submission until a hold ran on GPU 0 of the stuck node.
The other requeues are the mix's own: MIG jobs whose GPU's free slots are
split, and (22.05) whole-GPU jobs handed a GPU whose shards are allocated.

Prints one line per run and one SUMMARY line (medians) per setting.
Usage: python bench/stuck_gpu.py [--version 22.05] [--runs 3]
"""
import argparse
import os
import re
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from harness import slurms  # noqa: E402  (the test harness, never installed)
from harness.devcluster import DevCluster  # noqa: E402
from test_admission_e2e import MIX, job_field, make_busy_orphan  # noqa: E402

DONE = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


def held_on_gpu0(c: DevCluster) -> bool:
    out = c.run("squeue", "-h", "-u", "root", "-t", "running", "-o", "%i %j").stdout
    for line in out.splitlines():
        job, name = line.split()
        if name == f"slurm-mig-stuck-{c.nodes[0]}-gpu0":
            detail = c.run("scontrol", "show", "job", "-d", job, check=False).stdout
            return "(IDX:0)" in detail
    return False


def one_run(slurm, hold: bool) -> dict:
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, nodes=2, cpus=8) as c:
        c.set_config(hold_stuck_gpus=hold)
        make_busy_orphan(c, c.node_dir("gpus.json", node=c.nodes[0]))
        start = time.monotonic()
        jobs = [c.sbatch(f"--gres={'gpu:1' if i % 5 in (1, 3) else MIX[i % len(MIX)]}",
                         script=f"sleep {1 + i % 3}") for i in range(44)]
        held_after = None
        while True:
            states = [c.job_state(j) for j in jobs]
            if held_after is None and held_on_gpu0(c):
                held_after = time.monotonic() - start
            if all(s in DONE for s in states):
                break
            time.sleep(0.5)
        with open(c.slurm_calls, encoding="utf-8") as f:
            calls = f.read().splitlines()
        marks = [x for x in calls if " AdminComment=slurm-mig: requeued" in x]
        return dict(completed=states.count("COMPLETED"),
                    requeues=sum(int(job_field(c, j, "Restarts")) for j in jobs),
                    stuck=sum(1 for x in marks if "which no job owns" in x),
                    holds=sum(1 for x in calls if re.match(r"\d+ sbatch ", x)),
                    held_after=held_after)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="22.05")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    slurm = slurms.get(args.version)
    results = {True: [], False: []}
    for i in range(args.runs):
        for hold in (True, False):
            r = one_run(slurm, hold)
            results[hold].append(r)
            when = "-" if r["held_after"] is None else f"{r['held_after']:.0f} s"
            print(f"run {i + 1} hold_stuck_gpus={str(hold).lower():5}: {r['completed']}/44 completed, "
                  f"{r['requeues']} requeues, {r['stuck']} for the stuck instance, {r['holds']} holds, "
                  f"GPU 0 held after {when}", flush=True)
    for hold, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("requeues", "stuck", "holds")}
        print(f"SUMMARY {args.version} hold_stuck_gpus={str(hold).lower()}: runs {len(runs)}, "
              f"median requeues {med['requeues']:g} (stuck instance {med['stuck']:g}), "
              f"holds {med['holds']:g}, failed {sum(44 - r['completed'] for r in runs)}")


if __name__ == "__main__":
    main()
