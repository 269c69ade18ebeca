"""The simulated node's own /dev and /proc tree (sim/devtree.py)."""
import errno
import os
import shutil
import stat
import tempfile

import pytest
from harness import users

from slurm_mig.config import sim_root
from slurm_mig.core import caps
from slurm_mig.node.procfs import read_mig_minors
from slurm_mig.sim import SimNvml, init_state
from slurm_mig.sim.devtree import CAPS_MAJOR, cap_minor

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mknod and setuid need root")


def open_as(uid, path):
    """errno of opening `path` read-only as `uid` (0 = opened)."""
    return users.open_as(uid, 65534, path)


@root_only
def test_tree_has_distinct_char_devices_and_mig_minors(tmp_path):
    state = str(tmp_path / "node.json")
    init_state(state, "2xH100-80GB")
    root = sim_root(state)
    assert root == str(tmp_path / "node.root")
    minors = read_mig_minors(os.path.join(root, "proc"))
    assert minors["gpu1/gi2/ci0/access"] == cap_minor(1, 2, 0) == 4 + 135 + 18
    devs = {}
    for name in ["nvidia0", "nvidia1", "nvidiactl"] + [
            f"nvidia-caps/nvidia-cap{m}" for m in (1, 2, cap_minor(0, 0), cap_minor(1, 14, 7))]:
        st = os.lstat(os.path.join(root, "dev", name))
        assert stat.S_ISCHR(st.st_mode), name
        devs[name] = st.st_rdev
    assert len(set(devs.values())) == len(devs)
    assert os.major(devs["nvidia-caps/nvidia-cap1"]) == CAPS_MAJOR
    assert not os.path.exists(os.path.join(root, "dev", "nvidia-caps", f"nvidia-cap{cap_minor(2, 0)}"))
    cfg_cap = os.path.join(root, "proc", "driver", "nvidia", "capabilities", "mig", "config")
    assert open(cfg_cap).read() == "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 1\n"


@root_only
def test_permission_denial_is_eacces_and_a_fake_node_enxio():
    top = tempfile.mkdtemp(prefix="slurm-mig-devtree-")     # pytest's tmp_path is root-only
    os.chmod(top, 0o755)
    state = os.path.join(top, "node.json")
    init_state(state, "1xH100-80GB")
    caps = os.path.join(sim_root(state), "dev", "nvidia-caps")
    assert open_as(65534, state) == 0
    assert open_as(65534, os.path.join(caps, "nvidia-cap1")) == errno.EACCES     # config: 0400 root
    assert open_as(65534, os.path.join(caps, f"nvidia-cap{cap_minor(0, 3)}")) == errno.ENXIO  # 0444
    os.chmod(os.path.join(caps, f"nvidia-cap{cap_minor(0, 3)}"), 0o400)
    assert open_as(65534, os.path.join(caps, f"nvidia-cap{cap_minor(0, 3)}")) == errno.EACCES
    shutil.rmtree(top)


def test_instance_capability_files_come_and_go_with_the_instance(tmp_path, driver_for):
    """The driver registers /proc/driver/nvidia/capabilities/gpuN/mig/giG[/ciC]/access
    while the instance exists, DeviceFileModify from the module parameter."""
    state = str(tmp_path / "node.json")
    init_state(state, "2xH100-80GB")
    proc = os.path.join(sim_root(state), "proc")
    assert caps.char_major(open(os.path.join(proc, "devices")).read()) == CAPS_MAJOR
    assert caps.field(open(caps.params_path(proc)).read(), "ModifyDeviceFiles") == 1
    d = driver_for(state)
    p = next(p for p in d.gpu(1).model.profiles if p.name == "3g.40gb")
    inst = d.create(1, p, p.starts[0])
    gi_file = caps.proc_path(proc, caps.cap_key(1, inst.gi_id))
    ci_file = caps.proc_path(proc, caps.cap_key(1, inst.gi_id, inst.ci_id))
    assert gi_file.endswith(f"/driver/nvidia/capabilities/gpu1/mig/gi{inst.gi_id}/access")
    assert open(ci_file).read() == (f"DeviceFileMinor: {cap_minor(1, inst.gi_id, inst.ci_id)}\n"
                                    "DeviceFileMode: 292\nDeviceFileModify: 1\n")
    with open(caps.params_path(proc), "w") as f:
        f.write("ModifyDeviceFiles: 0\n")
    second = d.create(1, p, p.starts[-1])
    assert open(caps.proc_path(proc, caps.cap_key(1, second.gi_id))).read().endswith("Modify: 0\n")
    d.destroy(1, inst.gi_id)
    assert not os.path.exists(gi_file) and not os.path.exists(ci_file)
    SimNvml(state).reset_gpu(1)
    assert not os.path.exists(caps.proc_path(proc, caps.cap_key(1, second.gi_id)))


def test_gres_conf_static_on_a_simulated_node_needs_no_flags(tmp_path, cli):
    state = str(tmp_path / "node.json")
    cli("sim", "init", state, "--gpus", "1xH100-80GB", check=0)
    env = {"SLURM_MIG_BACKEND": f"sim:{state}", "SLURM_MIG_STATE_DIR": str(tmp_path / "st"),
           "SLURM_MIG_CONFIG": os.devnull}
    cli("prolog", "--job", "1", "--request", "mig:3g.40gb:1", env=env, check=0)
    out = cli("gres-conf", "--mode", "static", env=env, check=0).stdout
    dev = os.path.join(sim_root(state), "dev")
    assert f"MultipleFiles={dev}/nvidia0,{dev}/nvidia-caps/nvidia-cap" in out
    for path in __import__("re").findall(r"MultipleFiles=(\S+)", out)[0].split(","):
        assert os.path.exists(path), path
