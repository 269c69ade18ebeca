"""Reading what Slurm gave a job on this node: every allocation format from
22.05 to 26.05, Slurm's JSON with hostile free-text fields, several nodes."""
import json
import os

import pytest

from slurm_mig.errors import BadInput
from slurm_mig.core.syntax import MigRequest
from slurm_mig.slurm.jobinfo import (JobRequest, NodeConstraints, expand_hostlist, parse_allocation,
                                     parse_job_line, parse_jobs_json, split_items)


@pytest.mark.parametrize("text,expected", [
    # 22.05 (docs/facts.md, Slurm: GRES as the Prolog sees it): count-only mig + shard IDX
    ("mig:3g.40gb(CNT:1),shard:4(IDX:0)", JobRequest(MigRequest.parse("mig:3g.40gb:1"), 0, [])),
    ("mig:1g.10gb(CNT:2),mig:3g.40gb(CNT:1),shard:6(IDX:1)",
     JobRequest(MigRequest.parse("mig:1g.10gb:2,mig:3g.40gb:1"), 1, [])),
    # 23.11.2 and later: per-GPU alloc/avail, no IDX
    ("mig:3g.40gb(CNT:1),shard:4(4/8,0/8)", JobRequest(MigRequest.parse("mig:3g.40gb:1"), 0, [])),
    ("mig:7g.80gb(CNT:1),shard:8(0/8,8/8)", JobRequest(MigRequest.parse("mig:7g.80gb:1"), 1, [])),
    ("gres/mig:3g.40gb(CNT:1),gres/shard:4(0/8,4/8)", JobRequest(MigRequest.parse("mig:3g.40gb:1"), 1, [])),
    # whole GPUs, typed or not
    ("gpu:h100_sxm5_80gb:2(IDX:0-1)", JobRequest(None, None, [], [0, 1])),
    ("gpu:1(IDX:1)", JobRequest(None, None, [], [1])),
    # static mode: mig records with files, by IDX
    ("mig:1g.10gb:2(IDX:0-1),mig:3g.40gb:1(IDX:7)",
     JobRequest(None, None, [0, 1, 7], idx_types={0: "1g.10gb", 1: "1g.10gb", 7: "3g.40gb"})),
    ("", JobRequest(None, None, [])),
])
def test_allocation_formats(text, expected):
    assert parse_allocation(text) == expected


@pytest.mark.parametrize("text,needle", [
    ("shard:4(4/8,4/8)", "from GPUs \\[0, 1\\]"),       # would need two GPUs
    ("shard:4(IDX:0", "unbalanced"), ("shard:4(4-8)", "shard allocation format"),
    ("mig:3g.40gb(FOO:1)", "unknown mig allocation"), ("x y(IDX:0)", "unknown GRES allocation"),
    ("mig:1g.10gb:1(IDX:2),mig:3g.40gb:1(IDX:2)", "IDX 2 allocated as 1g.10gb and 3g.40gb"),
])
def test_malformed_allocations_are_errors_not_tracebacks(text, needle):
    with pytest.raises(BadInput, match=needle):
        parse_allocation(text)


def test_split_items_keeps_commas_inside_parentheses():
    assert split_items("a:1(IDX:0,2),shard:4(4/8,0/8),b") == ["a:1(IDX:0,2)", "shard:4(4/8,0/8)", "b"]


def job(job_id, nodes, detail, **free_text):
    return {"job_id": job_id, "nodes": nodes, "gres_detail": detail,
            "tres_per_node": "gres:mig:1g.10gb:1,gres:shard:1", **free_text}


HOSTILE = {"name": "x JOB_GRES=mig:7g.80gb:1 GRES=shard:8(IDX:1)",
           "comment": "GRES=gpu:1(IDX:0)", "current_working_directory": "/tmp/ Nodes=n1 GRES=gpu:2(IDX:0-1)",
           "command": "y JOB_GRES=(null) GRES=gpu:1(IDX:0)"}


def test_hostile_free_text_fields_change_nothing():
    # As 22.05's squeue --json printed it for a job named like that (fields abridged).
    doc = {"jobs": [job(1, "migsim", ["mig:3g.40gb(CNT:1),shard:4(IDX:0)"]),
                    job(2, "migsim", ["mig:1g.10gb(CNT:1),shard:1(IDX:0)"], **HOSTILE),
                    job(3, "migsim", [], name="y GRES=gpu:1(IDX:0)")]}
    text = json.dumps(doc)
    assert parse_jobs_json(text, "2", "migsim")._replace(constraints=None) == JobRequest(MigRequest.parse("mig:1g.10gb:1"), 0, [])
    assert parse_jobs_json(text, "3", "migsim")._replace(constraints=None) == JobRequest(None, None, [])


