"""The package as an admin installs it, for the demo and every end-to-end test.

The wheel is built once from this checkout (`pip wheel`, as `pip install .`
builds it) and installed, not editable and not through PYTHONPATH, into a
venv of each Slurm root's own /usr/bin/python3: the host's, or a chroot's
(made inside the chroot). slurmd then runs the hook scripts the wheel put
under <prefix>/share/slurm-mig/, which find <prefix>/bin/slurm-mig-hook on
their own. Dependencies come from a wheelhouse per Python version, fetched
once by the host's pip into the test cache, so an install needs no network.

A prefix is /tmp/slurm-mig-prefix-<source hash>-<Slurm version>: built once
per checkout state and reused by later runs; a chroot cluster sees it at the
same path (read-only, slurms.RootView).
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

from slurm_mig.fsutil import read_text

from . import slurms

# What `pip install .` reads from a clone; the rest (tests, docs, the venv) is not packaged.
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                              ".pytest_cache", ".hypothesis", "tests", "bench", "docs", "demo")
BUILD_TOOLS = "setuptools>=61\nwheel\n"          # what `pip install .` builds with
_wheel: Optional[str] = None


def source_tree(dest: str) -> str:
    """A copy of what `pip install .` packages, at dest; returns its hash."""
    shutil.copytree(slurms.REPO, dest, ignore=SKIP)
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(dest)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, dest).encode() + b"\0")
            digest.update(str(os.stat(path).st_mode & 0o111).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()[:16]


def wheel() -> str:
    """This checkout's wheel, built once per test process (cached by content)."""
    global _wheel
    if _wheel is None or not os.path.exists(_wheel):
        with tempfile.TemporaryDirectory(prefix="slurm-mig-src-") as tmp:
            key = source_tree(os.path.join(tmp, "src"))
            out = os.path.join(slurms.cache_dir(), "wheels", key)
            found = glob.glob(os.path.join(out, "slurm_mig-*.whl"))
            if not found:
                build = out + f".build-{os.getpid()}"
                _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                      "-w", build, os.path.join(tmp, "src")], "pip wheel")
                os.makedirs(os.path.dirname(out), exist_ok=True)
                os.rename(build, out)
                found = glob.glob(os.path.join(out, "slurm_mig-*.whl"))
            _wheel = found[0]
    return _wheel


class Installed:
    """One install: `prefix` as seen from the Slurm root it was made in."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def bin(self, name: str) -> str:
        return os.path.join(self.prefix, "bin", name)

    def hook_script(self, relative: str) -> str:
        """e.g. hook_script('prolog/slurm-mig-prolog')."""
        return os.path.join(self.prefix, "share", "slurm-mig", relative)


def for_slurm(slurm: "slurms.Slurm") -> Installed:
    """This checkout's wheel installed for `slurm`'s root, made once."""
    whl = wheel()
    key = os.path.basename(os.path.dirname(whl))
    prefix = f"/tmp/slurm-mig-prefix-{key}-{slurm.version}"
    with open(prefix + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(prefix, ".complete")):
            shutil.rmtree(prefix, ignore_errors=True)
            started = time.monotonic()
            _install(slurm, whl, prefix)
            print(f"slurm-mig-test: installed {os.path.basename(whl)} for Slurm {slurm.version} "
                  f"in {prefix} ({time.monotonic() - started:.1f} s)", file=sys.stderr)
        _prune(prefix, slurm.version)
    return Installed(prefix)


def _install(slurm: "slurms.Slurm", whl: str, prefix: str) -> None:
    """python3 -m venv PREFIX && PREFIX/bin/pip install the wheel, inside the
    Slurm's root, offline from the wheelhouse (copied in, removed after)."""
    wheels = os.path.join(prefix, ".wheels")
    os.makedirs(wheels)
    for path in glob.glob(os.path.join(wheelhouse(python_version(slurm.root)), "*.whl")) + [whl]:
        shutil.copy(path, wheels)
    view = None if slurm.host else slurms.RootView(slurm.root, prefix)
    inside = [] if view is None else ["chroot", view.mount()]
    try:
        env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"]
        _run(inside + env + ["/usr/bin/python3", "-m", "venv", prefix], "python3 -m venv")
        _run(inside + env + [f"{prefix}/bin/pip", "install", "-q", "--no-index", "--disable-pip-version-check",
                             "--find-links", wheels, os.path.join(wheels, os.path.basename(whl))],
             "pip install")
    finally:
        if view is not None:
            view.unmount()
    shutil.rmtree(wheels)
    open(os.path.join(prefix, ".complete"), "w").close()


def _prune(keep: str, version: str) -> None:
    """Earlier checkouts' prefixes for this version, unused for an hour."""
    for old in glob.glob(f"/tmp/slurm-mig-prefix-*-{version}"):
        if old != keep and time.time() - os.stat(old).st_mtime > 3600:
            shutil.rmtree(old, ignore_errors=True)
            with __import__("contextlib").suppress(OSError):
                os.unlink(old + ".lock")


def python_version(root: str) -> str:
    """'3.11' for the /usr/bin/python3 of `root`."""
    return subprocess.run(["chroot", root, "/usr/bin/python3", "-c",
                           "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def wheelhouse(py: str) -> str:
    """Wheels of slurm-mig's requirements (and build tools) for Python `py`,
    fetched by the host's pip (its index, proxy and certificates) once per
    set of requirements."""
    house = os.path.join(slurms.cache_dir(), "wheelhouse", f"py{py}")
    wanted = slurms.requirements() + BUILD_TOOLS
    stamp = os.path.join(house, "requirements.txt")
    os.makedirs(os.path.dirname(house), exist_ok=True)
    with open(house + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if read_text(stamp) != wanted:
            shutil.rmtree(house, ignore_errors=True)
            tmp = house + f".build-{os.getpid()}"
            os.makedirs(tmp)
            reqs = os.path.join(tmp, "requirements.txt")
            with open(reqs, "w", encoding="utf-8") as f:
                f.write(wanted)
            p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                                "--disable-pip-version-check", "--python-version", py, "--implementation", "cp",
                                "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
                                "--platform", "manylinux_2_28_x86_64", "-d", tmp, "-r", reqs],
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                raise slurms.Unavailable(f"pip could not fetch slurm-mig's requirements for Python {py}: "
                                         f"{p.stderr.strip().splitlines()[-1:] or p.returncode}")
            os.rename(tmp, house)
    return house


def _run(argv: List[str], what: str) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"{what} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-2000:]}")
