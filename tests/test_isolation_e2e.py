"""Device fencing on the real daemons with cgroup v1 (task/cgroup,
ConstrainDevices): jobs of unprivileged users open device files of the
simulated node and print what each open gave. ENXIO: allowed (a fake device
has no driver); EACCES: the file's owner and mode refuse; EPERM: the job's
device cgroup refuses."""
import errno
import json
import os
import re
import shutil
import subprocess

import pytest

from harness.devcluster import DevCluster
from slurm_mig import config
from slurm_mig.core import caps
from slurm_mig.node.ledger import Ledger
from slurm_mig.node.procfs import read_mig_minors

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("slurmd") is None and not os.path.exists("/usr/sbin/slurmd")
    or not os.path.isdir("/sys/fs/cgroup/devices"),
    reason="needs root, Debian's slurm-wlm and a cgroup v1 devices controller")]

LAYOUTS = os.path.join(os.path.dirname(__file__), "data", "mig-parted-h100.yaml")
# Prints `OPEN <path> <errno>` for every GPU and capability device file.
PROBE = """python3 -c '
import glob, os, sys
for p in sorted(glob.glob(sys.argv[1] + "/nvidia[0-9]*") + glob.glob(sys.argv[1] + "/nvidia-caps/*")):
    try:
        os.close(os.open(p, os.O_RDONLY))
        print("OPEN", p, 0)
    except OSError as e:
        print("OPEN", p, e.errno)' {dev}
echo GPUS=$SLURM_JOB_GPUS"""


def slurm_version() -> tuple:
    out = subprocess.run(["slurmd", "-V"], capture_output=True, text=True).stdout
    return tuple(int(x) for x in re.search(r"(\d+)\.(\d+)", out).groups())


def node_cfg(cluster):
    """The node's slurm-mig settings (dev_root, proc_root: its simulated tree)."""
    return config.load(cluster.env["SLURM_MIG_CONFIG"])


def dev(cluster):
    return node_cfg(cluster).dev_root


def opened(text):
    return {p: int(e) for p, e in re.findall(r"^OPEN (\S+) (\d+)$", text, re.M)}


def caps_of(cluster, job):
    """The cap node paths of the job's instances (from its ledger record;
    GPU index = device minor on the simulated node)."""
    cfg = node_cfg(cluster)
    minors = read_mig_minors(cfg.proc_root)
    rec = Ledger(cfg.state_dir).get(job)
    keys = [caps.cap_key(h.gpu, h.gi_id, ci) for h in rec.instances for ci in (None, h.ci_id)]
    return {caps.node_path(cfg.dev_root, minors[k]) for k in keys}


@pytest.fixture(scope="module")
def fenced():
    with DevCluster("2xH100-80GB", wait_for_room=3, constrain_devices=True) as c:
        c.set_config(isolate_devices=True)
        c.slurm_mig("node-setup")
        yield c


def test_a_job_opens_its_gpu_and_its_own_cap_nodes_only(fenced):
    c = fenced
    other = c.sbatch("--uid=daemon", "--gid=nogroup", "--gres=mig:1g.10gb:1", script="sleep 300")
    c._wait(lambda: c.job_state(other) == "RUNNING" and
            any(i["owner"] == other for g in json.loads(c.slurm_mig("status", "--json").stdout)["gpus"]
                for i in g["instances"]), 60, "the other job bound")
    theirs = caps_of(c, other)
    # gid from slurmd's SLURM_JOB_GID (--gid), not daemon's primary group
    assert {(st.st_uid, st.st_gid, st.st_mode & 0o7777) for st in map(os.lstat, theirs)} == {(1, 65534, 0o400)}
    job = c.sbatch("--uid=nobody", "--gid=nogroup", "--gres=mig:2g.20gb:1", script=PROBE.format(dev=dev(c)))
    assert c.wait_job(job) == "COMPLETED", c.output(job)
    seen, mine = opened(c.output(job)), caps_of(c, job)
    gpu = int(re.search(r"^GPUS=(\d)$", c.output(job), re.M).group(1))
    assert seen.pop(f"{dev(c)}/nvidia{gpu}") == errno.ENXIO           # its GPU
    assert seen.pop(f"{dev(c)}/nvidia{1 - gpu}") == errno.EPERM       # the other GPU: the cgroup
    assert {seen.pop(p) for p in mine} == {errno.ENXIO} and len(mine) == 2   # its GI and CI
    assert {seen.pop(p) for p in theirs} == {errno.EACCES}                   # another job's
    assert seen.pop(caps.node_path(dev(c), 2)) == errno.ENXIO          # mig/monitor stays 0444
    assert set(seen.values()) == {errno.EACCES} and len(seen) == 1 + 2 * 135 - 4   # config + free ones
    c.run("scancel", other)
    c.wait_job(other)
    nodes = [os.lstat(caps.node_path(dev(c), m)) for k, m in read_mig_minors(
        node_cfg(c).proc_root).items() if caps.key_gpu(k) in (0, 1)]
    assert {(st.st_uid, st.st_mode & 0o7777) for st in nodes} == {(0, 0o400)}
    assert c.node_state() == "idle"


def test_static_mode_on_22_05_fences_no_mig_device_file():
    """Static gres.conf lists `Name=mig` records (MultipleFiles=/dev/nvidiaN +
    cap nodes). Slurm 22.05 fences only GRES with a plugin (gpu, shard, mps),
    so a static job can open every GPU and cap node; 23.02 fences these
    records too (docs/facts.md, Slurm: 23.02 to 26.05; not run here)."""
    if slurm_version() >= (23, 2):
        pytest.skip("Slurm 23.02+ fences plugin-less GRES with File=; this pins 22.05's gap")
    with DevCluster("2xH100-80GB", mode="static", layout=(LAYOUTS, "custom-config"),
                    constrain_devices=True) as c:
        job = c.sbatch("--uid=nobody", "--gid=nogroup", "--gres=mig:3g.40gb:1",
                       script=PROBE.format(dev=dev(c)))
        assert c.wait_job(job) == "COMPLETED", c.output(job)
        seen, mine = opened(c.output(job)), caps_of(c, job)
        assert seen[f"{dev(c)}/nvidia1"] == errno.ENXIO         # GPU 1 holds none of its instances
        others = [p for p in seen if "nvidia-cap" in p and p not in mine and p != caps.node_path(dev(c), 1)]
        assert len(others) > 100 and {seen[p] for p in others} == {errno.ENXIO}   # driver's 0444, unfenced
