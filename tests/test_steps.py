"""Steps with a GPU request of their own (`srun --gres=mig:...` inside a job):
each gets instances of the profiles it asked for, distinct from concurrent
steps' (node/stepclaims.py), read from Slurm's answer for the step."""
import os
import stat
import subprocess

import pytest

from slurm_mig.errors import BadInput
from slurm_mig.node import stepclaims
from slurm_mig.node.jobfiles import Device, task_prolog
from slurm_mig.slurm.jobinfo import parse_step_request

A, B, C = (f"MIG-{c * 8}-0000-4000-8000-00000000000{n}" for n, c in ((1, "a"), (2, "b"), (3, "c")))
DEVICES = [Device(A, 0, "1g.10gb"), Device(B, 0, "1g.10gb"), Device(C, 0, "3g.40gb")]


@pytest.fixture
def steps_dir(tmp_path):
    path = tmp_path / "7.steps"
    path.mkdir(mode=0o700)
    return str(path)


@pytest.fixture
def task(monkeypatch):
    """Run the next claim as a task whose process is a fresh `sleep`; returns it."""
    procs = []

    def start():
        p = subprocess.Popen(["sleep", "60"])
        procs.append(p)
        monkeypatch.setattr(stepclaims.os, "getppid", lambda: p.pid)
        return p
    yield start
    for p in procs:
        p.kill()
        p.wait()


def claim(steps_dir, step, request):
    return stepclaims.step_devices(steps_dir, os.getuid(), step, DEVICES, lambda: request)


def test_concurrent_steps_get_distinct_instances_of_their_profiles(steps_dir, task):
    task()
    assert claim(steps_dir, "0", {"1g.10gb": 1}) == ([A], None)
    task()
    assert claim(steps_dir, "1", {"1g.10gb": 1}) == ([B], None)
    task()
    assert claim(steps_dir, "2", {"3g.40gb": 1}) == ([C], None)


def test_a_steps_other_tasks_find_its_claim_without_asking(steps_dir, task):
    task()
    assert claim(steps_dir, "4", {"1g.10gb": 2}) == ([A, B], None)
    task()
    asked = []
    got = stepclaims.step_devices(steps_dir, os.getuid(), "4", DEVICES, lambda: asked.append(1) or {})
    assert got == ([A, B], None) and not asked


def test_an_ended_steps_instances_are_free_again(steps_dir, task):
    first = task()
    assert claim(steps_dir, "0", {"1g.10gb": 1}) == ([A], None)
    first.kill()
    first.wait()
    task()
    assert claim(steps_dir, "1", {"1g.10gb": 1}) == ([A], None)


def test_claims_outliving_their_steps_are_shared_and_said(steps_dir, task):
    task()
    claim(steps_dir, "0", {"1g.10gb": 2})
    task()
    uuids, note = claim(steps_dir, "1", {"1g.10gb": 1})
    assert uuids == [A] and "no free instance of 1g.10gb" in note


def test_anything_odd_leaves_the_step_all_the_jobs_devices_and_says_why(tmp_path, steps_dir, task):
    task()
    everything = [A, B, C]
    assert claim(steps_dir, "0", {}) == (everything, None)              # asked for no MIG device
    uuids, note = claim(str(tmp_path / "missing"), "0", {"1g.10gb": 1})
    assert uuids == everything and "step 0 sees all the job's devices" in note
    os.chmod(steps_dir, 0o777)                                             # not the Prolog's
    uuids, note = claim(steps_dir, "0", {"1g.10gb": 1})
    assert uuids == everything and "not the job's own directory" in note
    os.chmod(steps_dir, 0o700)
    os.symlink(steps_dir, str(tmp_path / "link"))
    assert claim(str(tmp_path / "link"), "0", {"1g.10gb": 1})[0] == everything

    def unreachable():
        raise BadInput("squeue failed")
    uuids, note = stepclaims.step_devices(steps_dir, os.getuid(), "0", DEVICES, unreachable)
    assert uuids == everything and "squeue failed" in note


def test_a_damaged_claims_file_is_started_afresh(steps_dir, task):
    with open(os.path.join(steps_dir, stepclaims.CLAIMS), "w") as f:
        f.write('{"' + A + '": {"step": 3}, "x": [1, 2]')
    task()
    assert claim(steps_dir, "0", {"1g.10gb": 1}) == ([A], None)


