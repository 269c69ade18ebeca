"""Issue 11: node state on real clusters, one test per numbered defect
(docs/reliability.md lists them). Each failed on the code before the fix."""
import errno
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from harness import calls as hooks
from slurm_mig import config
from slurm_mig.errors import BadInput, NodeProblem, NoFit, StateCorrupt
from slurm_mig.node.context import NodeContext
from slurm_mig.node.occupancy import read_view
from slurm_mig.node.ledger import Ledger
from slurm_mig.nvml.driver import Driver
from slurm_mig.sim import SimNvml, SimStore, init_state
from slurm_mig.sim.control import set_busy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK_PROLOG = os.path.join(REPO, "prolog", "slurm-mig-task-prolog")
LAYOUTS = os.path.join(os.path.dirname(__file__), "data", "mig-parted-h100.yaml")


def env_uuids(cfg, job):
    """The device UUIDs in the job's env file (the first word of each line), read directly (as root)."""
    with open(os.path.join(cfg.run_dir, f"{job}.env")) as f:
        lines = [line.split()[0] for line in f.read().splitlines()]
    assert lines and all(u.startswith(("MIG-", "GPU-")) for u in lines), lines
    return set(lines)


def fail_text(cfg, job):
    path = os.path.join(cfg.run_dir, f"{job}.fail")
    return open(path).read() if os.path.exists(path) else ""


def gis(state, gpu):
    return SimStore(state).read()["gpus"][gpu]["gis"]


def uuids_on(state, gpu):
    return {ci["uuid"] for gi in gis(state, gpu) for ci in gi["cis"]}


# -- 1. a reused job id ------------------------------------------------------------
def test_item1_reused_job_id_gets_its_own_instances(make_node):
    cfg, state = make_node("2xH100-80GB")
    hooks.prolog(cfg, "5", "mig:3g.40gb:2", gpu=0, uid=1000)
    old = env_uuids(cfg, "5")
    hooks.prolog(cfg, "5", "mig:1g.10gb:1", gpu=1, uid=2000)     # no epilog in between
    new = env_uuids(cfg, "5")
    assert len(new) == 1 and not new & old and new <= uuids_on(state, 1)
    assert gis(state, 0) == []                # the old job's idle instances were released
    assert os.stat(os.path.join(cfg.run_dir, "5.env")).st_uid == 2000


def test_item1_reused_job_id_whole_gpu(make_node):
    cfg, state = make_node("2xH100-80GB")
    hooks.run_prolog(cfg, "5", whole_gpus=[0], uid=1000)
    hooks.run_prolog(cfg, "5", whole_gpus=[1], uid=2000)
    assert env_uuids(cfg, "5") == {SimStore(state).read()["gpus"][1]["uuid"]}
    assert SimStore(state).read()["gpus"][0]["mig_current"] == 1      # old job's GPU given back


# -- 2. a busy instance is never handed out -------------------------------------------
def test_item2_busy_instance_of_an_ended_job_is_not_reused(make_node):
    cfg, state = make_node("2xH100-80GB")
    hooks.prolog(cfg, "5", "mig:3g.40gb:1", gpu=0, uid=1000)
    (busy,) = env_uuids(cfg, "5")
    set_busy(state, busy)
    assert hooks.epilog(cfg, "5").state == "releasing"
    hooks.prolog(cfg, "5", "mig:1g.10gb:1", gpu=1, uid=1000)       # a new job 5
    hooks.prolog(cfg, "6", "mig:3g.40gb:2", gpu=0, uid=1001)
    assert busy in uuids_on(state, 0)
    assert not os.path.exists(os.path.join(cfg.run_dir, "6.env")) or busy not in env_uuids(cfg, "6")
    assert any(busy in r.uuids for r in Ledger(cfg.state_dir).live())     # still owned


def test_item2_busy_unowned_instance_is_not_reused(make_node):
    cfg, state = make_node("1xH100-80GB")
    d = Driver(SimNvml(state))
    left = d.create(0, d.gpu(0).model.find_profile("3g.40gb"), 4)     # left by an admin
    set_busy(state, left.uuid)
    hooks.prolog(cfg, "6", "mig:3g.40gb:1", gpu=0)
    assert left.uuid not in env_uuids(cfg, "6") and left.uuid in uuids_on(state, 0)


