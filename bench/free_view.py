"""What the free-slice view (slurm/room.py) costs the controller, on real Slurm.

For each Slurm version asked for (22.05 on the host, newer ones in their
chroots; tests/harness), a cluster of one real node with simulated
8xH100-80GB plus --nodes declared-only nodes (no slurmd; each given a
full 8-GPU summary, the longest one there is) measures, from the
controller's own statistics (sdiag, reset before each part):

- publishing: --jobs MIG jobs of mixed profiles, 4 at a time; how many
  `scontrol update NodeName=... Extra=...` the hooks sent per job, the
  controller's mean time for one (REQUEST_UPDATE_NODE), next to the
  Prolog's one-job read the design already budgets (squeue -j);
- reading: `slurm-mig free` run --runs times: its wall time (median), the
  bytes sinfo brought back, and the controller's mean time per request
  (REQUEST_NODE_INFO, REQUEST_PARTITION_INFO).

Prints a table per version and one SUMMARY line per version.
Usage: python bench/free_view.py [--versions 22.05,24.11] [--nodes 1000]
       [--jobs 40] [--runs 11]
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
from slurm_mig.core.roomtext import GpuRoom, NodeRoom, encode  # noqa: E402

PROFILES = ["mig:1g.10gb:1", "mig:2g.20gb:1", "mig:3g.40gb:1", "mig:1g.10gb:2", "mig:4g.40gb:1"]
FULL = {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}
RPC = re.compile(r"^\s*(REQUEST_\w+)\s*\(\s*\d+\)\s*count:(\d+)\s+ave_time:(\d+)\s+total_time:(\d+)", re.M)


def with_declared_nodes(count: int):
    def edit(text: str) -> str:
        if not count:
            return text
        nodes = f"idle[1-{count}]"
        text = re.sub(r"^(PartitionName=debug Nodes=\S+)", rf"\1,{nodes}", text, flags=re.M)
        return text.replace("\nPartitionName=", f"\nNodeName={nodes} NodeAddr=127.0.0.9 CPUs=16 "
                            "RealMemory=1000 State=DOWN\nPartitionName=", 1)
    return edit


def rpc_stats(c: DevCluster) -> dict:
    """REQUEST name -> (count, mean microseconds) since the last reset."""
    out = c.run("sdiag").stdout
    return {m.group(1): (int(m.group(2)), int(m.group(3))) for m in RPC.finditer(out)}


def publishing(c: DevCluster, jobs: int) -> dict:
    c.run("sdiag", "-r")
    submitted = []
    for i in range(jobs):
        submitted.append(c.sbatch(f"--gres={PROFILES[i % len(PROFILES)]}", script="sleep 1"))
        if len(submitted) >= 4:
            c.wait_job(submitted[-4], timeout=300)
    for job in submitted:
        c.wait_job(job, timeout=300)
    time.sleep(3)                                         # the last publishers
    with open(c.slurm_calls, encoding="utf-8") as f:
        calls = [line.split(" ", 1)[1] for line in f if line.split(" ", 1)[0] in submitted]
    stats = rpc_stats(c)
    return {"updates": sum(1 for x in calls if x.startswith("scontrol update NodeName")),
            "reads": sum(1 for x in calls if x.startswith("squeue")),
            "update_us": stats.get("REQUEST_UPDATE_NODE", (0, 0))[1],
            "read_us": stats.get("REQUEST_JOB_INFO_SINGLE", stats.get("REQUEST_JOB_INFO", (0, 0)))[1]}


def reading(c: DevCluster, nodes: int, runs: int) -> dict:
    summary = encode(NodeRoom(int(time.time()), [GpuRoom(i, "H100-SXM5-80GB", FULL) for i in range(8)]))
    if nodes:
        c.run("scontrol", "update", f"NodeName=idle[1-{nodes}]", f"Extra={summary}")
    sinfo = ["sinfo", "-h", "-N", "-O", "NodeList:|,StateLong:|,Gres:|,Extra:|"]
    size = len(c.run(*sinfo).stdout.encode())
    c.run("sdiag", "-r")
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        c.slurm_mig("free", "--json")
        times.append(time.perf_counter() - t)
    stats = rpc_stats(c)
    return {"bytes": size, "summary_bytes": len(summary), "wall_s": statistics.median(times),
            "node_info_us": stats.get("REQUEST_NODE_INFO", (0, 0))[1],
            "part_info_us": stats.get("REQUEST_PARTITION_INFO", (0, 0))[1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default="22.05")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--runs", type=int, default=11)
    args = ap.parse_args()
    for version in args.versions.split(","):
        with DevCluster("8xH100-80GB", wait_for_room=3, slurm=slurms.get(version),
                        conf_edit=with_declared_nodes(args.nodes)) as c:
            pub = publishing(c, args.jobs)
            read = reading(c, args.nodes, args.runs)
        print(f"Slurm {version}: {args.jobs} MIG jobs, 1 + {args.nodes} nodes")
        print(f"  publishing: {pub['updates']} node updates for {args.jobs} jobs "
              f"({pub['updates'] / args.jobs:.2f} per job; {pub['reads']} one-job reads), "
              f"controller {pub['update_us']} us per update vs {pub['read_us']} us per one-job read")
        print(f"  reading: slurm-mig free {read['wall_s'] * 1000:.0f} ms (median of {args.runs}), sinfo "
              f"answer {read['bytes']} bytes ({read['summary_bytes']} per 8-GPU summary), controller "
              f"{read['node_info_us']} us node info + {read['part_info_us']} us partition info")
        print(f"SUMMARY version={version} nodes={args.nodes + 1} jobs={args.jobs} "
              f"updates_per_job={pub['updates'] / args.jobs:.2f} update_us={pub['update_us']} "
              f"read_us={pub['read_us']} free_ms={read['wall_s'] * 1000:.0f} sinfo_bytes={read['bytes']} "
              f"node_info_us={read['node_info_us']}")


if __name__ == "__main__":
    main()
