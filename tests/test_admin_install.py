"""The README's admin install, word for word, serves a MIG job through real
Slurm (tests/harness/admin.py says what the harness adds to a bare chroot)."""
import json
import os
import re

import pytest

from harness import slurms
from harness.admin import GEN, PREFIX, AdminInstallCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def node():
    try:
        slurm = slurms.get("24.11")
    except slurms.Unavailable as e:
        pytest.skip(f"Slurm 24.11: {e}")
    with AdminInstallCluster(slurm) as c:
        yield c


def test_the_installed_hooks_serve_a_mig_job(node):
    job = node.sbatch("--gres=mig:3g.40gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES\nsrun -n1 sh -c 'echo STEP=$CUDA_VISIBLE_DEVICES'")
    assert node.wait_job(job) == "COMPLETED", node.output(job)
    out = node.output(job)
    uuid = re.search(r"^CVD=(MIG-[0-9a-f-]{36})$", out, re.M).group(1)
    assert f"STEP={uuid}" in out
    status = json.loads(node.slurm_mig("status", "--json").stdout)   # the README's link, the default config
    assert [g["instances"] for g in status["gpus"]] == [[], []]       # the Epilog tore it down
    assert os.listdir(node.in_root("/var/lib/slurm-mig/jobs/closed")) == [f"{job}.json"]


def test_slurm_runs_the_scripts_of_the_install(node):
    with open(node.conf, encoding="utf-8") as f:
        conf = f.read()
    for param, script in (("Prolog", "prolog/slurm-mig-prolog"), ("TaskProlog", "prolog/slurm-mig-task-prolog"),
                          ("Epilog", "epilog/slurm-mig-epilog")):
        path = f"{PREFIX}/share/slurm-mig/{script}"
        assert f"\n{param}={path}\n" in conf
        assert os.access(node.in_root(path), os.X_OK)
    assert "\nJobSubmitPlugins=lua\n" in conf and "\nPrologFlags=Alloc\n" in conf
    assert os.path.islink(node.in_root("/usr/local/bin/slurm-mig-hook"))
    assert not os.path.exists(node.in_root(PREFIX, "lib", "python3.13", "site-packages", "__editable__"))
    assert os.listdir(node.in_root(GEN))


def test_the_units_name_the_installed_command(node):
    with open(node.systemctl_log, encoding="utf-8") as f:
        assert f.read().splitlines() == ["daemon-reload", "enable --now slurm-mig-reconcile.timer"]
    units = node.in_root("/etc/systemd/system")
    names = sorted(n for n in os.listdir(units) if n.startswith("slurm-mig-"))
    assert len(names) == 6 and "slurm-mig-reconcile.timer" in names
    for name in names:
        with open(os.path.join(units, name), encoding="utf-8") as f:
            text = f.read()
        assert "@SLURM_MIG@" not in text
        for cmd in re.findall(r"^ExecStart=(\S+)", text, re.M):
            assert cmd == f"{PREFIX}/bin/slurm-mig", (name, cmd)
            assert os.access(node.in_root(cmd), os.X_OK)
    reconcile = node.run(*re.search(r"^ExecStart=(.*)$", open(os.path.join(units, "slurm-mig-reconcile.service")).read(),
                                    re.M).group(1).split(), check=False)
    assert reconcile.returncode == 0, reconcile.stderr


def test_doctor_finds_the_node_as_the_readme_sets_it_up(node):
    p = node.run(node.bin, "doctor", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    for param, script in (("Prolog", "prolog/slurm-mig-prolog"), ("Epilog", "epilog/slurm-mig-epilog")):
        assert f"ok   {param}: {PREFIX}/share/slurm-mig/{script}\n" in p.stdout
    assert re.search(r"^ok   gres.conf: .* matches the live GPUs", p.stdout, re.M)
    # the units are this install's; only enabling them was faked (no systemd in a chroot)
    p = node.run(node.bin, "doctor", "--systemd-dir", "/etc/systemd/system", check=False)
    assert p.returncode == 1 and "FAIL slurm-mig-reconcile.timer: not enabled -- fix: systemctl enable " \
        "--now slurm-mig-reconcile.timer" in p.stdout and p.stdout.count("FAIL") == 1, p.stdout
