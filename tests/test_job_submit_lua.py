"""The generated job_submit.lua, run by a Lua 5.1 interpreter with a stand-in
`slurm` table: Slurm 22.05 hands it `gres:mig:...`, 23.11 and later
`gres/mig:...`, and what it writes back must keep that prefix."""
import shutil
import subprocess

import pytest

from slurm_mig.slurm import confgen

LUA = shutil.which("lua5.1")
pytestmark = pytest.mark.skipif(LUA is None, reason="needs lua5.1 (bash run.sh test installs it)")

DRIVER = """
slurm = { SUCCESS = 0, ERROR = -1, log_user = function(fmt, ...) io.stderr:write(string.format(fmt, ...)) end }
dofile(arg[1])
local desc = { tres_per_node = arg[2] }
local rc = slurm_job_submit(desc, {}, 1000)
print(rc, desc.tres_per_node)
"""


@pytest.fixture(scope="module")
def lua_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lua")
    files = confgen.render(confgen.from_spec("2xH100-80GB"), "dynamic", None, "/dev", "test", "test")
    (d / "job_submit.lua").write_text(files["job_submit.lua"])
    (d / "driver.lua").write_text(DRIVER)
    return d


def submit(lua_files, tres):
    p = subprocess.run([LUA, str(lua_files / "driver.lua"), str(lua_files / "job_submit.lua"), tres],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    rc, _, new = p.stdout.strip().partition("\t")
    return int(rc), new, p.stderr


@pytest.mark.parametrize("prefix", ["gres:", "gres/"])
def test_shards_are_added_with_the_prefix_slurm_used(lua_files, prefix):
    assert submit(lua_files, f"{prefix}mig:3g.40gb:1") == (0, f"{prefix}mig:3g.40gb:1,{prefix}shard:4", "")
    rc, new, _ = submit(lua_files, f"{prefix}mig:1g.10gb:2,{prefix}mig:3g.39gb:1")
    assert rc == 0 and new == f"{prefix}mig:1g.10gb:2,{prefix}mig:3g.40gb:1,{prefix}shard:6"


@pytest.mark.parametrize("prefix", ["gres:", "gres/"])
def test_unknown_profiles_are_refused_with_the_valid_ones(lua_files, prefix):
    rc, _, err = submit(lua_files, f"{prefix}mig:5g.50gb:1")
    assert rc == -1 and "unknown MIG profile '5g.50gb'" in err and "3g.40gb" in err


def test_jobs_without_mig_pass_unchanged(lua_files):
    assert submit(lua_files, "gres/gpu:1") == (0, "gres/gpu:1", "")
