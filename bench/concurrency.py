"""56 prologs at once on a simulated 8xH100-80GB node, as separate processes
(the hook scripts Slurm runs): time until every job is bound, then 56 epilogs
at once, and a leak check (no instance, no live record left).
Usage: python bench/concurrency.py [--jobs 56] [--gpus 8] [--repeat 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def burst(script, env, jobs):
    t = time.perf_counter()
    procs = [subprocess.Popen([script], env={**env, "SLURM_JOB_ID": str(j)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for j in jobs]
    failed = [p.stderr.read().decode() for p in procs if p.wait() != 0]
    if failed:
        sys.exit(f"{script} failed: {failed[0]}")
    return time.perf_counter() - t


def once(n_jobs, gpus):
    tmp = tempfile.mkdtemp(prefix="slurm-mig-conc-")
    state = os.path.join(tmp, "node.json")
    env = {**os.environ, "SLURM_MIG_BACKEND": f"sim:{state}", "SLURM_MIG_STATE_DIR": f"{tmp}/state",
           "SLURM_MIG_RUN_DIR": f"{tmp}/run", "SLURM_MIG_CONFIG": f"{tmp}/c.toml",
           "SLURM_MIG_HOOK": os.path.join(os.path.dirname(sys.executable), "slurm-mig-hook"),
           "SLURM_MIG_REQUEST": "mig:1g.10gb:1"}
    with open(env["SLURM_MIG_CONFIG"], "w") as f:
        f.write("wait_for_room = 0\n")
    cli = [sys.executable, "-m", "slurm_mig"]
    subprocess.run(cli + ["sim", "init", state, "--gpus", f"{gpus}xH100-80GB"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    jobs = range(1, n_jobs + 1)
    t_bind = burst(os.path.join(REPO, "prolog", "slurm-mig-prolog"), env, jobs)
    bound = sum(1 for j in jobs if os.path.exists(f"{tmp}/run/{j}.env"))
    t_release = burst(os.path.join(REPO, "epilog", "slurm-mig-epilog"), env, jobs)
    doc = json.loads(subprocess.run(cli + ["status", "--json"], env=env, check=True,
                                    capture_output=True, text=True).stdout)
    leaked = sum(len(g["instances"]) for g in doc["gpus"])
    live = [n for n in os.listdir(f"{tmp}/state/jobs")
            if json.load(open(f"{tmp}/state/jobs/{n}"))["state"] in ("planned", "created", "bound", "releasing")]
    return t_bind, t_release, bound, leaked, len(live)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=56)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    runs = [once(args.jobs, args.gpus) for _ in range(args.repeat)]
    bind = statistics.median(r[0] for r in runs)
    release = statistics.median(r[1] for r in runs)
    print(f"{args.jobs} prologs at once on {args.gpus}xH100-80GB (mig:1g.10gb:1 each), {args.repeat} runs:")
    print(f"  all bound after   {bind:.2f} s median ({', '.join(f'{r[0]:.2f}' for r in runs)})")
    print(f"  all released after {release:.2f} s median ({', '.join(f'{r[1]:.2f}' for r in runs)})")
    print(f"  bound {runs[-1][2]}/{args.jobs}; leaked instances {sum(r[3] for r in runs)}; "
          f"live records left {sum(r[4] for r in runs)}")
    print(f"SUMMARY concurrency: {args.jobs} prologs bound in {bind:.2f}s, released in {release:.2f}s, "
          f"leaks={sum(r[3] + r[4] for r in runs)}")


if __name__ == "__main__":
    main()