# -- 3. reconcile vs a job starting during its Slurm query ------------------------------
def test_item3_reconcile_spares_a_job_bound_during_its_squeue(make_node, cli, tmp_path):
    cfg, state = make_node("1xH100-80GB")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    squeue = bindir / "squeue"            # answers after a prolog bound job 5: not running
    squeue.write_text(f"#!/bin/sh\n{sys.executable} -m slurm_mig prolog --job 5 "
                      "--request mig:1g.10gb:1 >/dev/null 2>&1\nexit 0\n")
    squeue.chmod(0o755)
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir, "PATH": f"{bindir}:{os.environ['PATH']}"}
    cli("reconcile", "--node", "n1", env=env, check=0)
    assert Ledger(cfg.state_dir).get("5").state == "bound"
    assert env_uuids(cfg, "5") == uuids_on(state, 0)


# -- 4. a state_dir shared between nodes --------------------------------------------------
def test_item4_shared_state_dir_does_not_double_bind(make_node, tmp_path, monkeypatch):
    cfg_a, state_a = make_node("1xH100-80GB")
    state_b = str(tmp_path / "node-b.json")
    init_state(state_b, "1xH100-80GB")
    cfg_b = cfg_a._replace(backend=f"sim:{state_b}", run_dir=str(tmp_path / "run-b"))
    monkeypatch.setenv("SLURMD_NODENAME", "node-a")
    hooks.prolog(cfg_a, "5", "mig:3g.40gb:1")
    held = env_uuids(cfg_a, "5")
    monkeypatch.setenv("SLURMD_NODENAME", "node-b")
    hooks.prolog(cfg_b, "6", "mig:3g.40gb:1")
    hooks.reconcile(cfg_b)
    monkeypatch.setenv("SLURMD_NODENAME", "node-a")
    assert Ledger(cfg_a.state_dir).get("5").state == "bound"
    hooks.prolog(cfg_a, "7", "mig:3g.40gb:1")
    assert not env_uuids(cfg_a, "7") & held and held <= uuids_on(state_a, 0)


# -- 5. directories --------------------------------------------------------------------------
def test_item5_world_writable_run_dir_is_refused(make_node):
    cfg, state = make_node()
    os.makedirs(cfg.run_dir)
    os.chmod(cfg.run_dir, 0o1777)
    with pytest.raises(NodeProblem, match=f"run_dir {cfg.run_dir} is writable by group or others"):
        hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    # found before any instance was made: nothing is left for reconcile, no record either
    assert uuids_on(state, 0) == set() and Ledger(cfg.state_dir).get("1") is None


def test_item5_user_state_dir_and_planted_links_are_refused(make_node, tmp_path):
    cfg, _ = make_node()
    os.makedirs(cfg.state_dir)
    os.chown(cfg.state_dir, 1234, 1234)
    with pytest.raises(NodeProblem, match=f"state_dir {cfg.state_dir} is owned by uid 1234"):
        hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    os.chown(cfg.state_dir, 0, 0)
    target = tmp_path / "elsewhere"
    os.symlink(target, os.path.join(cfg.state_dir, "node.lock"))
    with pytest.raises(NodeProblem, match="symbolic link"):
        hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    assert not target.exists()
    os.unlink(os.path.join(cfg.state_dir, "node.lock"))
    target.mkdir()
    shutil.rmtree(os.path.join(cfg.state_dir, "jobs"))          # with its closed/ folder
    os.symlink(target, os.path.join(cfg.state_dir, "jobs"))
    with pytest.raises(NodeProblem, match="jobs is a symbolic link"):
        hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    assert os.listdir(target) == []


