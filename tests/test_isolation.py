"""Device isolation on a simulated node (node/isolation.py, isolate_devices):
the job's GI and CI cap nodes are its uid's, mode 0400, every other one is
root's; another user opening them gets EACCES (a fake node one may open gives
ENXIO: no driver); the Epilog gives them back to root before destroying."""
import errno
import os
import re
import shutil
import stat
import tempfile

import pytest

from harness import calls as hooks, users
import slurm_mig
from slurm_mig.config import Config, sim_root, with_sim_roots
from slurm_mig.core import caps
from slurm_mig.node import isolation
from slurm_mig.node.context import NodeContext
from slurm_mig.node.jobfiles import task_prolog
from slurm_mig.node.ledger import Ledger
from slurm_mig.node.procfs import read_mig_minors
from slurm_mig.sim import init_state

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mknod, chown and setuid need root")

ALICE, BOB, EVE = 60001, 60002, 60003       # no passwd entries: slurmd's SLURM_JOB_GID names the group
GID = 60000


@pytest.fixture
def make(monkeypatch):
    """make(gpus) -> Config of a simulated node with isolate_devices, in a
    directory every user can traverse (pytest's tmp_path is root-only: a
    denial there would say nothing about the nodes)."""
    tops = []

    def node(gpus="2xH100-80GB"):
        top = tempfile.mkdtemp(prefix="slurm-mig-isolation-")
        tops.append(top)
        os.chmod(top, 0o755)
        state = os.path.join(top, "node.json")
        init_state(state, gpus)
        return Config(**with_sim_roots(dict(
            backend=f"sim:{state}", state_dir=os.path.join(top, "state"), run_dir=os.path.join(top, "run"),
            wait_for_room=0, epilog_retries=0, isolate_devices=True)))
    monkeypatch.setenv("SLURM_JOB_GID", str(GID))
    yield node
    for top in tops:
        shutil.rmtree(top)


@pytest.fixture
def node(make):
    return make()


def prolog(cfg, monkeypatch, job, spec, uid, gpu=0):
    monkeypatch.setenv("SLURM_JOB_UID", str(uid))
    hooks.prolog(cfg, job, spec, gpu=gpu, uid=uid)


def all_caps(cfg, gpus=(0, 1)):
    """Path -> stat of every GI/CI cap node of these GPUs."""
    minors = read_mig_minors(cfg.proc_root)
    return {caps.node_path(cfg.dev_root, m): os.lstat(caps.node_path(cfg.dev_root, m))
            for k, m in minors.items() if caps.key_gpu(k) in gpus}


def job_caps(cfg, job):
    ctx = NodeContext(cfg)
    per_entry = isolation.cap_minors(ctx, Ledger(cfg.state_dir).get(job).instances)
    return sorted(caps.node_path(cfg.dev_root, m) for keys in per_entry.values() for m in keys)


def owner(st):
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def open_as(uid, path):
    return users.open_as(uid, GID, path)


def test_a_job_opens_only_its_own_cap_nodes_until_its_epilog(node, monkeypatch):
    isolation.setup(NodeContext(node))
    assert {owner(st) for st in all_caps(node).values()} == {(0, 0, 0o400)}
    prolog(node, monkeypatch, "11", "mig:3g.40gb:1,mig:1g.10gb:1", ALICE, gpu=0)
    prolog(node, monkeypatch, "12", "mig:2g.20gb:1", BOB, gpu=1)
    alice, bob = job_caps(node, "11"), job_caps(node, "12")
    assert len(alice) == 4 and len(bob) == 2          # a GI and a CI node per instance
    for path, st in all_caps(node).items():
        want = (ALICE, GID, 0o400) if path in alice else (BOB, GID, 0o400) if path in bob else (0, 0, 0o400)
        assert owner(st) == want, path
    for path in alice:
        assert open_as(ALICE, path) == errno.ENXIO          # allowed; the fake device has no driver
        assert open_as(BOB, path) == errno.EACCES           # denied
    assert open_as(ALICE, bob[0]) == errno.EACCES
    assert open_as(ALICE, sorted(set(all_caps(node)) - set(alice) - set(bob))[0]) == errno.EACCES
    # ModifyDeviceFiles=1 (the driver's default): each capability of the job says 0
    rec = Ledger(node.state_dir).get("11")
    for keys in isolation.cap_minors(NodeContext(node), rec.instances).values():
        for key in keys.values():
            assert caps.field(open(caps.proc_path(node.proc_root, key)).read(), "DeviceFileModify") == 0
    hooks.epilog(node, "11")
    assert all(owner(os.lstat(p)) == (0, 0, 0o400) for p in alice)
    assert [open_as(ALICE, p) for p in alice] == [errno.EACCES] * 4
    assert owner(os.lstat(bob[0])) == (BOB, GID, 0o400)     # another job's stay its own
    hooks.epilog(node, "12")
    assert {owner(st) for st in all_caps(node).values()} == {(0, 0, 0o400)}