def test_task_prolog_asks_slurm_only_for_a_step_with_a_request_of_its_own(tmp_path, task):
    run_dir = tmp_path / "run"
    (run_dir / "7.steps").mkdir(parents=True, mode=0o700)
    (run_dir / "7.env").write_text("".join(f"{d.uuid} {d.gpu} {d.kind}\n" for d in DEVICES))
    asked = []

    def ask(job, step):
        asked.append((job, step))
        return {"3g.40gb": 1}
    task()
    own = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "5"}
    assert task_prolog(str(run_dir), "7", own, step_request=ask) == (f"export CUDA_VISIBLE_DEVICES={C}\n", 0)
    assert asked == [("7", "5")]
    everything = f"export CUDA_VISIBLE_DEVICES={A},{B},{C}\n"
    for env in ({"SLURM_JOB_ID": "7"},                                              # the batch step
                {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "6", "SLURM_SHARDS_ON_NODE": "33"}):  # no request
        assert task_prolog(str(run_dir), "7", env, step_request=ask) == (everything, 0)
    assert asked == [("7", "5")]


def test_the_steps_request_is_read_from_its_own_line():
    out = ("12.0|gres:mig:3g.40gb:1\n12.1|gres/mig:1g.10gb:1,gres/mig:1g.10gb:1,gres/shard:8\n"
           "12.batch|(null)\n12.10|gres:mig:1g.10gb:2\n")
    assert parse_step_request(out, "12", "0") == {"3g.40gb": 1}
    assert parse_step_request(out, "12", "1") == {"1g.10gb": 2}
    assert parse_step_request(out, "12", "10") == {"1g.10gb": 2}
    assert parse_step_request("12.2|(null)\n", "12", "2") == {}
    with pytest.raises(BadInput):
        parse_step_request(out, "12", "3")
    with pytest.raises(BadInput):
        parse_step_request("12.3|gres:mig:1g;id\n", "12", "3")


def test_the_prolog_makes_the_users_claims_directory_and_the_epilog_removes_it(make_node, tmp_path):
    from harness import calls as hooks
    cfg, _ = make_node("1xH100-80GB")
    hooks.prolog(cfg, "5", "mig:1g.10gb:2", gpu=0, uid=2000)
    steps = os.path.join(cfg.run_dir, "5.steps")
    st = os.lstat(steps)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 2000 and st.st_mode & 0o777 == 0o700
    with open(os.path.join(cfg.run_dir, "5.env")) as f:
        assert [line.split()[1:] for line in f] == [["0", "1g.10gb"], ["0", "1g.10gb"]]
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    os.symlink(victim, os.path.join(steps, "planted"))        # the user's directory: anything in it
    hooks.epilog(cfg, "5")
    assert not os.path.lexists(steps) and (victim / "keep").exists()


def test_a_config_the_user_cannot_read_leaves_the_task_prolog_working(tmp_path):
    """The TaskProlog runs as the job's user; the config may be root's alone."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "7.env").write_text(f"{A} 0 1g.10gb\n")
    conf = tmp_path / "config.toml"
    conf.write_text("run_dir = '/nonexistent'\n")
    conf.chmod(0o600)
    script = ("import os, sys; os.setgid(65534); os.setuid(65534); "
              "from slurm_mig.hooks.main import main; sys.exit(main(['task-prolog']))")
    import shutil
    import slurm_mig
    # a copy of the package nobody can read: the checkout may live where nobody can (root's home)
    shutil.copytree(os.path.dirname(slurm_mig.__file__), tmp_path / "src" / "slurm_mig",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_UID": str(os.getuid()), "SLURM_MIG_CONFIG": str(conf),
           "SLURM_MIG_RUN_DIR": str(run_dir), "PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(tmp_path / "src")}
    for d in (tmp_path, *tmp_path.parents):
        os.chmod(d, os.stat(d).st_mode | 0o005)          # nobody may reach the files, as a user would
    # the system's python3: the development venv's may live where nobody can read
    p = subprocess.run(["/usr/bin/python3", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout) == (0, f"export CUDA_VISIBLE_DEVICES={A}\n"), p.stderr