def test_each_node_reads_its_own_allocation():
    doc = {"jobs": [job(7, "n[1-2]", ["mig:3g.40gb(CNT:1),shard:4(IDX:1)",
                                      "mig:3g.40gb(CNT:1),shard:4(IDX:0)"])]}
    text = json.dumps(doc)
    assert parse_jobs_json(text, "7", "n1")._replace(constraints=None) == JobRequest(MigRequest.parse("mig:3g.40gb:1"), 1, [])
    assert parse_jobs_json(text, "7", "n2")._replace(constraints=None) == JobRequest(MigRequest.parse("mig:3g.40gb:1"), 0, [])
    with pytest.raises(BadInput, match="not on n3"):
        parse_jobs_json(text, "7", "n3")


@pytest.mark.parametrize("text,needle", [
    ("not json", "no `jobs` list"), ('{"jobs": {}}', "no `jobs` list"),
    ('{"jobs": []}', "lists job 5 0 times"),
    ('{"jobs": [{"job_id": 5}, {"job_id": 5}]}', "lists job 5 2 times"),
    ('{"jobs": [{"job_id": 5, "nodes": "n1", "gres_detail": "shard:1(IDX:0)"}]}', "no usable"),
    ('{"jobs": [{"job_id": 5, "nodes": "n[1-2]", "gres_detail": ["shard:1(IDX:0)"]}]}',
     "1 gres_detail entries for 2 nodes"),
    ('{"jobs": [{"job_id": 5, "nodes": "n[1-", "gres_detail": []}]}', "cannot read Slurm's node list"),
])
def test_json_errors_name_the_problem(text, needle):
    with pytest.raises(BadInput, match=needle):
        parse_jobs_json(text, "5", "n1")


def test_where_slurm_may_run_the_job_is_read_from_the_json():
    doc = {"jobs": [job(7, "n[1-2]", ["shard:4(IDX:1)", "shard:4(IDX:0)"], partition="gpu",
                        excluded_nodes="n[5-6],n9", required_nodes="", features=["a100", "nvl"],
                        admin_comment="slurm-mig: requeued 1/30, kept off n5: x", **HOSTILE)]}
    constraints = parse_jobs_json(json.dumps(doc), "7", "n2").constraints
    assert constraints == NodeConstraints(["n1", "n2"], "gpu", ["n5", "n6", "n9"], "", "a100,nvl",
                                  "slurm-mig: requeued 1/30, kept off n5: x")
    bare = parse_jobs_json(json.dumps({"jobs": [job(7, "n1", ["shard:1(IDX:0)"], partition=None)]}), "7", "n1")
    assert bare.constraints == NodeConstraints(["n1"], "", [])


def test_hostlists_expand_by_clustershell():
    assert expand_hostlist("n[1-2,5],gpu01") == ["gpu01", "n1", "n2", "n5"]
    assert expand_hostlist("migsim") == ["migsim"]


@pytest.mark.parametrize("node", ["", "a b", "n1;id", "../x", "$(id)"])
def test_active_jobs_rejects_hostile_node_names(node):
    from slurm_mig.slurm.jobinfo import active_jobs
    with pytest.raises(BadInput, match="invalid node name"):
        active_jobs(node)


# Real output of Slurm 22.05.8 (bookworm), 24.11.5 (trixie) and 26.05.5 (sid), captured
# on clusters of two nodes with two GPUs each: `squeue --json -j ID` and the Prolog's
# SLURMD_NODENAME / SLURM_JOB_GPUS on every node of the job.
SLURM_DATA = os.path.join(os.path.dirname(__file__), "data", "slurm")
EXPECTED_SPEC = {"a-mig3g-gpu1": "mig:3g.40gb:1", "b-hostile": "mig:3g.40gb:1",
                 "c1-2node-same-idx": "mig:3g.40gb:1", "c2-2node-diff-idx": "mig:3g.40gb:1",
                 "d-gpu1": "", "e-nogres": "", "f-two-profiles-srun-n2": "mig:1g.10gb:2,mig:3g.40gb:1"}
CAPTURES = sorted((v, s, env) for v in os.listdir(SLURM_DATA) for s in os.listdir(os.path.join(SLURM_DATA, v))
                  for env in os.listdir(os.path.join(SLURM_DATA, v, s)) if env.endswith(".env"))