@pytest.mark.parametrize("how", ["sh", "python"])
def test_item5_task_prolog_ignores_planted_files(make_node, how):
    cfg, _ = make_node()
    os.makedirs(cfg.run_dir, mode=0o755)
    planted = os.path.join(cfg.run_dir, "9.env")
    with open(planted, "w") as f:
        f.write("export LD_PRELOAD=/tmp/evil.so\n")
    os.chown(planted, 4321, 4321)                     # another user's file
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_ID": "9", "SLURM_JOB_UID": "1000",
           "SLURM_MIG_RUN_DIR": cfg.run_dir}
    argv = [TASK_PROLOG] if how == "sh" else [sys.executable, "-m", "slurm_mig.hooks.main", "task-prolog"]
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert "LD_PRELOAD" not in p.stdout, p.stdout
    os.chown(planted, 1000, 1000)                     # the job's own user: printed
    assert "LD_PRELOAD" in subprocess.run(argv, env=env, capture_output=True, text=True).stdout


# -- 6. an Epilog while the Prolog waits for room ----------------------------------------------
def test_item6_epilog_during_wait_for_room_leaves_nothing_bound(make_node):
    cfg, state = make_node("1xH100-80GB", wait_for_room=4)
    hooks.prolog(cfg, "1", "mig:7g.80gb:1")
    waiting = threading.Thread(target=hooks.prolog, args=(cfg, "2", "mig:1g.10gb:1"))
    waiting.start()
    time.sleep(0.8)
    hooks.epilog(cfg, "2")            # job 2 ends (cancelled) while its prolog waits
    hooks.epilog(cfg, "1")            # room appears
    waiting.join()
    assert gis(state, 0) == [] and Ledger(cfg.state_dir).live() == []
    assert not os.path.exists(os.path.join(cfg.run_dir, "2.env"))


# -- 7. reconcile goes past busy instances; a timer runs it ----------------------------------------
def test_item7_reconcile_goes_past_busy_instances(make_node, cli):
    cfg, state = make_node("1xH100-80GB")
    d = Driver(SimNvml(state))
    busy = d.create(0, d.gpu(0).model.find_profile("1g.10gb"), 0)
    idle = [d.create(0, d.gpu(0).model.find_profile("1g.10gb"), s) for s in (1, 2)]
    set_busy(state, busy.uuid)
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir, "PATH": "/usr/bin:/bin"}
    p = cli("reconcile", "--node", "n1", env=env, check=0)
    assert uuids_on(state, 0) == {busy.uuid} and not {i.uuid for i in idle} & uuids_on(state, 0)
    assert f"kept unowned 1g.10gb GI {busy.gi_id} ({busy.uuid}): in use by pids" in p.stdout
    service = open(os.path.join(REPO, "slurm_mig", "systemd", "slurm-mig-reconcile.service")).read()
    timer = open(os.path.join(REPO, "slurm_mig", "systemd", "slurm-mig-reconcile.timer")).read()
    assert "ExecStart=@SLURM_MIG@ reconcile\n" in service and "OnUnitActiveSec=" in timer


# -- 8. honest errors ---------------------------------------------------------------------------------
def test_item8_run_dir_that_is_a_file_is_one_line(make_node, cli):
    cfg, _ = make_node()
    open(cfg.run_dir, "w").close()
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir}
    p = cli("prolog", "--job", "1", "--request", "mig:1g.10gb:1", env=env, check=1)
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert f"run_dir {cfg.run_dir} is not a directory" in p.stderr


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_item8_write_errors_name_path_and_cause(make_node, monkeypatch, code):
    cfg, _ = make_node()
    real = os.fsync

    def fsync(fd):
        if os.path.realpath(f"/proc/self/fd/{fd}").startswith(cfg.state_dir):
            raise OSError(code, os.strerror(code))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(NodeProblem) as e:
        hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    assert os.strerror(code) in str(e.value) and cfg.state_dir in str(e.value)
    assert errno.errorcode[code] in str(e.value) and "\n" not in str(e.value)


def test_item8_dry_run_reconcile_works_on_a_read_only_state_dir(make_node, monkeypatch):
    cfg, _ = make_node()
    hooks.prolog(cfg, "1", "mig:1g.10gb:1")

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    real_open = os.open
    monkeypatch.setattr(os, "chmod", read_only)
    monkeypatch.setattr(os, "mkdir", read_only)
    monkeypatch.setattr(os, "open", lambda p, flags, *a: read_only() if flags & (
        os.O_CREAT | os.O_WRONLY | os.O_RDWR) and str(p).startswith(cfg.state_dir) else real_open(p, flags, *a))
    assert hooks.reconcile(cfg, dry_run=True, active_jobs=set()) == [
        "job 1: release 1 instance(s) (bound)"]


