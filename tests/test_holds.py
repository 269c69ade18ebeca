"""Stuck-GPU holds (hooks/stuckgpu.py): a whole-GPU Prolog that meets a busy
instance no job owns asks, once per GPU, for a root job to hold that GPU; only
a job running as root that the root-only marker names is treated as the hold
(never a job by its name); the hold waits while the instance is busy and its
Epilog gives the GPU back."""
import os

import pytest

from slurm_mig.hooks import stuckgpu
from slurm_mig.hooks.dispatch import run_prolog
from slurm_mig.hooks.epilog import epilog
from slurm_mig.node import holds
from slurm_mig.node.ledger import Ledger
from slurm_mig.slurm import holds as slurm_holds

UUID = "MIG-0301b048-0827-4a3c-a44e-0aaf1f631272"
SLURMD = {"SLURMD_NODENAME": "n1", "SLURM_JOB_GPUS": "0", "SLURM_JOB_PARTITION": "gpu"}


def stuck_node(make_node, **settings):
    """One H100 whose GPU 0 holds a busy 1g.10gb no job owns: its UUID too."""
    from slurm_mig.core import catalog
    from slurm_mig.nvml.backend import open_driver
    from slurm_mig.sim.control import set_busy
    cfg, state = make_node(**settings)
    inst = open_driver(cfg.backend).create(0, catalog.load().model("H100-80GB").find_profile("1g.10gb"), 6)
    set_busy(state, inst.uuid)
    return cfg, state, inst.uuid


@pytest.fixture
def submitters(monkeypatch):
    """The `stuck-hold` processes a Prolog leaves, as (job, GPU)."""
    from slurm_mig.hooks import detached
    left = []
    monkeypatch.setattr(detached, "spawn_detached",
                        lambda verb, job, env: left.append((verb, job, env[stuckgpu.GPU_ENV])))
    return left


def whole_gpu_prolog(cfg, job, monkeypatch, env=SLURMD):
    """As slurmd runs it: the hold is asked for with the Prolog's environment."""
    for key in SLURMD:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run_prolog(cfg, job, whole_gpus=[0], uid=1000, env=env)


def test_a_whole_gpu_job_that_meets_a_stuck_instance_asks_once_for_a_hold(make_node, submitters, monkeypatch):
    cfg, _, uuid = stuck_node(make_node)
    whole_gpu_prolog(cfg, "5", monkeypatch)
    whole_gpu_prolog(cfg, "6", monkeypatch)
    assert submitters == [("stuck-hold", "5", "0")]            # one per GPU, not one per job
    assert holds.read(cfg.state_dir, 0)._replace(since=0) == holds.Hold(0, uuid)


@pytest.mark.parametrize("settings, env", [
    (dict(hold_stuck_gpus=False), SLURMD),                               # turned off
    ({}, {k: v for k, v in SLURMD.items() if k != "SLURM_JOB_PARTITION"}),   # outside Slurm
])
def test_no_hold_is_asked_for_when_off_or_outside_slurm(make_node, submitters, monkeypatch, settings, env):
    cfg, _, _ = stuck_node(make_node, **settings)
    whole_gpu_prolog(cfg, "5", monkeypatch, env)
    assert submitters == [] and holds.read(cfg.state_dir, 0) is None


def test_a_marker_is_asked_for_again_only_once_due(make_node):
    cfg, _ = make_node()
    assert holds.want(cfg.state_dir, 0, UUID, now=1000.0)
    assert not holds.want(cfg.state_dir, 0, UUID, now=1000.0 + holds.UNSUBMITTED_TTL)
    assert holds.want(cfg.state_dir, 0, UUID, now=1001.0 + holds.UNSUBMITTED_TTL)  # its submitter died
    holds.write(cfg.state_dir, holds.read(cfg.state_dir, 0)._replace(job="9", since=2000.0))
    assert not holds.want(cfg.state_dir, 0, UUID, now=2000.0 + holds.RECHECK_AFTER)
    assert holds.want(cfg.state_dir, 0, UUID, now=2001.0 + holds.RECHECK_AFTER)  # gone without an Epilog?
    assert holds.read(cfg.state_dir, 0).job == "9"