@pytest.mark.parametrize("version,scenario,env_file", CAPTURES)
def test_every_slurm_version_is_read_per_node(version, scenario, env_file):
    folder = os.path.join(SLURM_DATA, version, scenario)
    with open(os.path.join(folder, "jobid")) as f:
        job = f.read().strip()
    with open(os.path.join(folder, env_file)) as f:
        env = dict(line.strip().split("=", 1) for line in f if "=" in line)
    with open(os.path.join(folder, "squeue-json-j.json")) as f:
        req = parse_jobs_json(f.read(), job, env["SLURMD_NODENAME"])
    assert str(req.request or '') == EXPECTED_SPEC[scenario]
    if scenario != "e-nogres":
        assert req.constraints.partition and env["SLURMD_NODENAME"] in req.constraints.nodes
        assert req.constraints.excluded == [] and req.constraints.admin_comment == ""
    slurmd_gpus = [int(g) for g in env.get("SLURM_JOB_GPUS", "").split(",") if g]
    assert sorted(req.whole_gpus + ([req.gpu] if req.gpu is not None else [])) == slurmd_gpus
    scontrol_json = os.path.join(folder, "scontrol-json-show-job.json")     # 23.02 and later
    if os.path.exists(scontrol_json):
        with open(scontrol_json) as f:
            assert parse_jobs_json(f.read(), job, env["SLURMD_NODENAME"]) == req


def test_the_captures_cover_three_versions_and_two_nodes():
    assert {v for v, _, _ in CAPTURES} == {"22.05", "24.11", "26.05"}
    assert sum(1 for v, s, _ in CAPTURES if s == "c2-2node-diff-idx") == 6


# The dynamic Prolog's one-job read, as squeue printed it (job 1, `sbatch --gres=mig:3g.40gb:1`,
# job_submit.lua adding the shards), and what a hostile admin-set comment cannot break.
ONE_JOB_LINES = {"22.05": "1|1|1|0|gres:mig:3g.40gb:1,gres:shard:25|n1|debug||(null)||(null)|\n",
                 "24.11": "1|1|1|0|gres/mig:3g.40gb:1,gres/shard:25|n1|debug||(null)||(null)|\n",
                 "26.05": "1|1|1|0|gres/mig:3g.40gb:1,gres/shard:25|n1|debug||(null)||(null)|\n"}


@pytest.mark.parametrize("version", sorted(ONE_JOB_LINES))
def test_the_one_job_read_gives_the_request_and_slurmds_gpu(version):
    req = parse_job_line(ONE_JOB_LINES[version], "1", "n1", "1")
    assert (str(req.request or ''), req.gpu, req.whole_gpus, req.batch, req.requeue, req.restarts) == \
        ("mig:3g.40gb:1", 1, [], True, True, 0)
    assert req.constraints == NodeConstraints(["n1"], "debug", [], "", "", "")


def test_the_one_job_read_merges_repeated_profiles_and_keeps_the_comment_whole():
    line = "12|0|0|3|gres:mig:1g.10gb:1,gres:mig:1g.10gb:1,gres:mig:2g.20gb,gres:shard:31|n[1-2]|gpu|n2|" \
           "a100&nvl|n[3,7]|slurm-mig: requeued 3/100, kept off n3: x|y|\n"
    req = parse_job_line(line, "12", "n2", "0")
    assert str(req.request or '') == "mig:1g.10gb:2,mig:2g.20gb:1" and not req.batch and req.restarts == 3
    assert req.constraints == NodeConstraints(["n1", "n2"], "gpu", ["n3", "n7"], "n2", "a100&nvl",
                                      "slurm-mig: requeued 3/100, kept off n3: x|y")
    # squeue before 24.11 prints no ExcNodes (an empty field and an error on stderr)
    assert parse_job_line(line, "12", "n2", "0", exc_nodes_known=False).constraints.excluded is None


def test_whole_gpus_come_from_slurmd():
    req = parse_job_line("4|1|1|0|gres:gpu:h100:2|n1|debug||(null)||(null)|\n", "4", "n1", "0-1")
    assert (str(req.request or ''), req.gpu, req.whole_gpus) == ("", None, [0, 1])


def test_a_heterogeneous_jobs_leader_reads_its_own_component():
    """`squeue -j <leader>` lists every component (each a job of its own id)."""
    text = ("1|1|1|0|gres:mig:1g.10gb:1,gres:shard:8|n1|debug||(null)||(null)|\n"
            "2|1|1|0|gres:mig:2g.20gb:1,gres:shard:15|n2|debug||(null)||(null)|\n")
    assert str(parse_job_line(text, "1", "n1", "0").request) == "mig:1g.10gb:1"
    assert str(parse_job_line(text, "2", "n2", "0").request) == "mig:2g.20gb:1"