def test_item8_unreadable_ledger_is_said_not_guessed(make_node, monkeypatch):
    cfg, _ = make_node()
    hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    real = os.listdir

    def listdir(path="."):
        if str(path).startswith(cfg.state_dir):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path)
    monkeypatch.setattr(os, "listdir", listdir)
    from slurm_mig.node.status import status_doc
    doc, problem = status_doc(NodeContext(cfg))
    assert "Permission denied" in problem and cfg.state_dir in problem
    assert [(i["owner"], i["owner_kind"]) for i in doc[0]["instances"]] == [(None, "unreadable")]
    with pytest.raises(NodeProblem, match="cannot read the ledger"):
        read_view(NodeContext(cfg))                      # what `plan` plans on


# -- 9. config ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line,needle", [
    ("lock_timeout = true", "lock_timeout = True: must be a number"),
    ("epilog_retries = 2.9", "epilog_retries = 2.9: must be a whole number"),
    ("wait_for_room = inf", "wait_for_room = inf: must be a finite number"),
    ('state_dir = "var/lib/x"', "state_dir = 'var/lib/x': must be an absolute path"),
    ("gpu_fallback = 1", "gpu_fallback = 1: must be true or false"),
    ('wait_for_room = "30"', "wait_for_room = '30': must be a TOML number, not a string: drop the quotes"),
    ('steer = "false"', "steer = 'false': must be a TOML boolean \\(true or false\\), not a string"),
    ('max_requeues = "5"', "max_requeues = '5': must be a TOML number"),
    ('room_field = "Extra"', 'room_field = \'Extra\': must be one of "extra", "comment", ""'),
])
def test_item9_config_file_values_are_strict(tmp_path, line, needle):
    conf = tmp_path / "c.toml"
    conf.write_text(line + "\n")
    with pytest.raises(BadInput, match=f"config file {conf}: {needle}"):
        config.load(str(conf))


def test_item9_environment_and_options_are_checked_and_named(tmp_path, monkeypatch, cli):
    monkeypatch.setenv("SLURM_MIG_STATE_DIR", "relative/dir")
    with pytest.raises(BadInput, match="environment variable SLURM_MIG_STATE_DIR: state_dir"):
        config.load()
    monkeypatch.delenv("SLURM_MIG_STATE_DIR")
    p = cli("prolog", "--job", "1", "--request", "mig:1g.10gb:1", "--wait", "-1",
            env={"SLURM_MIG_CONFIG": "", "SLURM_MIG_STATE_DIR": str(tmp_path / "s")}, check=2)
    assert "command-line option for wait_for_room: wait_for_room = -1.0" in p.stderr


def test_item9_gres_conf_prints_timeouts_beyond_lock_and_wait(tmp_path, cli):
    conf = tmp_path / "c.toml"
    conf.write_text("lock_timeout = 120\nwait_for_room = 30\n")
    p = cli("gres-conf", "--from-spec", "1xH100-80GB", env={"SLURM_MIG_CONFIG": str(conf)}, check=0)
    timeout = int(p.stdout.split("PrologEpilogTimeout=")[1].split()[0])
    assert timeout > 2 * 120 + 30
    readme = open(os.path.join(REPO, "README.md")).read()
    assert "PrologEpilogTimeout=120\n" not in readme


# -- 10. messages ---------------------------------------------------------------------------------------
def test_item10_never_fits_says_the_limit_and_does_not_wait(make_node):
    cfg, _ = make_node("1xH100-80GB", wait_for_room=10)
    t0 = time.monotonic()
    hooks.prolog(cfg, "1", "mig:1g.10gb:8", gpu=0)
    assert time.monotonic() - t0 < 3
    assert "at most 7 x 1g.10gb on one H100-SXM5-80GB" in fail_text(cfg, "1")
    with pytest.raises(NoFit, match="at most 7 x 1g.10gb on one H100-SXM5-80GB"):
        from slurm_mig.core import planner
        planner.plan(read_view(NodeContext(cfg)), {"1g.10gb": 8}, 0)


