"""Hook latency on the simulated backend, whole processes as slurmd runs them.

What is timed is what an admin installs: this checkout's wheel in a venv of
the host's /usr/bin/python3 (tests/harness/install.py), its installed hook
scripts finding their slurm-mig-hook on their own. Measures, in one run and
interleaved: a bare `python -c pass` of that venv (the floor), and
the scripts Slurm's Prolog=, TaskProlog= and Epilog= point at (prolog: plan,
create, bind; the request comes from SLURM_MIG_REQUEST, standing in for the
one-job squeue read, which is not timed here: bench/slurm_queue.py times it
against real Slurm), plus the `slurm-mig task-prolog`
verb, on a simulated 8xH100-80GB node where other jobs already hold instances
(state_dir on disk; run_dir and the simulated GPUs on tmpfs, as /run and the
driver's /proc are on a node);
the Prolog and Epilog as slurmd runs them, through the node's hook server
(hooks/server.py; the first hook of the run starts it), and each alone
(SLURM_MIG_HOOK set: the script execs the hook, as without a server);
the same Prolog and Epilog as slurmd runs them for a GPU job (SLURM_JOB_GPUS set), each
leaving the detached free-slice publisher (slurm/room.py) behind,
and the Prolog and Epilog of a job without GPUs (dynamic mode: slurmd sets no
SLURM_JOB_GPUS, so the Prolog returns before asking Slurm), the cost every
CPU-only job pays on a node running slurm-mig.
Prints medians, p95s and ratios to the bare interpreter, then a one-line
summary for comparing runs. Usage: python bench/hooks.py [--runs 40]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY = "/dev/shm"      # a tmpfs, as /run and /proc are on a node


def timed(argv, env):
    t = time.perf_counter()
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed: {(p.stdout + p.stderr).decode()}")
    return elapsed


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def node_env(cli, closed_records: int) -> dict:
    """A simulated 8xH100-80GB node of its own, where 8 other jobs hold
    instances on every GPU and `closed_records` jobs ran before. Laid out as on
    a node: state_dir on disk (/var/lib there), run_dir and the simulated
    GPUs (the driver's state and /proc files there) in memory (tmpfs)."""
    tmp = tempfile.mkdtemp(prefix="slurm-mig-bench-")
    memory = tempfile.mkdtemp(prefix="slurm-mig-bench-", dir=MEMORY)
    state = os.path.join(memory, "node.json")
    env = {**os.environ, "SLURM_MIG_BACKEND": f"sim:{state}", "SLURM_MIG_STATE_DIR": f"{tmp}/state",
           "SLURM_MIG_RUN_DIR": f"{memory}/run", "SLURM_MIG_CONFIG": f"{tmp}/none.toml"}
    with open(env["SLURM_MIG_CONFIG"], "w") as f:
        f.write("wait_for_room = 0\n")
    subprocess.run(cli + ["sim", "init", state, "--gpus", "8xH100-80GB"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    for j, spec in enumerate(["mig:3g.40gb:1", "mig:2g.20gb:1,mig:1g.10gb:1"] * 4, start=1000):
        subprocess.run(cli + ["prolog", "--job", str(j), "--request", spec], env=env, check=True)
    if closed_records:
        subprocess.run(cli + ["prolog", "--job", "999999", "--request", "mig:1g.10gb:1"], env=env, check=True)
        subprocess.run(cli + ["epilog", "--job", "999999"], env=env, check=True)
        closed = os.path.join(tmp, "state", "jobs", "closed")
        with open(os.path.join(closed, "999999.json")) as f:
            record = f.read()
        for job in range(500000, 500000 + closed_records):
            with open(os.path.join(closed, f"{job}.json"), "w") as f:
                f.write(record.replace('"999999"', f'"{job}"'))
    return env


def cycle(prolog_script, epilog_script, env, job) -> float:
    job_env = {**env, "SLURM_JOB_ID": job, "SLURM_MIG_REQUEST": "mig:1g.10gb:1,mig:2g.20gb:1"}
    return timed([prolog_script], job_env) + timed([epilog_script], job_env)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--history", default="100,10000", metavar="N,M",
                    help="also time prolog+epilog on nodes whose ledger holds N, M closed records")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from harness import install, slurms
    installed = install.for_slurm(slurms.host())
    python = installed.bin("python")
    cli = [installed.bin("slurm-mig")]
    env = node_env(cli, 0)
    task_script = installed.hook_script("prolog/slurm-mig-task-prolog")
    prolog_script = installed.hook_script("prolog/slurm-mig-prolog")
    epilog_script = installed.hook_script("epilog/slurm-mig-epilog")
    samples = {k: [] for k in ("python -c pass", "prolog", "task-prolog (script)",
                               "task-prolog (script, 4 tasks)", "task-prolog (verb)", "epilog", "prolog+epilog",
                               "prolog (no GPUs)", "epilog (no GPUs)", "prolog+epilog (no GPUs)",
                               "prolog+epilog, publisher left", "prolog alone", "epilog alone",
                               "prolog+epilog alone")}
    alone = {"SLURM_MIG_HOOK": installed.bin("slurm-mig-hook")}
    start_server(epilog_script, env)
    for i in range(args.runs):
        job = str(i + 1)
        samples["python -c pass"].append(timed([python, "-c", "pass"], env))
        job_env = {**env, "SLURM_JOB_ID": job, "SLURM_MIG_REQUEST": "mig:1g.10gb:1,mig:2g.20gb:1"}
        p = timed([prolog_script], job_env)
        samples["prolog"].append(p)
        samples["task-prolog (script)"].append(timed([task_script], job_env))
        samples["task-prolog (script, 4 tasks)"].append(timed([task_script], {
            **job_env, "SLURM_LOCALID": "3", "SLURM_GTIDS": "0,1,2,3"}))
        samples["task-prolog (verb)"].append(timed(cli + ["task-prolog", "--job", job], env))
        e = timed([epilog_script], job_env)
        samples["epilog"].append(e)
        samples["prolog+epilog"].append(p + e)
        alone_env = {**job_env, **alone, "SLURM_JOB_ID": str(400000 + i)}
        p, e = timed([prolog_script], alone_env), timed([epilog_script], alone_env)
        samples["prolog alone"].append(p)
        samples["epilog alone"].append(e)
        samples["prolog+epilog alone"].append(p + e)
        # as under slurmd (SLURM_JOB_GPUS set): each hook also leaves the free-slice publisher
        # (slurm/room.py; its scontrol fails here); the pause lets it finish before what follows
        samples["prolog+epilog, publisher left"].append(
            cycle(prolog_script, epilog_script, {**env, "SLURM_JOB_GPUS": "0"}, str(300000 + i)))
        time.sleep(1)
        plain_env = {**env, "SLURM_JOB_ID": str(100000 + i)}
        p, e = timed([prolog_script], plain_env), timed([epilog_script], plain_env)
        samples["prolog (no GPUs)"].append(p)
        samples["epilog (no GPUs)"].append(e)
        samples["prolog+epilog (no GPUs)"].append(p + e)
    floor = statistics.median(samples["python -c pass"])
    version = subprocess.run([python, "-V"], capture_output=True, text=True).stdout.split()[-1]
    print(f"{args.runs} runs each, simulated 8xH100-80GB with 8 other jobs' instances, "
          f"installed in {installed.prefix} (Python {version})")
    print(f"{'':30} {'median ms':>10} {'p95 ms':>8} {'x python':>9}")
    for name, values in samples.items():
        med = statistics.median(values)
        print(f"{name:30} {med * 1000:10.1f} {pct(values, 0.95) * 1000:8.1f} {med / floor:9.2f}")
    ratio = statistics.median(samples["prolog+epilog"]) / floor
    ratio_alone = statistics.median(samples["prolog+epilog alone"]) / floor
    task = statistics.median(samples["task-prolog (script)"]) * 1000
    plain = statistics.median(samples["prolog+epilog (no GPUs)"]) * 1000
    sizes = [int(n) for n in args.history.split(",") if n]
    history = {n: [] for n in sizes}
    nodes = {n: node_env(cli, n) for n in sizes}
    for node in nodes.values():
        start_server(epilog_script, node)
    for i in range(args.runs):                    # interleaved, one node per history size
        for n in sizes:
            history[n].append(cycle(prolog_script, epilog_script, nodes[n], str(200000 + i)))
    for n in sizes:
        print(f"{'prolog+epilog, ' + str(n) + ' closed records':30} {statistics.median(history[n]) * 1000:10.1f} "
              f"{pct(history[n], 0.95) * 1000:8.1f} {statistics.median(history[n]) / floor:9.2f}")
    growth = (f" history {sizes[-1]}/{sizes[0]} closed records={statistics.median(history[sizes[-1]]) / statistics.median(history[sizes[0]]):.2f}x (target <1.2x)"
              if len(sizes) > 1 else "")
    print(f"SUMMARY hooks: prolog+epilog={ratio:.2f}x python (target <6x; alone {ratio_alone:.2f}x) "
          f"task-prolog-script={task:.1f}ms (target <10ms) no-GPU prolog+epilog={plain:.1f}ms{growth}")
    for node in [env, *nodes.values()]:      # their hook servers end with their sockets
        shutil.rmtree(os.path.dirname(node["SLURM_MIG_STATE_DIR"]))
        shutil.rmtree(os.path.dirname(node["SLURM_MIG_RUN_DIR"]))


def start_server(epilog_script, env) -> None:
    """One Epilog of a job the node never ran starts the node's hook server."""
    timed([epilog_script], {**env, "SLURM_JOB_ID": "999998"})
    hookd = os.path.join(env["SLURM_MIG_RUN_DIR"], "hookd")
    end = time.monotonic() + 30
    while not (os.path.isdir(hookd) and any(n.endswith(".sock") for n in os.listdir(hookd))):
        if time.monotonic() > end:
            sys.exit("no hook server came up")
        time.sleep(0.1)
    time.sleep(1)           # its spare child forked


if __name__ == "__main__":
    main()
