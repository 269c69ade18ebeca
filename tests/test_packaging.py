"""What ships: the wheel `pip install .` builds holds every file of the
source tree's package and every hook script, executable; the installed
package names its own paths."""
import os
import stat
import zipfile

import pytest

import slurm_mig
from harness import install, slurms
from slurm_mig import installed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel():
    return zipfile.ZipFile(install.wheel())


def source_files(folder):
    """Every file under REPO/folder, as a path relative to REPO, byte code aside."""
    for path, dirs, files in os.walk(os.path.join(slurms.REPO, folder)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".pyc"):
                yield os.path.relpath(os.path.join(path, name), slurms.REPO)


def test_the_wheel_holds_every_file_of_the_package(wheel):
    shipped = {n for n in wheel.namelist() if n.startswith("slurm_mig/")}
    assert shipped == set(source_files("slurm_mig"))


def test_the_wheel_holds_the_hook_scripts_executable_and_their_client(wheel):
    data = f"slurm_mig-{slurm_mig.__version__}.data/data/share/slurm-mig/"
    shipped = {n[len(data):]: wheel.getinfo(n) for n in wheel.namelist() if n.startswith(data)}
    scripts = set(source_files("prolog")) | set(source_files("epilog"))
    assert scripts == set(installed.HOOK_SCRIPTS.values())
    assert set(shipped) == scripts | {"client/hook-client.py"} == scripts | set(source_files("client"))
    for name in scripts:
        assert (shipped[name].external_attr >> 16) & stat.S_IXUSR, f"{name} is not executable in the wheel"


def test_every_package_folder_is_a_regular_package():
    for path, dirs, files in os.walk(os.path.dirname(slurm_mig.__file__)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            assert "__init__.py" in files, f"{path} has modules but no __init__.py"


def test_the_units_name_the_install_they_come_from(monkeypatch, tmp_path):
    scripts = tmp_path / "bin"
    scripts.mkdir()
    (scripts / "slurm-mig").write_text("#!/bin/sh\n")
    (scripts / "slurm-mig").chmod(0o755)
    monkeypatch.setattr(installed.sysconfig, "get_path", lambda name: str(scripts if name == "scripts" else tmp_path))
    units = installed.systemd_units()
    assert sorted(units) == sorted(os.listdir(os.path.join(os.path.dirname(slurm_mig.__file__), "systemd")))
    for text in units.values():
        assert "@SLURM_MIG@" not in text
    assert f"ExecStart={scripts}/slurm-mig reconcile\n" in units["slurm-mig-reconcile.service"]
    with pytest.raises(installed.NotInstalled, match="share/slurm-mig/prolog/slurm-mig-prolog is missing"):
        installed.hook_scripts()