def test_item10_layout_that_never_fits_names_the_model(tmp_path, cli):
    state = str(tmp_path / "a100.json")
    init_state(state, "1xA100-40GB")
    env = {"SLURM_MIG_BACKEND": f"sim:{state}", "SLURM_MIG_STATE_DIR": str(tmp_path / "s")}
    p = cli("apply", "-f", LAYOUTS, "-c", "all-1g.10gb", env=env)
    assert p.returncode != 0 and "can never fit" in p.stderr and "on one A100-40GB" in p.stderr, p.stderr


def test_item10_gpu_held_whole_is_named(make_node):
    cfg, _ = make_node("2xH100-80GB")
    hooks.run_prolog(cfg, "1", whole_gpus=[0])
    hooks.prolog(cfg, "2", "mig:1g.10gb:1", gpu=0)
    assert "GPU 0 is held whole by job 1" in fail_text(cfg, "2")


def test_item4_records_stay_ours_when_the_node_name_differs(make_node, monkeypatch):
    """slurmd names the node (SLURMD_NODENAME), an admin's shell or the timer
    does not: GPU UUIDs, not the name, decide which records are this node's."""
    cfg, state = make_node("1xH100-80GB")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu-n1")
    hooks.prolog(cfg, "5", "mig:3g.40gb:1")
    monkeypatch.delenv("SLURMD_NODENAME")
    hooks.reconcile(cfg)
    assert Ledger(cfg.state_dir).get("5").state == "bound"
    assert env_uuids(cfg, "5") == uuids_on(state, 0)


def test_item5_a_directory_planted_as_the_env_file_prints_nothing(tmp_path):
    """The Python TaskProlog reads only regular files: a directory in the env
    file's place is ignored, not a traceback."""
    run = tmp_path / "run"
    (run / "77.env").mkdir(parents=True)
    from slurm_mig.node.jobfiles import task_prolog
    assert task_prolog(str(run), "77", env={}, uid=0) == ("", 0)


# -- ledger history: what hooks read grows with open records, not with closed ones ---------------
def test_closed_records_live_apart_and_are_never_read_by_hooks(make_node):
    cfg, _ = make_node()
    hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    hooks.epilog(cfg, "1")
    jobs = os.path.join(cfg.state_dir, "jobs")
    assert sorted(os.listdir(jobs)) == ["closed"] and os.listdir(os.path.join(jobs, "closed")) == ["1.json"]
    with open(os.path.join(jobs, "closed", "2.json"), "w") as f:
        f.write("{not json")                       # a closed record no hook reads
    hooks.prolog(cfg, "3", "mig:1g.10gb:1")
    assert [r.job for r in Ledger(cfg.state_dir).live()] == ["3"]
    assert Ledger(cfg.state_dir).get("1").state == "released"


def test_a_crash_between_closing_and_removing_keeps_the_newer_record(make_node):
    from slurm_mig.fsutil import write_json
    cfg, _ = make_node()
    hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    ledger = Ledger(cfg.state_dir)
    open_copy = ledger.get("1").to_dict()
    hooks.epilog(cfg, "1")
    write_json(os.path.join(cfg.state_dir, "jobs", "1.json"), open_copy)     # the stale open one is back
    assert ledger.get("1").state == "released" and ledger.live() == []
    hooks.prolog(cfg, "2", "mig:7g.80gb:1")        # the GPU is free: the stale record holds nothing


def test_prune_goes_by_file_time_and_moves_an_older_versions_closed_records(make_node):
    from slurm_mig.fsutil import write_json
    cfg, _ = make_node()
    hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    hooks.epilog(cfg, "1")
    ledger = Ledger(cfg.state_dir)
    old = ledger.get("1").to_dict()
    old.update(job="7", updated=time.time() - 2 * 86400)
    write_json(os.path.join(cfg.state_dir, "jobs", "7.json"), old)          # as an earlier version kept it
    recent = os.path.join(cfg.state_dir, "jobs", "closed", "1.json")
    with ledger.lock():
        assert ledger.prune() == 1
    assert os.listdir(os.path.join(cfg.state_dir, "jobs", "closed")) == ["1.json"] and os.path.exists(recent)
    assert sorted(os.listdir(os.path.join(cfg.state_dir, "jobs"))) == ["closed"]


