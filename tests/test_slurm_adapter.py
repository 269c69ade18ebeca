"""Reading a job's request and allocation: scontrol -d -o and squeue --json."""
import json

import pytest

from slurm_mig.errors import BadInput
from slurm_mig.slurm.jobinfo import JobRequest, parse_scontrol, parse_squeue_json

# As printed by Slurm 22.05 (slurm-facts.md sections 2 and 7).
DYNAMIC = ("JobId=5 JobName=x UserId=root(0) JOB_GRES=mig:3g.40gb:1,shard:4 "
           "Nodes=probe CPU_IDs=0 Mem=0 GRES=mig:3g.40gb(CNT:1),shard:4(IDX:0) "
           "TresPerNode=gres:mig:3g.40gb:1,gres:shard:4")
STATIC = ("JobId=6 JOB_GRES=mig:1g.10gb:2,mig:3g.40gb:1 Nodes=probe CPU_IDs=0 Mem=0 "
          "GRES=mig:1g.10gb:2(IDX:0-1),mig:3g.40gb:1(IDX:7) TresPerNode=gres:mig:1g.10gb:2")


def test_scontrol_dynamic():
    assert parse_scontrol(DYNAMIC, "5") == JobRequest("mig:3g.40gb:1", 0, [])


def test_scontrol_static_idx():
    assert parse_scontrol(STATIC, "6") == JobRequest("mig:1g.10gb:2,mig:3g.40gb:1", None, [0, 1, 7])


def test_scontrol_without_mig():
    assert parse_scontrol("JobId=9 JOB_GRES=(null) TresPerNode=N/A", "9").spec == ""


def test_scontrol_wrong_job_names_the_field():
    with pytest.raises(BadInput, match="JobId"):
        parse_scontrol(DYNAMIC, "6")


def test_squeue_json_filters_on_job_id():
    doc = {"jobs": [{"job_id": 4, "tres_per_node": "gres:mig:1g.10gb:1", "gres_detail": []},
                    {"job_id": 5, "tres_per_node": "gres:mig:3g.40gb:1,gres:shard:4",
                     "gres_detail": ["mig:3g.40gb(CNT:1),shard:4(IDX:1)"]}]}
    assert parse_squeue_json(json.dumps(doc), "5") == JobRequest("gres:mig:3g.40gb:1", 1, [])


@pytest.mark.parametrize("text,needle", [
    ("not json", "no `jobs` list"), ('{"jobs": []}', "does not list job 5"),
    ('{"jobs": [{"job_id": 5, "tres_per_node": 7}]}', "unexpected tres_per_node"),
])
def test_squeue_json_errors(text, needle):
    with pytest.raises(BadInput, match=needle):
        parse_squeue_json(text, "5")


@pytest.mark.parametrize("node", ["", "a b", "n1;id", "../x", "$(id)"])
def test_active_jobs_rejects_hostile_node_names(node):
    from slurm_mig.slurm.jobinfo import active_jobs
    with pytest.raises(BadInput, match="invalid node name"):
        active_jobs(node)


def test_whole_gpu_allocation():
    text = ("JobId=8 JOB_GRES=gpu:h100_sxm5_80gb:2 Nodes=n CPU_IDs=0 Mem=0 "
            "GRES=gpu:h100_sxm5_80gb:2(IDX:0-1) TresPerNode=gres:gpu:2")
    assert parse_scontrol(text, "8") == JobRequest("", None, [], [0, 1])
