"""A cluster of mixed GPU models on real Slurm, configured from one cluster
description (`slurm-mig gres-conf --cluster`): one gres.conf, one
job_submit.lua, Features= per model. Each request runs only on a model that
has its profiles, a profile name two models share costs each model's own
units, and --constraint picks models by the names admins use."""
import json
import os
import re

import pytest

from harness.devcluster import ClusterError, DevCluster

pytestmark = pytest.mark.slow

MODELS = ["1xH100-80GB", "1xA100-40GB", "1xA100-80GB", "1xH200"]


@pytest.fixture(scope="module")
def mixed(slurm):
    with DevCluster(MODELS, wait_for_room=3, slurm=slurm, nodes=len(MODELS)) as c:
        c.by_model = dict(zip(["h100", "a100_40gb", "a100_80gb", "h200"], c.nodes))
        yield c


def placed(cluster, job):
    """(node, profile, memory slots) of each instance `job` got, while it runs."""
    out = []
    for node in cluster.nodes:
        doc = json.loads(cluster.slurm_mig("status", "--json", node=node).stdout)
        out += [(node, i["profile"], i["placement"][1]) for g in doc["gpus"] for i in g["instances"]
                if i["owner"] == job]
    return out


def run_and_place(cluster, *args):
    job = cluster.sbatch(*args, script="sleep 2")
    cluster._wait(lambda: cluster.job_state(job) != "PENDING" and placed(cluster, job)
                  or cluster.job_state(job) in ("FAILED", "COMPLETED"), 60, f"job {job} placed")
    where = placed(cluster, job)
    assert cluster.wait_job(job) == "COMPLETED"
    return where


def test_each_profile_runs_on_a_model_that_has_it(mixed):
    m = mixed.by_model
    assert run_and_place(mixed, "--gres=mig:1g.5gb:1") == [(m["a100_40gb"], "1g.5gb", 1)]
    assert run_and_place(mixed, "--gres=mig:1g.18gb:1") == [(m["h200"], "1g.18gb", 1)]
    assert sorted(run_and_place(mixed, "--gres=mig:2g.35gb:1,mig:1g.35gb:1")) == \
        [(m["h200"], "1g.35gb", 2), (m["h200"], "2g.35gb", 2)]
    node, profile, _ = run_and_place(mixed, "--gres=mig:3g.40gb:1")[0]
    assert node in (m["h100"], m["a100_80gb"]) and profile == "3g.40gb"


def test_a_shared_profile_name_builds_each_models_own_instance(mixed):
    """1g.10gb is one memory slot on an H100 and two on an A100-40GB."""
    m = mixed.by_model
    assert run_and_place(mixed, "--gres=mig:1g.10gb:1", "--constraint=h100") == [(m["h100"], "1g.10gb", 1)]
    assert run_and_place(mixed, "--gres=mig:1g.10gb:1", "--constraint=a100_40gb") == \
        [(m["a100_40gb"], "1g.10gb", 2)]


def test_shard_units_are_each_models_own(mixed):
    """A 7-slice instance fills its GPU whatever the model's scaled Count: a
    1g.10gb job waits behind it on that model and runs on another at once."""
    m = mixed.by_model
    blocker = mixed.sbatch("--gres=mig:7g.40gb:1", script="sleep 300")
    mixed._wait(lambda: placed(mixed, blocker), 60, "the blocker")
    assert placed(mixed, blocker) == [(m["a100_40gb"], "7g.40gb", 8)]
    waiting = mixed.sbatch("--gres=mig:1g.10gb:1", "--constraint=a100_40gb", script="sleep 1")
    elsewhere = run_and_place(mixed, "--gres=mig:1g.10gb:1", "--constraint=ampere|hopper")
    assert elsewhere[0][0] in (m["h100"], m["a100_80gb"])
    assert mixed.job_state(waiting) == "PENDING"
    detail = mixed.run("scontrol", "show", "job", "-d", waiting).stdout
    assert re.search(r"shard:104\b", detail), detail      # 13 units x 8, the A100-40GB scale
    mixed.run("scancel", blocker)
    assert mixed.wait_job(waiting) == "COMPLETED"


def test_sbatch_refuses_what_no_model_offers(mixed):
    with pytest.raises(ClusterError, match="at most 1 x 7g.40gb on one A100-40GB"):
        mixed.sbatch("--gres=mig:7g.40gb:2", script="true")
    with pytest.raises(ClusterError, match="no GPU model here offers all of these profiles together"):
        mixed.sbatch("--gres=mig:1g.5gb:1,mig:1g.18gb:1", script="true")
    with pytest.raises(ClusterError):       # no H100 offers 1g.18gb: Slurm itself refuses
        mixed.sbatch("--gres=mig:1g.18gb:1", "--constraint=h100", script="true")


LAYOUTS = os.path.join(os.path.dirname(__file__), "data", "mig-parted-h100.yaml")


def test_static_and_dynamic_nodes_share_one_job_submit_lua(slurm):
    """A static node (its own gres.conf, partition `fixed`, the description's
    static_partitions) beside a dynamic one (the description, the default
    partition): the static partition's jobs keep mig: as Slurm's GRES and get
    one of the layout's instances, the others get shards and a new instance,
    and a job naming both kinds of partition is refused at sbatch."""
    with DevCluster("1xH100-80GB", mode=["dynamic", "static"], layout=[None, (LAYOUTS, "all-3g.40gb")],
                    nodes=2, wait_for_room=3, slurm=slurm) as c:
        dynamic, fixed = c.nodes
        layout = {i["uuid"] for _, i in all_instances(c, fixed)}
        static_job = c.sbatch("-p", "fixed", "--gres=mig:3g.40gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
        job = c.sbatch("--gres=mig:3g.40gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 3")
        c._wait(lambda: placed(c, job) or c.job_state(job) not in ("PENDING", "CONFIGURING", "RUNNING"),
                60, f"job {job} placed")
        assert placed(c, job) == [(dynamic, "3g.40gb", 4)]
        assert c.wait_job(static_job) == "COMPLETED" and c.wait_job(job) == "COMPLETED"
        assert re.search(r"^CVD=(MIG-\S+)$", c.output(static_job), re.M).group(1) in layout
        assert {i["uuid"] for _, i in all_instances(c, fixed)} == layout        # static: left in place
        assert "gres/shard" not in c.run("scontrol", "show", "job", static_job).stdout
        with pytest.raises(ClusterError, match="partition\\(s\\) fixed run fixed MIG layouts and debug"):
            c.sbatch("-p", "debug,fixed", "--gres=mig:3g.40gb:1", script="true")
        for partition, shards in (("fixed", ""), ("debug", ",gres[:/]shard:50")):   # a pending job's update
            held = c.sbatch("-p", partition, "--hold", "--gres=mig:3g.40gb:1", script="true")
            c.run("scontrol", "update", f"JobId={held}", "Gres=mig:3g.40gb:2")
            assert re.search(rf"TresPerNode=gres[:/]mig:3g.40gb:2{shards}$",
                             c.run("scontrol", "show", "job", held).stdout, re.M), partition
            c.run("scancel", held)


def all_instances(cluster, node):
    doc = json.loads(cluster.slurm_mig("status", "--json", node=node).stdout)
    return [(g["index"], i) for g in doc["gpus"] for i in g["instances"]]
