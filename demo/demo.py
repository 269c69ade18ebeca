"""The slurm-mig demo: a real one-node Slurm (slurmctld + slurmd + munge)
whose 2xH100-80GB are simulated, serving MIG jobs submitted with --gres=mig:...

Run as root with `bash run.sh demo` (it installs what it needs).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from harness.devcluster import ClusterError, DevCluster  # noqa: E402  (the test harness, never installed)


def say(text=""):
    print(text, flush=True)


def step(title):
    say()
    say(f"=== {title}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", default="2xH100-80GB", help="simulated GPUs, e.g. 2xH100-80GB")
    ap.add_argument("--keep", action="store_true", help="keep the cluster directory afterwards")
    args = ap.parse_args()
    step(f"Starting a one-node Slurm with simulated GPUs {args.gpus}")
    with DevCluster(args.gpus, wait_for_room=5, keep=args.keep) as c:
        say(f"cluster directory: {c.dir}  (SLURM_CONF={c.conf})")
        say(f"slurm-mig: this checkout's wheel, installed in {c.installed.prefix} "
            f"(slurmd runs {c.installed.hook_script('prolog/slurm-mig-prolog')})")
        say(f"node {c.node}: {c.node_state()}")
        with open(c.generated("slurm.conf.node")) as f:
            say("generated node line: " + next(l for l in f if l.startswith("NodeName=")).strip())

        step("Submitting three jobs that run at the same time (each starts before the next is sent)")
        script = "echo \"$(hostname): job $SLURM_JOB_ID sees CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"; sleep 10"
        jobs = {}
        for gres in ("mig:3g.40gb:1", "mig:1g.10gb:2", "mig:2g.20gb:1"):
            job = c.sbatch(f"--gres={gres}", script=script)
            jobs[job] = gres
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and c.job_state(job) not in ("RUNNING", "COMPLETED", "FAILED"):
                time.sleep(0.3)
            say(f"sbatch --gres={gres}  ->  job {job} {c.job_state(job)}")

        step("slurm-mig status while they run")
        say(c.slurm_mig("status").stdout.rstrip())

        step("Job output")
        for job, gres in jobs.items():
            state = c.wait_job(job)
            say(f"job {job} ({gres}) {state}: {c.output(job).strip()}")

        step("A job with two profiles and an srun step")
        job = c.sbatch("--gres=mig:3g.40gb:1,mig:1g.10gb:1", script="\n".join([
            "echo \"batch: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"",
            "srun -n1 sh -c 'echo \"srun step: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"'"]))
        say(f"job {job} {c.wait_job(job)}:")
        say(c.output(job).rstrip())

        step("Requests no GPU can hold are refused by sbatch, naming the limit")
        for gres in ("mig:1g.10gb:8", "mig:7g.80gb:1,mig:1g.10gb:1"):
            try:
                c.sbatch(f"--gres={gres}", script="echo should not run")
                say("unexpectedly accepted")
                return 1
            except ClusterError as e:
                say(f"--gres={gres}: {e.args[0].splitlines()[0]}")

        step("A whole-GPU job (--gres=gpu:1): MIG off for the job, back on afterwards")
        job = c.sbatch("--gres=gpu:1", script="echo \"whole GPU: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"")
        say(f"job {job} {c.wait_job(job)}: {c.output(job).strip()}")

        step("An unknown profile is refused at submission")
        try:
            c.sbatch("--gres=mig:5g.50gb:1", script="true")
            say("unexpectedly accepted")
            return 1
        except ClusterError as e:
            say(str(e))

        step("Layout after all jobs ended")
        say(c.slurm_mig("status").stdout.rstrip())
    say()
    say("Demo finished; the cluster was torn down.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