def test_with_modify_device_files_off_the_proc_files_are_left_alone(node, monkeypatch):
    with open(caps.params_path(node.proc_root), "w") as f:
        f.write("ModifyDeviceFiles: 0\n")
    isolation.setup(NodeContext(node))
    prolog(node, monkeypatch, "13", "mig:1g.10gb:1", ALICE)
    (keys,) = isolation.cap_minors(NodeContext(node), Ledger(node.state_dir).get("13").instances).values()
    for key in keys.values():
        st = os.stat(caps.proc_path(node.proc_root, key))
        assert stat.S_IMODE(st.st_mode) == 0o444          # not made writable, not written
    assert all(owner(os.lstat(p))[0] == ALICE for p in job_caps(node, "13"))


def hold_open(uid, paths):
    """A process of `uid` holding O_PATH fds on `paths` (no driver needed)
    until the returned function is called."""
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(done_w)
        os.setgroups([])
        os.setgid(GID)
        os.setuid(uid)
        fds = [os.open(p, os.O_PATH) for p in paths]
        os.write(ready_w, b"x")
        os.read(done_r, 1)
        for fd in fds:
            os.close(fd)
        os._exit(0)
    os.close(ready_w)
    os.close(done_r)
    assert os.read(ready_r, 1) == b"x"

    def stop():
        os.close(done_w)
        os.waitpid(pid, 0)
    return pid, stop


def test_a_node_another_user_holds_open_fails_the_job_alone(node, monkeypatch):
    isolation.setup(NodeContext(node))
    pid, stop = hold_open(EVE, list(all_caps(node, gpus=(0,))))   # opened earlier (before node-setup, say)
    try:
        prolog(node, monkeypatch, "14", "mig:1g.10gb:1", ALICE)
    finally:
        stop()
    text, code = task_prolog(node.run_dir, "14", uid=ALICE)
    assert code == 1 and f"pid {pid} (uid {EVE}) holds" in text, text
    rec = Ledger(node.state_dir).get("14")
    assert rec.state == "releasing" and rec.instances          # not bound; the epilog cleans
    assert {owner(os.lstat(p)) for p in job_caps(node, "14")} == {(0, 0, 0o400)}
    hooks.epilog(node, "14")
    assert Ledger(node.state_dir).get("14").state == "released"
    assert NodeContext(node).devices.live_instances() == {}


def test_a_cap_node_that_cannot_be_taken_back_keeps_its_instance(node, monkeypatch, tmp_path):
    isolation.setup(NodeContext(node))
    prolog(node, monkeypatch, "15", "mig:1g.10gb:1", ALICE)
    gi_node = job_caps(node, "15")[0]
    target = tmp_path / "target"
    target.write_text("")
    os.unlink(gi_node)
    os.symlink(target, gi_node)                  # not the device any more: never followed
    hooks.epilog(node, "15")
    rec = Ledger(node.state_dir).get("15")
    assert rec.state == "releasing" and len(NodeContext(node).devices.live_instances()) == 1
    assert target.stat().st_uid == 0 and stat.S_IMODE(target.stat().st_mode) != 0o400
    report = isolation.setup(NodeContext(node), fix=False)
    assert any(gi_node in p and "symbolic link" in p for p in report.problems)
    os.unlink(gi_node)
    report = isolation.setup(NodeContext(node))
    assert gi_node in report.created and "15" in report.jobs     # its CI node stays the job's
    hooks.reconcile(node)
    assert Ledger(node.state_dir).get("15").state == "released"
    assert NodeContext(node).devices.live_instances() == {}
    assert {owner(st) for st in all_caps(node).values()} == {(0, 0, 0o400)}