@pytest.mark.parametrize("text", ["", "{", '{"gpu": 0}', '{"gpu": 1, "instance": "%s", "since": 1}' % UUID,
                                  '{"gpu": 0, "instance": "x; rm -rf /", "since": 1}',
                                  '{"gpu": 0, "instance": "%s", "job": "1;id", "since": 1}' % UUID])
def test_a_marker_that_is_not_well_formed_is_no_hold(make_node, text):
    cfg, _ = make_node()
    holds.want(cfg.state_dir, 0, UUID)
    with open(os.path.join(cfg.state_dir, "holds", "gpu0.json"), "w") as f:
        f.write(text)
    assert holds.read(cfg.state_dir, 0) is None and holds.of_job(cfg.state_dir, "1", 0) is None


def held(cfg, job="7", given=None, instance=UUID):
    holds.write(cfg.state_dir, holds.Hold(0, instance, job=job, given=given, since=1.0))


@pytest.fixture
def no_slurm(monkeypatch):
    """Reading the job from Slurm fails the test: a hold's Prolog asks nothing."""
    from slurm_mig.hooks import dispatch

    def read(*args, **kwargs):
        raise AssertionError("the Prolog read the job from Slurm")
    monkeypatch.setattr(dispatch, "_read_job", read)


def test_the_hold_prolog_touches_nothing_and_notes_its_gpu(make_node, no_slurm):
    cfg, state, uuid = stuck_node(make_node)
    held(cfg)
    run_prolog(cfg, "7", uid=0, env={**SLURMD, "SLURM_JOB_GPUS": "0"})
    assert holds.read(cfg.state_dir, 0).given == 0
    assert Ledger(cfg.state_dir).get("7") is None
    epilog(cfg, "7", env={**SLURMD, "SLURM_JOB_UID": "0"})
    assert holds.read(cfg.state_dir, 0) is None and Ledger(cfg.state_dir).get("7") is None
    from slurm_mig.nvml.backend import open_driver
    assert [i.uuid for i in open_driver(cfg.backend).gpu(0).instances] == [uuid]   # left alone


@pytest.mark.parametrize("uid, job", [(1000, "7"),     # a user's job with the hold's id (a reused id)
                                      (0, "8")])       # root's job the marker does not name
def test_only_roots_job_the_marker_names_is_a_hold(make_node, monkeypatch, uid, job):
    from slurm_mig.hooks import dispatch
    cfg, _ = make_node()
    held(cfg)
    read = []
    monkeypatch.setattr(dispatch, "_read_job", lambda *a, **k: read.append(a) or None)
    run_prolog(cfg, job, uid=uid, env=SLURMD)
    assert len(read) == 1 and holds.read(cfg.state_dir, 0).given is None
    assert holds.of_job(cfg.state_dir, job, uid) is None
    epilog(cfg, job, env={**SLURMD, "SLURM_JOB_UID": str(uid)})
    assert holds.read(cfg.state_dir, 0) is not None


def test_a_hold_given_another_gpu_ends_at_once(make_node, monkeypatch):
    cfg, _, _ = stuck_node(make_node)
    held(cfg, given=1)
    monkeypatch.setattr(os, "getuid", lambda: 0)
    assert stuckgpu.wait(cfg, "7") == "given GPU 1, not GPU 0: ended at once"


def test_a_hold_waits_while_the_instance_is_busy(make_node, monkeypatch):
    from slurm_mig.sim.control import set_busy
    cfg, state, uuid = stuck_node(make_node)
    held(cfg, given=0, instance=uuid)
    monkeypatch.setattr(os, "getuid", lambda: 0)
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        if len(naps) == 3:
            set_busy(state, uuid, busy=False)
    monkeypatch.setattr(stuckgpu.time, "sleep", sleep)
    assert stuckgpu.wait(cfg, "7") == f"GPU 0 free of {uuid}: given back"
    assert naps == [stuckgpu.POLL] * 3


