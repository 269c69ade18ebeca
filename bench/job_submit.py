"""What one job_submit.lua for a mixed cluster costs slurmctld per submission.

slurmctld runs job_submit.lua for every sbatch/srun/salloc, so its cost is the
controller's. A cluster of more GPU models brings larger tables (every set of
instances each model holds) and a refusal loop over more models. Measured
with lua5.1 on the generated scripts for one model (H100-80GB), the issue's
four (H100-80GB, A100-40GB, A100-80GB, H200) and all ten catalog models:
CPU time per submission (os.clock over a batch, inside Lua, so the interpreter's
start and the script's load are not counted; slurmctld loads it once), for a
mix of accepted requests and of refusals, which walk every model. Also the
script size and the time `gres-conf --cluster` takes to write every file
for a 50-node cluster of the four models (whole process). Prints medians of
--runs batches and ratios to one model.
Usage: python bench/job_submit.py [--runs 9] [--jobs 4000]
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
sys.path.insert(0, REPO)

from slurm_mig.core import catalog  # noqa: E402
from slurm_mig.slurm import confgen  # noqa: E402

DRIVER = """
slurm = { SUCCESS = 0, ERROR = -1, log_user = function() end }
dofile(arg[1])
local jobs = {}
for line in io.lines() do table.insert(jobs, line) end
local t = os.clock()
for _, tres in ipairs(jobs) do slurm_job_submit({ tres_per_node = tres }, {}, 1000) end
print((os.clock() - t) / #jobs)
"""
ACCEPTED = ["gres/mig:1g.10gb:1", "gres/mig:3g.40gb:1", "gres/mig:1g.10gb:2,gres/mig:2g.20gb:1",
            "gres/mig:7g.80gb:1", "gres/gpu:1", "gres/mig:4g.40gb:1,gres/mig:3g.40gb:1"]
REFUSED = ["gres/mig:1g.10gb:8", "gres/mig:7g.80gb:1,gres/mig:1g.10gb:1", "gres/mig:5g.50gb:1"]
MIXED = ["H100-80GB", "A100-40GB", "A100-80GB", "H200"]


def script(models, folder, name):
    gpus = [confgen.GpuDesc(i, i, m) for i, m in enumerate(models)]
    text = confgen.render([confgen.NodeGroup(None, gpus)], "dynamic", "/dev", "bench", "bench")["job_submit.lua"]
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def per_job(lua, path, driver, jobs):
    p = subprocess.run([lua, driver, path], input="\n".join(jobs) + "\n", capture_output=True, text=True,
                       check=True)
    return float(p.stdout)


def generation(folder, runs):
    desc = os.path.join(folder, "cluster.toml")
    with open(desc, "w", encoding="utf-8") as f:
        f.write("".join(f'[[group]]\nnodes = "{m.lower()}-[01-{n:02d}]"\ngpus = "8x{m}"\n\n'
                        for m, n in zip(MIXED, (20, 10, 10, 10))))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "slurm_mig", "gres-conf", "--cluster", desc, "--output",
                        os.path.join(folder, "gen")], check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--jobs", type=int, default=4000)
    args = ap.parse_args()
    lua = shutil.which("lua5.1") or sys.exit("needs lua5.1 (bash run.sh test installs it)")
    cat = catalog.load()
    clusters = {"1 model": [cat.model("H100-80GB")], "4 models": [cat.model(k) for k in MIXED],
                "10 models": list(cat.models.values())}
    with tempfile.TemporaryDirectory() as folder:
        driver = os.path.join(folder, "driver.lua")
        with open(driver, "w", encoding="utf-8") as f:
            f.write(DRIVER)
        paths = {name: script(models, folder, f"{i}.lua") for i, (name, models) in enumerate(clusters.items())}
        results = {}
        for kind, mix in (("accepted", ACCEPTED), ("refused", REFUSED)):
            jobs = (mix * (args.jobs // len(mix) + 1))[:args.jobs]
            samples = {name: [] for name in paths}
            for _ in range(args.runs):                  # interleaved, so drift hits every script alike
                for name, path in paths.items():
                    samples[name].append(per_job(lua, path, driver, jobs))
            results[kind] = {name: statistics.median(s) for name, s in samples.items()}
        print(f"{'cluster':<10} {'script KB':>9} {'accepted us/job':>16} {'refused us/job':>15}")
        for name, path in paths.items():
            acc, ref = results["accepted"][name], results["refused"][name]
            print(f"{name:<10} {os.path.getsize(path) / 1024:9.1f} {acc * 1e6:10.1f} (x{acc / results['accepted']['1 model']:.2f})"
                  f" {ref * 1e6:8.1f} (x{ref / results['refused']['1 model']:.2f})")
        print(f"gres-conf --cluster, 50 nodes of 4 models, whole process: "
              f"{generation(folder, args.runs) * 1e3:.0f} ms median of {args.runs}")


if __name__ == "__main__":
    main()
