"""Per-task binding: the TaskProlog script (plain sh) and the Python
`task_prolog` follow the same rules; both are run on the same inputs."""
import itertools
import os
import subprocess

import pytest

from slurm_mig.node.jobfiles import local_tasks, select, task_prolog

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "prolog", "slurm-mig-task-prolog")
MIG = ["MIG-aaaaaaaa-0000-4000-8000-000000000001", "MIG-bbbbbbbb-0000-4000-8000-000000000002",
       "MIG-cccccccc-0000-4000-8000-000000000003"]
GPU = ["GPU-dddddddd-0000-4000-8000-000000000004", "GPU-eeeeeeee-0000-4000-8000-000000000005"]


def run_script(run_dir, env):
    p = subprocess.run(["sh", SCRIPT], capture_output=True, text=True, timeout=10,
                       env={"PATH": os.environ["PATH"], "SLURM_MIG_RUN_DIR": str(run_dir), **env})
    return p.stdout, p.returncode


def write_devices(run_dir, job, uuids):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, f"{job}.env"), "w") as f:
        f.write("".join(u + "\n" for u in uuids))


STEPS = [  # the variables the TaskProlog sees, as observed on slurmd 22.05
    {},                                                                     # outside Slurm
    {"SLURM_LOCALID": "0", "SLURM_GTIDS": "0", "SLURM_TASKS_PER_NODE": "2"},  # batch step of -n2
    {"SLURM_LOCALID": "0", "SLURM_GTIDS": "0,1", "SLURM_STEP_TASKS_PER_NODE": "2"},
    {"SLURM_LOCALID": "1", "SLURM_GTIDS": "0,1", "SLURM_STEP_TASKS_PER_NODE": "2"},
    {"SLURM_LOCALID": "4", "SLURM_GTIDS": "4,5,6,7,8", "SLURM_NODEID": "1"},
    {"SLURM_LOCALID": "1", "SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "1"},
    {"SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "2"},
    {"SLURM_LOCALID": "2", "SLURM_STEP_TASKS_PER_NODE": "1,3", "SLURM_NODEID": "1"},
    {"SLURM_LOCALID": "0", "SLURM_STEP_TASKS_PER_NODE": "garbage(x", "SLURM_NODEID": "0"},
    {"SLURM_LOCALID": "x1", "SLURM_GTIDS": "0,1"},
]
BINDS = [None, "task", "all", "bogus;rm -rf /"]


@pytest.mark.parametrize("uuids", [MIG[:1], MIG[:2], MIG, GPU], ids=["1mig", "2mig", "3mig", "2gpu"])
def test_script_and_python_agree(tmp_path, uuids):
    run_dir = tmp_path / "run"
    write_devices(run_dir, "7", uuids)
    for step, bind in itertools.product(STEPS, BINDS):
        env = {"SLURM_JOB_ID": "7", **step, **({"SLURM_MIG_BIND": bind} if bind else {})}
        assert run_script(run_dir, env) == task_prolog(str(run_dir), "7", env), env


@pytest.mark.parametrize("shards", [None, "0", "4"])
def test_a_shard_job_with_nothing_bound_never_runs_on_the_bare_gpu(tmp_path, shards):
    env = {"SLURM_JOB_ID": "8", **({"SLURM_SHARDS_ON_NODE": shards} if shards else {})}
    out, code = run_script(tmp_path, env)
    assert (out, code) == task_prolog(str(tmp_path), "8", env)
    assert code == (1 if shards == "4" else 0)
    assert ("no MIG instances were bound" in out) == (shards == "4")


def test_rules():
    two = MIG[:2]
    multi = lambda i: {"SLURM_LOCALID": str(i), "SLURM_GTIDS": "0,1"}
    assert select(two, multi(0))[0] == [two[0]] and select(two, multi(1))[0] == [two[1]]
    assert select(two, {**multi(1), "SLURM_MIG_BIND": "all"})[0] == two
    assert select(two, {"SLURM_LOCALID": "0", "SLURM_GTIDS": "0"})[0] == two      # batch step
    assert select(two, {"SLURM_LOCALID": "0", "SLURM_GTIDS": "0", "SLURM_MIG_BIND": "task"})[0] == [two[0]]
    assert select(MIG, {"SLURM_LOCALID": "4", "SLURM_GTIDS": "0,1,2,3,4"})[0] == [MIG[1]]  # i mod n
    assert select(GPU, multi(1))[0] == GPU                     # whole GPUs: all unless asked
    assert select(GPU, {**multi(1), "SLURM_MIG_BIND": "task"})[0] == [GPU[1]]
    chosen, warning = select(two, {**multi(1), "SLURM_MIG_BIND": "tsk"})
    assert chosen == [two[1]] and "SLURM_MIG_BIND must be task or all" in warning
    assert local_tasks({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3"}) == 1
    assert local_tasks({"SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "2"}) == 2


def test_fail_file_and_old_env_file(tmp_path):
    run_dir = tmp_path / "run"
    os.makedirs(run_dir)
    (run_dir / "8.fail").write_text("slurm-mig: job 8 could not get its MIG devices: no room\n")
    assert run_script(run_dir, {"SLURM_JOB_ID": "8"}) == task_prolog(str(run_dir), "8", {}) == (
        "print slurm-mig: job 8 could not get its MIG devices: no room\n", 1)
    old = f"export CUDA_VISIBLE_DEVICES={MIG[0]},{MIG[1]}\n"
    (run_dir / "9.env").write_text(old)
    env = {"SLURM_JOB_ID": "9", "SLURM_LOCALID": "1", "SLURM_GTIDS": "0,1"}
    assert run_script(run_dir, env) == task_prolog(str(run_dir), "9", env) == (old, 0)
    assert run_script(run_dir, {"SLURM_JOB_ID": "10"}) == task_prolog(str(run_dir), "10", {}) == ("", 0)
    assert run_script(run_dir, {"SLURM_JOB_ID": "../9"}) == ("", 0)


HET = {"SLURM_HET_SIZE": "3", "SLURM_JOB_ID_HET_GROUP_0": "20", "SLURM_JOB_ID_HET_GROUP_1": "21",
       "SLURM_JOB_ID_HET_GROUP_2": "22"}


@pytest.mark.parametrize("bound, expect", [
    ({"20": MIG[:1]}, MIG[0]),                        # the leader's node
    ({"21": MIG[1:2]}, MIG[1]),                       # a component's node: its own id, not the leader's
    ({"22": GPU[:1], "21": MIG[1:2]}, MIG[1]),        # two components here: the first one's
    ({"20": MIG[:1], "22": MIG[2:3]}, MIG[0]),        # the leader's wins where it is bound
])
def test_a_heterogeneous_jobs_tasks_find_their_components_devices(tmp_path, bound, expect):
    """Every task of a heterogeneous job sees the leader's SLURM_JOB_ID (as slurmd
    22.05 set it in the TaskProlog of `srun --het-group=0,1`); each component was
    bound under its own id."""
    run_dir = tmp_path / "run"
    for job, uuids in bound.items():
        write_devices(run_dir, job, uuids)
    env = {"SLURM_JOB_ID": "20", **HET}
    assert run_script(run_dir, env) == task_prolog(str(run_dir), "20", env) == \
        (f"export CUDA_VISIBLE_DEVICES={expect}\n", 0)


def test_a_forged_component_id_is_ignored(tmp_path):
    run_dir = tmp_path / "run"
    write_devices(run_dir, "21", MIG[:1])
    for forged in ("21;id", "$(id)", "../21"):
        env = {"SLURM_JOB_ID": "20", "SLURM_HET_SIZE": "2", "SLURM_JOB_ID_HET_GROUP_1": forged}
        assert run_script(run_dir, env) == task_prolog(str(run_dir), "20", env) == ("", 0)


# Lines as the Prolog writes them now: UUID GPU KIND.
ANNOTATED = {"mig": [f"{MIG[0]} 0 1g.10gb", f"{MIG[1]} 0 1g.10gb", f"{MIG[2]} 0 3g.40gb"],
             "gpu": [f"{GPU[0]} 0 gpu", f"{GPU[1]} 1 gpu"],
             "odd": [f"{MIG[0]} 0 1g.10gb extra", f"{MIG[1]} x 1g.10gb", f"{MIG[2]} 1 1G;rm", GPU[0]]}
STEP_ENVS = [{}, {"SLURM_STEP_ID": "1"}, {"SLURM_STEP_ID": "0", "SLURM_STEP_GPUS": "1"},
             {"SLURM_STEP_ID": "2", "SLURM_STEP_GPUS": "0", "SLURM_SHARDS_ON_NODE": "33"},
             {"SLURM_STEP_GPUS": "0,1"}, {"SLURM_STEP_GPUS": "7"}, {"SLURM_STEP_GPUS": "1;id"},
             {"SLURM_STEP_ID": "3", "SLURM_LOCALID": "1", "SLURM_GTIDS": "0,1", "SLURM_STEP_GPUS": "1"}]


@pytest.mark.parametrize("kind", sorted(ANNOTATED))
def test_script_and_python_agree_on_annotated_files(tmp_path, kind):
    run_dir = tmp_path / "run"
    write_devices(run_dir, "7", ANNOTATED[kind])
    for step, bind in itertools.product(STEP_ENVS, BINDS):
        env = {"SLURM_JOB_ID": "7", **step, **({"SLURM_MIG_BIND": bind} if bind else {})}
        assert run_script(run_dir, env) == task_prolog(str(run_dir), "7", env), env


def test_whole_gpu_steps_keep_slurms_split(tmp_path):
    """Two `srun --exact --gres=gpu:1` steps of a `--gres=gpu:2` job: Slurm
    sets SLURM_STEP_GPUS 0 and 1; each step sees its own GPU only."""
    run_dir = tmp_path / "run"
    write_devices(run_dir, "7", ANNOTATED["gpu"])
    for step_gpus, expect in (("0", GPU[0]), ("1", GPU[1]), ("0,1", f"{GPU[0]},{GPU[1]}")):
        env = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_GPUS": step_gpus}
        assert run_script(run_dir, env) == task_prolog(str(run_dir), "7", env) == \
            (f"export CUDA_VISIBLE_DEVICES={expect}\n", 0)
    # a MIG job's steps also see SLURM_STEP_GPUS (from its shards): it never splits MIG devices
    write_devices(run_dir, "8", ANNOTATED["mig"])
    env = {"SLURM_JOB_ID": "8", "SLURM_STEP_GPUS": "1", "SLURM_SHARDS_ON_NODE": "33"}
    assert task_prolog(str(run_dir), "8", env)[0] == f"export CUDA_VISIBLE_DEVICES={','.join(MIG)}\n"