# -- records one version down and up --------------------------------------------------------------
LEDGER_0_1_0 = os.path.join(os.path.dirname(__file__), "data", "ledger", "0.1.0")


@pytest.fixture
def old_node(tmp_path):
    """A node whose ledger slurm-mig 0.1.0 wrote (tests/data/ledger/0.1.0/README.md)."""
    from slurm_mig.config import Config
    state = tmp_path / "state"
    shutil.copytree(os.path.join(LEDGER_0_1_0, "jobs"), state / "jobs")
    os.chmod(state, 0o700)
    shutil.copy(os.path.join(LEDGER_0_1_0, "gpus.json"), tmp_path / "gpus.json")
    return Config(backend=f"sim:{tmp_path}/gpus.json", state_dir=str(state), run_dir=str(tmp_path / "run"),
                  wait_for_room=0, epilog_retries=0, epilog_retry_delay=0)


def test_records_of_the_previous_release_are_read_and_carried_on(old_node, cli):
    ledger = Ledger(old_node.state_dir)
    assert {r.job: r.state for r in ledger.live()} == {"1": "bound", "4": "releasing"}
    assert [ledger.get(j).state for j in ("2", "3")] == ["released", "failed"]
    released = hooks.epilog(old_node, "1")             # the 3g.40gb goes, the record closes
    assert released.state == "released" and ledger.get("1").to_dict()["schema"] == "1.3"
    with ledger.lock():
        ledger.prune()                                  # 0.1.0 kept closed records among the open ones
    assert sorted(os.listdir(os.path.join(old_node.state_dir, "jobs"))) == ["4.json", "closed"]
    assert sorted(os.listdir(os.path.join(old_node.state_dir, "jobs", "closed"))) == ["1.json", "2.json", "3.json"]
    hooks.prolog(old_node, "5", "mig:3g.40gb:1")       # where job 1's instance was


def test_a_newer_minor_records_fields_are_kept_and_ignored(old_node):
    from slurm_mig.fsutil import read_json, write_json
    path = os.path.join(old_node.state_dir, "jobs", "1.json")
    raw = read_json(path, "record")
    write_json(path, {**raw, "schema": "1.7", "future_field": {"kept": [1, 2]}})
    ledger = Ledger(old_node.state_dir)
    rec = ledger.get("1")
    assert rec.state == "bound" and rec.request == {"3g.40gb": 1}
    with ledger.lock():
        ledger.put(rec)
    assert read_json(path, "record")["future_field"] == {"kept": [1, 2]}


def test_a_record_changed_by_hand_is_quarantined_and_its_instance_kept(make_node, cli):
    """An admin 'closes' a running job's record by hand: its checksum no longer
    matches, so it is not believed; the instance is kept, a dry run says so
    (never 'destroy'), and a reconcile that cannot ask Slurm keeps it."""
    from slurm_mig.fsutil import read_json, write_json
    cfg, state = make_node()
    hooks.prolog(cfg, "1", "mig:3g.40gb:1")
    (uuid,) = env_uuids(cfg, "1")
    path = os.path.join(cfg.state_dir, "jobs", "1.json")
    write_json(path, {**read_json(path, "record"), "state": "released"})
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir, "SLURM_MIG_RUN_DIR": cfg.run_dir}
    dry = cli("reconcile", "--dry-run", env=env, check=0).stdout
    assert "kept unowned 3g.40gb GI" in dry and "a quarantined record may own it" in dry and "destroy" not in dry
    hooks.reconcile(cfg)
    assert uuid in uuids_on(state, 0) and os.listdir(os.path.join(cfg.state_dir, "quarantine"))


