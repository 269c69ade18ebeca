"""Free slices for users on real Slurm (the installed wheel): a GPU job's
hooks publish the node's room into its Extra field, which only root may set,
and `slurm-mig free` run as an ordinary user reads every node's with one
sinfo."""
import json
import os
import re
import subprocess
import time

import pytest

from harness.devcluster import DevCluster

pytestmark = pytest.mark.slow
NOBODY = "nobody:nogroup"


@pytest.fixture(scope="module")
def cluster(slurm):
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm) as c:
        os.chmod(os.path.join(c.dir, "munge"), 0o755)     # other users reach munged, as on a real cluster
        yield c


def as_user(cluster, *argv):
    """A command run as `nobody`, with only the Slurm client's settings (a login node)."""
    return subprocess.run(["chroot", f"--userspec={NOBODY}", cluster.root, *argv], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": cluster.conf})


def free(cluster, *args):
    p = as_user(cluster, cluster.bin, "free", "--json", *args)
    assert p.returncode == 0, p.stderr
    return {(r["node"], r["gpu"]): r["can_start"] for r in json.loads(p.stdout)["gpus"]}


def wait_for(cluster, want, *args):
    deadline = time.monotonic() + 30
    while (got := free(cluster, *args)) != want and time.monotonic() < deadline:
        time.sleep(0.5)
    return got


EMPTY = {"1g.10gb": 7, "1g.10gb+me": 1, "1g.20gb": 4, "2g.20gb": 3, "3g.40gb": 2, "4g.40gb": 1, "7g.80gb": 1}


def test_a_user_sees_what_can_start_now_per_gpu(cluster):
    node = cluster.node
    job = cluster.sbatch("--gres=mig:3g.40gb:1", script="sleep 60")
    room = json.loads(cluster.slurm_mig("status", "--json").stdout)       # root, on the node
    # 3g.40gb at slots 4-7 of GPU 0: slots 0-3 place four 1g.10gb, but 56 - 25 shards pay for three
    with_3g = {"1g.10gb": 3, "1g.10gb+me": 1, "1g.20gb": 2, "2g.20gb": 2, "3g.40gb": 1, "4g.40gb": 1}
    try:
        assert wait_for(cluster, {(node, 0): with_3g, (node, 1): EMPTY}) == \
            {(node, 0): with_3g, (node, 1): EMPTY}
        assert json.loads(cluster.slurm_mig("status", "--json").stdout)["gpus"][0]["can_create"]["1g.10gb"] == 4
        assert free(cluster, "--profile", "7g.80gb") == {(node, 1): EMPTY}
        table = as_user(cluster, cluster.bin, "free").stdout
        assert f"{node}  mixed  0    H100-SXM5-80GB  1g.10gb:3 1g.10gb+me:1 1g.20gb:2" in table
        assert "In all: 1g.10gb:10," in table
    finally:
        cluster.run("scancel", job)
    cluster.wait_job(job)
    assert wait_for(cluster, {(node, 0): EMPTY, (node, 1): EMPTY}) == {(node, 0): EMPTY, (node, 1): EMPTY}
    assert room["gpus"]                    # status (root) saw the node all along


def test_only_root_may_write_the_field_and_forgeries_are_not_read(cluster):
    forged = f"slurm-mig:1;t={int(time.time())};0=H100-SXM5-80GB:7g.80gb*9"
    p = as_user(cluster, "scontrol", "update", f"NodeName={cluster.node}", f"Extra={forged}")
    assert p.returncode != 0 and re.search("invalid user id|denied", p.stderr + p.stdout, re.I)
    before = free(cluster)
    assert all(room.get("7g.80gb", 0) <= 1 for room in before.values())
    cluster.run("scontrol", "update", f"NodeName={cluster.node}", "Extra=slurm-mig:1;t=1;0=H100:7g.80gb*x")
    assert free(cluster) == {(cluster.node, None): None}          # malformed: shown as not published
    cluster.slurm_mig("publish-room", "--force", "--node", cluster.node)   # what the reconcile timer runs
    assert free(cluster) == before


def test_one_sinfo_shows_every_node(slurm):
    with DevCluster("1xH100-80GB", wait_for_room=3, slurm=slurm, nodes=2) as c:
        os.chmod(os.path.join(c.dir, "munge"), 0o755)
        first, second = c.nodes
        assert free(c) == {(first, None): None, (second, None): None}       # no job ran yet
        c.slurm_mig("publish-room", "--force", "--node", first, node=first)  # what the timer does
        job = c.sbatch("-w", second, "--gres=mig:7g.80gb:1", script="sleep 60")
        try:
            want = {(first, 0): EMPTY, (second, 0): {}}
            assert wait_for(c, want) == want
            assert free(c, "--profile", "1g.10gb") == {(first, 0): EMPTY}
            assert free(c, "-n", second) == {(second, 0): {}}
        finally:
            c.run("scancel", job)