def test_problems_fail_the_job_not_the_node(node, monkeypatch):
    isolation.setup(NodeContext(node))
    hooks.prolog(node, "16", "mig:1g.10gb:1", gpu=0, uid=None)           # no uid to give them to
    text, code = task_prolog(node.run_dir, "16")
    assert code == 1 and "isolate_devices needs the job's uid" in text
    caps_dir = os.path.join(node.dev_root, caps.CAPS_DIR)
    os.chmod(caps_dir, 0o777)
    prolog(node, monkeypatch, "17", "mig:1g.10gb:1", ALICE)
    text, code = task_prolog(node.run_dir, "17", uid=ALICE)
    assert code == 1 and "only root may write there" in text
    os.chmod(caps_dir, 0o755)
    for job in ("16", "17"):
        hooks.epilog(node, job)
    assert NodeContext(node).devices.live_instances() == {}


def test_ids_are_checked():
    for bad in (-1, 2 ** 32 - 1, True, "0"):
        with pytest.raises(Exception, match="not a valid id"):
            isolation._id(bad, "uid")
    assert isolation.job_gid(ALICE, {"SLURM_JOB_UID": str(ALICE), "SLURM_JOB_GID": "7"}) == 7
    assert isolation.job_gid(0, {"SLURM_JOB_UID": str(ALICE), "SLURM_JOB_GID": "7"}) == 0   # root's group


def test_node_setup_creates_and_fixes_and_leaves_running_jobs_alone(node, monkeypatch):
    ctx = NodeContext(node)
    report = isolation.setup(ctx, fix=False)
    assert set(report.fixed) == {"0:0 0444"} and set(report.fixed["0:0 0444"]) == set(all_caps(node))
    assert not report.created and report.modify == 1
    assert {owner(st) for st in all_caps(node).values()} == {(0, 0, 0o444)}       # --check changed nothing
    missing = caps.node_path(node.dev_root, 4)
    os.unlink(missing)
    report = isolation.setup(NodeContext(node))
    assert report.created == [missing] and len(report.fixed["0:0 0444"]) == 2 * 135 - 1
    st = os.lstat(missing)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(508, 4)
    assert {owner(st) for st in all_caps(node).values()} == {(0, 0, 0o400)}
    prolog(node, monkeypatch, "18", "mig:1g.10gb:1", ALICE)
    report = isolation.setup(NodeContext(node))
    assert not report.fixed and report.jobs == {"18": job_caps(node, "18")}
    assert all(owner(os.lstat(p))[0] == ALICE for p in job_caps(node, "18"))
    assert sim_root(node.backend[4:]) in node.dev_root


def test_an_ampere_gpu_handed_over_whole_gives_its_full_instance(make, monkeypatch):
    cfg = make("1xA100-40GB")
    isolation.setup(NodeContext(cfg))
    monkeypatch.setenv("SLURM_JOB_UID", str(ALICE))
    hooks.run_prolog(cfg, "19", whole_gpus=[0], uid=ALICE)
    mine = job_caps(cfg, "19")
    assert len(mine) == 2 and {owner(os.lstat(p)) for p in mine} == {(ALICE, GID, 0o400)}
    hooks.epilog(cfg, "19")
    assert {owner(st) for st in all_caps(cfg, gpus=(0,)).values()} == {(0, 0, 0o400)}


def test_node_setup_verb(node, cli):
    conf = os.path.join(os.path.dirname(node.state_dir), "config.toml")
    with open(conf, "w") as f:
        f.write(f'backend = "{node.backend}"\nstate_dir = "{node.state_dir}"\nisolate_devices = true\n')
    env = {"SLURM_MIG_CONFIG": conf}
    p = cli("node-setup", "--check", env=env, check=1)
    assert "would be made root-only (270, were 0:0 0444): " in p.stdout and "ModifyDeviceFiles=1" in p.stdout
    assert max(map(len, p.stdout.splitlines())) < 300       # folded, not 270 paths on one line
    assert re.search(r"/nvidia-caps/nvidia-cap\[\d+-\d+(,\d+(-\d+)?)*\]$", p.stdout.splitlines()[1])
    assert {owner(st) for st in all_caps(node).values()} == {(0, 0, 0o444)}
    unit = open(os.path.join(os.path.dirname(slurm_mig.__file__), "systemd", "slurm-mig-node-setup.service")).read()
    assert "Before=slurmd.service" in unit
    argv = re.search(r"^ExecStart=@SLURM_MIG@ (.*)$", unit, re.M).group(1).split()
    p = cli(*argv, env=env, check=0)                  # what the shipped unit runs at boot
    assert "made root-only (270, were 0:0 0444)" in p.stdout
    cli("node-setup", "--check", env=env, check=0)
    with open(conf, "w") as f:
        f.write(f'backend = "{node.backend}"\nstate_dir = "{node.state_dir}"\n')
    p = cli("node-setup", env=env, check=2)
    assert "isolate_devices is off" in p.stderr