class FakeSlurm:
    def __init__(self, live=()):
        self.calls, self.live = [], set(live)

    def install(self, monkeypatch):
        monkeypatch.setattr(slurm_holds, "alive", lambda job, b="": self.calls.append(("alive", job)) or job in self.live)
        monkeypatch.setattr(slurm_holds, "cancel_leftovers", lambda n, g, b="": self.calls.append(("scancel", n, g)))
        monkeypatch.setattr(slurm_holds, "submit", lambda n, p, g, i, c, b="": self.calls.append(("sbatch", n, p, g)) or "42")
        monkeypatch.setattr(slurm_holds, "wait_until_off_node", lambda job, b="": self.calls.append(("left", job)))
        monkeypatch.setattr(slurm_holds, "release", lambda job, b="": self.calls.append(("release", job)))
        return self


def test_the_submitter_holds_the_gpu_once(make_node, monkeypatch):
    cfg, _ = make_node()
    env = {**SLURMD, stuckgpu.GPU_ENV: "0", "SLURM_JOB_ID": "5"}
    slurm = FakeSlurm(live={"42"}).install(monkeypatch)
    holds.want(cfg.state_dir, 0, UUID)
    assert stuckgpu.submit(cfg, env) == f"GPU 0 held by job 42 while {UUID} is busy"
    assert slurm.calls == [("scancel", "n1", 0), ("sbatch", "n1", "gpu", 0), ("left", "5"), ("release", "42")]
    assert holds.read(cfg.state_dir, 0).job == "42"
    slurm.calls.clear()
    assert stuckgpu.submit(cfg, env) == "GPU 0 held by job 42 already"
    assert slurm.calls == [("alive", "42")]


def test_a_hold_gone_without_its_epilog_is_replaced(make_node, monkeypatch):
    cfg, _ = make_node()
    held(cfg, job="41")
    slurm = FakeSlurm().install(monkeypatch)
    stuckgpu.submit(cfg, {**SLURMD, stuckgpu.GPU_ENV: "0", "SLURM_JOB_ID": "5"})
    assert [c[0] for c in slurm.calls] == ["alive", "scancel", "sbatch", "left", "release"]
    assert holds.read(cfg.state_dir, 0).job == "42"


@pytest.mark.parametrize("node, partition", [("n1;id", "gpu"), ("n1", "gpu,$(id)"), ("n1 n2", "gpu")])
def test_hostile_node_or_partition_names_are_refused(node, partition):
    from slurm_mig.errors import BadInput
    with pytest.raises(BadInput):
        slurm_holds.submit(node, partition, 0, UUID, "true", bin_dir="/nonexistent")


def test_the_hold_runs_this_install_with_the_hooks_config():
    command = slurm_holds.wait_command("/opt/slurm mig/bin/python", {"SLURM_MIG_CONFIG": "/etc/x y.toml",
                                                                    "SLURM_MIG_OTHER": "z"})
    assert command == "SLURM_MIG_CONFIG='/etc/x y.toml' exec '/opt/slurm mig/bin/python' " \
                      "-m slurm_mig.hooks.main stuck-wait"


@pytest.mark.parametrize("squeue, alive", [
    ("echo 'RUNNING|(null)'", True),
    ("echo 'PENDING|(null)'", True),
    ("echo 'COMPLETED|(null)'", False),
    ("true", False),                                                  # no longer listed
    ("echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1", False),   # forgotten
])
def test_a_hold_is_alive_while_slurm_lists_it_pending_or_running(tmp_path, squeue, alive):
    (tmp_path / "squeue").write_text(f"#!/bin/sh\n{squeue}\n")
    (tmp_path / "squeue").chmod(0o755)
    assert slurm_holds.alive("42", str(tmp_path)) is alive


def test_a_hold_whose_state_slurm_cannot_tell_is_an_error(tmp_path, monkeypatch):
    from slurm_mig.errors import SlurmUnavailable
    from slurm_mig.slurm import jobinfo
    monkeypatch.setattr(jobinfo, "RETRY_DELAY", 0.01)
    (tmp_path / "squeue").write_text("#!/bin/sh\necho 'Unable to contact slurm controller' >&2; exit 1\n")
    (tmp_path / "squeue").chmod(0o755)
    with pytest.raises(SlurmUnavailable):
        slurm_holds.alive("42", str(tmp_path))