def test_a_record_an_older_release_rewrote_is_read(make_node):
    """The previous release keeps the checksum as an unknown field but writes
    its own schema (1.1) and content: the stale checksum is not held against it."""
    from slurm_mig.fsutil import read_json, write_json
    cfg, _ = make_node()
    hooks.prolog(cfg, "1", "mig:3g.40gb:1")
    path = os.path.join(cfg.state_dir, "jobs", "1.json")
    write_json(path, {**read_json(path, "record"), "schema": "1.1", "reason": "touched by 1.1"})
    rec = Ledger(cfg.state_dir).get("1")
    assert rec.state == "bound" and rec.reason == "touched by 1.1" and "checksum" not in rec.extra


def test_a_newer_major_record_is_refused_naming_the_file_and_the_fix(old_node):
    from slurm_mig.fsutil import read_json, write_json
    path = os.path.join(old_node.state_dir, "jobs", "1.json")
    write_json(path, {**read_json(path, "record"), "schema": "2.0"})
    with pytest.raises(NodeProblem, match=f"ledger record {path} has schema 2.0, which this slurm-mig "
                       r"\(schema 1.3\) cannot read: a newer slurm-mig wrote it; install that version again"):
        Ledger(old_node.state_dir).get("1")


# -- GPUs that left the node ----------------------------------------------------------------------
def test_a_replaced_gpu_never_drains_the_node_and_its_records_are_closed(make_node, cli):
    cfg, state = make_node()
    hooks.prolog(cfg, "1", "mig:3g.40gb:1")
    init_state(state, "1xH100-80GB")                   # the board swapped: a new UUID, no instances
    hooks.epilog(cfg, "1")                              # no NodeProblem: the Epilog exits 0
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir, "SLURMD_NODENAME": Ledger(cfg.state_dir).node}
    p = cli("reconcile", env=env, check=0)
    assert "job 1: GPU(s) GPU-" in p.stdout and "are no longer on this node (replaced or removed); " \
        "record closed" in p.stdout
    assert NodeContext(cfg).ledger.stranded() == []
    hooks.prolog(cfg, "1", "mig:7g.80gb:1")            # Slurm reuses the id on the new GPU: all of it is free
    assert [r.job for r in NodeContext(cfg).ledger.live()] == ["1"]


def test_a_hook_closes_what_a_lost_gpu_left(make_node):
    cfg, state = make_node()
    hooks.prolog(cfg, "1", "mig:3g.40gb:1")
    init_state(state, "1xH100-80GB")
    hooks.prolog(cfg, "2", "mig:1g.10gb:1")            # its reconcile closes job 1's record
    ledger = NodeContext(cfg).ledger
    assert [r.job for r in ledger.live()] == ["2"] and ledger.stranded() == []
    assert ledger.get("1") is None


def test_another_nodes_record_is_listed_and_left_alone(make_node, cli):
    from slurm_mig.fsutil import read_json, write_json
    from slurm_mig.node.ledger import seal
    cfg, _ = make_node()
    hooks.prolog(cfg, "1", "mig:3g.40gb:1")
    path = os.path.join(cfg.state_dir, "jobs", "1.json")
    write_json(path, seal({**read_json(path, "record"), "node": "gpu99", "gpu_uuids": ["GPU-elsewhere"]}))
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir, "SLURM_MIG_RUN_DIR": cfg.run_dir}
    p = cli("reconcile", "--dry-run", env=env, check=0)
    assert "record 1 is node gpu99's (GPUs GPU-elsewhere are not here): left alone" in p.stdout
    with pytest.raises(NodeProblem, match="state_dir .* is shared or copied"):
        NodeContext(cfg).ledger.get("1")


def test_gres_conf_timeout_outlasts_the_interactive_wait_batch_start_does_not_grow(tmp_path, cli):
    conf = tmp_path / "c.toml"
    conf.write_text("lock_timeout = 120\nwait_for_room = 30\ninteractive_wait = 3600\n")
    p = cli("gres-conf", "--from-spec", "1xH100-80GB", env={"SLURM_MIG_CONFIG": str(conf)}, check=0)
    prolog = int(p.stdout.split("PrologEpilogTimeout=")[1].split()[0])
    batch = int(p.stdout.split("BatchStartTimeout=")[1].split()[0])
    assert prolog > 2 * 120 + 3600 and 2 * 120 + 30 < batch < 3600
