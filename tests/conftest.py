import os
import shutil
import subprocess
import sys

import pytest

from harness import slurms
from slurm_mig.config import Config, with_sim_roots
from slurm_mig.nvml.driver import Driver
from slurm_mig.sim import SimNvml, init_state


@pytest.fixture
def make_node(tmp_path):
    """make_node('1xH100-80GB') -> (Config for hooks, state path)."""
    def make(gpus="1xH100-80GB", **overrides):
        state = str(tmp_path / "node.json")
        for d in ("state", "run"):       # a new node (new GPU UUIDs) starts with no ledger
            shutil.rmtree(tmp_path / d, ignore_errors=True)
        init_state(state, gpus, mig_enabled=overrides.pop("mig", True))
        settings = dict(wait_for_room=0, interactive_wait=0, epilog_retries=1, epilog_retry_delay=0,
                        room_interval=0)
        cfg = Config(**with_sim_roots(dict(backend=f"sim:{state}", state_dir=str(tmp_path / "state"),
                                           run_dir=str(tmp_path / "run"), **{**settings, **overrides})))
        return cfg, state
    return make


@pytest.fixture
def driver_for():
    def make(state):
        return Driver(SimNvml(state))
    return make


@pytest.fixture
def cli(tmp_path):
    """Run the real `slurm-mig` entry point in a subprocess."""
    def run(*args, env=None, check=None):
        full_env = {**os.environ, **(env or {})}
        p = subprocess.run([sys.executable, "-m", "slurm_mig", *args], capture_output=True,
                           text=True, env=full_env, timeout=120)
        if check is not None:
            assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
        return p
    return run


@pytest.fixture(scope="session", params=list(slurms.VERSIONS), ids=lambda v: f"slurm-{v}")
def slurm(request):
    """Each Slurm the end-to-end tests run on: the host's, and newer ones in
    chroots built on first use. One that cannot be had here is skipped with
    the reason; `-k slurm-26.05` picks one."""
    try:
        return slurms.get(request.param)
    except slurms.Unavailable as e:
        pytest.skip(f"Slurm {request.param}: {e}")
