"""What a MIG job's Prolog costs the controller as the queue grows, on real Slurm.

For each Slurm version asked for (22.05 on the host, 24.11 in its chroot;
tests/harness), a one-node cluster with simulated 8xH100-80GB runs one MIG
job; the queue is then filled with held jobs (parallel `sbatch --hold`: an
unsplit --array would be one record) up to each size in --sizes. At each
size, interleaved, it measures:

- the Prolog's one-job read (`squeue -h -j ID -O ...`, slurm/jobinfo.py) and,
  for comparison, the JSON read earlier versions made (`squeue --json`, which
  22.05 answers with every job of the queue): bytes and wall time;
- the installed Prolog and Epilog of that job (real read, simulated NVML on a
  node of their own): wall time;

and, at the largest size, a burst: --burst MIG jobs submitted held, released
together so that their Prologs run at once, counted by final state.

Prints a table per version and one SUMMARY line per version for comparing runs.
Usage: python bench/slurm_queue.py [--versions 22.05,24.11] [--sizes 0,2000,10000]
       [--runs 7] [--burst 32]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from harness import slurms  # noqa: E402  (the test harness, never installed)
from harness.devcluster import DevCluster  # noqa: E402
from slurm_mig.slurm.jobinfo import job_query  # noqa: E402


def fill(c: DevCluster, target: int, workers: int = 8) -> float:
    """Held jobs until the queue holds `target` of them; seconds it took."""
    have = int(c.run("sh", "-c", "squeue -h -t PD -o %i | wc -l").stdout.strip() or 0)
    started = time.monotonic()
    argv = ["sbatch", "--hold", "-J", "fill", "-o", "/dev/null", "--wrap", "true"]

    def one(_):
        return c.run(*argv, check=False, timeout=300).returncode
    with ThreadPoolExecutor(workers) as pool:
        failed = sum(1 for rc in pool.map(one, range(max(0, target - have))) if rc)
    if failed:
        print(f"  ({failed} sbatch calls failed)", file=sys.stderr)
    return time.monotonic() - started


def read_cost(c: DevCluster, argv) -> tuple:
    t = time.perf_counter()
    out = c.run(*argv, timeout=120).stdout
    return len(out.encode()), time.perf_counter() - t


def hook_cost(c: DevCluster, job: str, gpu: str, node_env: dict) -> tuple:
    """(prolog s, epilog s) of the installed scripts for `job` on a bench node."""
    env = {**node_env, "SLURM_JOB_ID": job, "SLURM_JOB_GPUS": gpu, "SLURMD_NODENAME": c.node}
    times = []
    for script in ("prolog/slurm-mig-prolog", "epilog/slurm-mig-epilog"):
        t = time.perf_counter()
        p = subprocess.run(["chroot", c.root, "env", *(f"{k}={v}" for k, v in env.items()),
                            c.installed.hook_script(script)], capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            sys.exit(f"{script} failed: {p.stderr}")
    return tuple(times)


def burst(c: DevCluster, n: int) -> dict:
    """n MIG jobs whose Prologs run together; a busy controller may take
    minutes to accept a submission (the 10,000 held jobs are scheduled too)."""
    script = os.path.join(c.dir, "jobs", "burst.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nsleep 2\n")
    os.chmod(script, 0o755)
    jobs = [c.run("sbatch", "--parsable", "--hold", "--gres=mig:1g.10gb:1", "-o", f"{c.dir}/jobs/%j.out", script,
                  timeout=900).stdout.strip() for _ in range(n)]
    t = time.monotonic()
    c.run("scontrol", "release", ",".join(jobs), timeout=900)
    states = [c.wait_job(j, timeout=900) for j in jobs]
    return {"seconds": time.monotonic() - t,
            **{s: states.count(s) for s in sorted(set(states))}}


def bench(version: str, sizes, runs: int, burst_jobs: int) -> str:
    slurm = slurms.get(version)
    rows = []
    with DevCluster("8xH100-80GB", cpus=64, wait_for_room=60, slurm=slurm) as c:
        c.run("scontrol", "update", "PartitionName=debug", "MaxTime=UNLIMITED", check=False)
        job = c.sbatch("--gres=mig:1g.10gb:1", script="sleep 3600")
        deadline = time.monotonic() + 60
        while c.job_state(job) != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.3)
        gpu = "0"          # SLURM_JOB_GPUS for the hooks: a GPU of their own node
        # The hooks' own node: real Slurm reads, simulated GPUs nobody else uses.
        node = tempfile.mkdtemp(prefix="bench-node-", dir=c.dir)
        c.slurm_mig("sim", "init", f"{node}/gpus.json", "--gpus", "8xH100-80GB")
        node_env = {"SLURM_MIG_CONFIG": f"{node}/none.toml", "SLURM_MIG_BACKEND": f"sim:{node}/gpus.json",
                    "SLURM_MIG_STATE_DIR": f"{node}/state", "SLURM_MIG_RUN_DIR": f"{node}/run",
                    "SLURM_CONF": c.conf}
        with open(f"{node}/none.toml", "w") as f:
            f.write(f'slurm_bin_dir = "{c.dir}/slurm-bin"\nwait_for_room = 0\n')
        for size in sizes:
            took = fill(c, size)
            new, old, prolog, epilog = [], [], [], []
            for _ in range(runs):
                new.append(read_cost(c, ["squeue"] + job_query(job)))
                old.append(read_cost(c, ["squeue", "--json"]))
                p, e = hook_cost(c, job, gpu, node_env)
                prolog.append(p)
                epilog.append(e)
            row = dict(size=size, fill_s=took, new_bytes=new[0][0], new_ms=statistics.median(t for _, t in new) * 1000,
                       old_bytes=old[0][0], old_ms=statistics.median(t for _, t in old) * 1000,
                       prolog_ms=statistics.median(prolog) * 1000, epilog_ms=statistics.median(epilog) * 1000)
            rows.append(row)
            print(f"  {version} {size:>6} pending: one-job read {row['new_bytes']} B {row['new_ms']:.0f} ms; "
                  f"JSON list {row['old_bytes']} B {row['old_ms']:.0f} ms; prolog {row['prolog_ms']:.0f} ms, "
                  f"epilog {row['epilog_ms']:.0f} ms (filled in {took:.0f} s)", flush=True)
        result = burst(c, burst_jobs) if burst_jobs else {}
    print(f"\nSlurm {slurm.release}, runs={runs}: medians")
    print(f"{'pending':>8} {'read B':>7} {'read ms':>8} {'JSON B':>10} {'JSON ms':>8} {'prolog ms':>10} {'epilog ms':>10}")
    for r in rows:
        print(f"{r['size']:>8} {r['new_bytes']:>7} {r['new_ms']:>8.1f} {r['old_bytes']:>10} {r['old_ms']:>8.1f} "
              f"{r['prolog_ms']:>10.1f} {r['epilog_ms']:>10.1f}")
    if result:
        print(f"burst of {burst_jobs} MIG jobs released together at {sizes[-1]} pending: {result}")
    first, last = rows[0], rows[-1]
    return (f"SUMMARY slurm_queue {version}: read {first['new_bytes']}->{last['new_bytes']} B "
            f"(JSON {first['old_bytes']}->{last['old_bytes']} B) prolog {last['prolog_ms'] / first['prolog_ms']:.2f}x "
            f"at {last['size']} vs {first['size']} pending; burst {result}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", default="22.05,24.11")
    ap.add_argument("--sizes", default="0,2000,10000")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--burst", type=int, default=32)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    summaries = [bench(v, sizes, args.runs, args.burst) for v in args.versions.split(",")]
    print("\n" + "\n".join(summaries))


if __name__ == "__main__":
    main()
