"""The Slurm versions the end-to-end tests run on, and where each one lives.

The host's own Slurm (Debian bookworm's 22.05) runs in place. Newer ones come
from newer Debian suites, in chroots that mmdebstrap builds from the mirror the
host's apt sources name, cached under /var/cache/slurm-mig-test/<suite> (or
$SLURM_MIG_TEST_CACHE) and rebuilt only when missing. slurm-mig itself is
installed from this checkout's wheel into a prefix of each root's own Python
(harness/install.py), never into the cache: a shared cache must not point at
one checkout.

A cluster never writes into the cache: it mounts a read-only view of it
(RootView) with its own /proc, /sys, /tmp and /etc/hosts, and its own cluster
directory at the same path as on the host, so every path in its configuration
means the same file inside and outside.
"""
from __future__ import annotations

import configparser
import fcntl
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import List, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Slurm version -> the Debian suite that ships it (None: the host's own).
VERSIONS = {"22.05": None, "24.11": "trixie", "26.05": "sid"}
PACKAGES = "slurm-wlm,slurm-client,slurmdbd,munge,python3-venv,procps,lua5.4"


class Unavailable(Exception):
    """This Slurm cannot be had on this machine; the message says why (a skip)."""


class Slurm:
    """One Slurm installation: its file-system root ('/' for the host's own)
    and its version."""

    def __init__(self, root: str = "/"):
        self.root = root
        out = subprocess.run(["chroot", root, "/usr/sbin/slurmd", "-V"], capture_output=True,
                             text=True, timeout=60).stdout
        m = re.search(r"(\d+)\.(\d+)\.\d+", out)
        if not m:
            raise RuntimeError(f"no Slurm version from {root}/usr/sbin/slurmd -V: {out.strip()!r}")
        self.release, self.version = m.group(0), f"{m.group(1)}.{m.group(2)}"
        self.major = int(m.group(1))

    @property
    def host(self) -> bool:
        return self.root == "/"

    def __repr__(self) -> str:
        return f"Slurm {self.release} in {self.root}"


def host() -> Slurm:
    """The host's own Slurm; Unavailable without root or without Debian's packages."""
    if os.geteuid() != 0:
        raise Unavailable("the dev cluster runs slurmd and munged, so it needs root")
    if not os.path.exists("/usr/sbin/slurmd") or not os.path.exists("/usr/sbin/munged"):
        raise Unavailable("needs Debian's slurm-wlm and munge (bash run.sh test installs them)")
    return Slurm()


def get(version: str) -> Slurm:
    """The Slurm `version` (a key of VERSIONS), building its chroot if needed."""
    slurm = host()                 # root and the host's packages are needed either way
    suite = VERSIONS[version]
    if suite is not None:
        slurm = Slurm(ensure_chroot(suite))
    if slurm.version != version:
        raise RuntimeError(f"expected Slurm {version}, found {slurm.release} in {slurm.root}: "
                           "update slurms.VERSIONS")
    return slurm


def with_slurmdbd(slurm: Slurm) -> Slurm:
    """`slurm`, with its slurmdbd: the host's comes from run.sh's packages; a
    cached chroot built before slurmdbd was in PACKAGES gets it added, at
    its slurmctld's version (never an upgrade of what other clusters run)."""
    if os.path.exists(os.path.join(slurm.root, "usr/sbin/slurmdbd")):
        return slurm
    if slurm.host:
        raise Unavailable("needs Debian's slurmdbd and mariadb-server (bash run.sh test installs them)")
    with open(slurm.root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(slurm.root, "usr/sbin/slurmdbd")):
            version = subprocess.run(["chroot", slurm.root, "dpkg-query", "-W", "-f=${Version}", "slurmctld"],
                                     capture_output=True, text=True, check=True).stdout
            log = slurm.root + ".build.log"
            try:
                _logged(["chroot", slurm.root, "apt-get", "update", "-qq"], log, "apt-get update")
                _logged(["chroot", slurm.root, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install",
                         "-y", "-qq", "--no-install-recommends", f"slurmdbd={version}"], log, "installing slurmdbd")
            except RuntimeError as e:          # no mirror, or the version is gone from it
                raise Unavailable(f"slurmdbd {version} cannot be added to {slurm.root}: {e}") from None
    return slurm


# -- building the chroots ------------------------------------------------------

def cache_dir() -> str:
    return os.environ.get("SLURM_MIG_TEST_CACHE", "/var/cache/slurm-mig-test")


def mirror(sources: Optional[List[str]] = None) -> str:
    """The Debian mirror of the host's apt sources (deb822 or one-line format)."""
    if sources is None:
        sources = sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list"]
    for path in sources:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        for m in re.finditer(r"^(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1).rstrip("/")
    raise Unavailable("no Debian mirror in the host's apt sources")


def requirements() -> str:
    """slurm-mig's runtime requirements, one per line, from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, "setup.cfg"))
    return "\n".join(r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()) + "\n"


def ensure_chroot(suite: str) -> str:
    """The cached chroot for `suite`, built if missing. One builder at a time
    per suite (a lock file); a half-built tree is never where the cache's
    readers look."""
    root = os.path.join(cache_dir(), suite)
    os.makedirs(cache_dir(), exist_ok=True)
    with open(root + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isdir(root):
            _build(suite, root)
    return root


def _build(suite: str, root: str) -> None:
    if shutil.which("mmdebstrap") is None:
        raise Unavailable("mmdebstrap is not installed (bash run.sh test installs it)")
    url = mirror()
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/dists/{suite}/Release", method="HEAD"),
                               timeout=20).close()
    except (urllib.error.URLError, OSError) as e:
        raise Unavailable(f"the Debian mirror {url} is unreachable ({e}), so the {suite} chroot "
                          "cannot be built") from None
    for stale in glob.glob(f"{root}.build-*"):   # a killed build's (the lock is ours)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = f"{root}.build-{os.getpid()}"
    argv = ["mmdebstrap", "--variant=minbase", f"--include={PACKAGES}", suite, tmp, url]
    if suite in ("sid", "unstable"):             # the mirror's sid Release can be past Valid-Until
        argv.insert(1, "--aptopt=Acquire::Check-Valid-Until \"false\"")
    started = time.monotonic()
    _logged(argv, root + ".build.log", f"mmdebstrap {suite}")
    _log(root, f"built {suite} in {time.monotonic() - started:.1f} s")
    os.rename(tmp, root)


def _logged(argv: List[str], log: str, what: str) -> None:
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
    if p.returncode != 0:
        with open(log, encoding="utf-8", errors="replace") as f:
            tail = "".join(f.readlines()[-15:])
        raise RuntimeError(f"{what} failed ({p.returncode}); end of {log}:\n{tail}")


def _log(root: str, line: str) -> None:
    print(f"slurm-mig-test: {line}", file=sys.stderr)
    with open(root + ".build.log", "a", encoding="utf-8") as f:
        f.write(line + "\n")


# -- one cluster's view of a chroot --------------------------------------------

def mounts_under(path: str) -> List[str]:
    """Mount points at or below `path`, deepest first (from /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
                  for line in f]
    return sorted((p for p in points if p == path or p.startswith(path + "/")), key=len, reverse=True)


class RootView:
    """A cluster's private, read-only view of a cached chroot: fresh /proc and
    /sys, a tmpfs /tmp holding the cluster directory (bound at its host path,
    writable) and any `read_only` directories (e.g. slurm-mig's install
    prefix, at their host paths), and an /etc/hosts that names this host
    (munge and slurmctld need it). `writable`: the chroot itself is a
    throwaway overlay (what is written there is dropped at unmount), for
    tests that install into it as an admin would."""

    def __init__(self, source: str, cluster_dir: str, read_only: Sequence[str] = (),
                 writable: bool = False):
        for d in (cluster_dir, *read_only):
            if os.path.dirname(d) != "/tmp":
                raise RuntimeError(f"a directory a chroot sees must be /tmp/<name>, not {d}")
        self.source, self.cluster_dir, self.read_only = source, cluster_dir, list(read_only)
        self.root = tempfile.mkdtemp(prefix="slurm-mig-root-", dir="/tmp")
        self.layers = tempfile.mkdtemp(prefix="slurm-mig-overlay-", dir="/tmp") if writable else None

    def mount(self) -> str:
        r = self.root
        if self.layers:
            upper, work = (os.path.join(self.layers, d) for d in ("upper", "work"))
            os.makedirs(upper), os.makedirs(work)
            _mount("-t", "overlay", "overlay", "-o", f"lowerdir={self.source},upperdir={upper},workdir={work}", r)
        else:
            _mount("--bind", self.source, r)
            _mount("-o", "remount,bind,ro", r)
        _mount("-t", "proc", "proc", f"{r}/proc")
        _mount("-t", "sysfs", "sysfs", f"{r}/sys")
        _mount("-t", "tmpfs", "-o", "size=64m,mode=1777", "tmpfs", f"{r}/tmp")
        os.mkdir(r + self.cluster_dir)
        _mount("--bind", self.cluster_dir, r + self.cluster_dir)
        for d in self.read_only:
            os.mkdir(r + d)
            _mount("--bind", d, r + d)
            _mount("-o", "remount,bind,ro", r + d)
        with open(f"{r}/etc/hosts", encoding="utf-8") as f:
            text = f.read()
        with open(f"{r}/tmp/hosts", "w", encoding="utf-8") as f:
            f.write(text + f"127.0.0.1 {os.uname().nodename} {os.uname().nodename.split('.')[0]}\n")
        _mount("--bind", f"{r}/tmp/hosts", f"{r}/etc/hosts")
        return r

    def unmount(self) -> None:
        """Undo every mount (lazily where busy), then remove the empty mount
        point. Never deletes anything else: below a mount lie the host's files."""
        for point in mounts_under(self.root):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
        left = mounts_under(self.root)
        if left:
            raise RuntimeError(f"still mounted, left in place: {left}")
        os.rmdir(self.root)
        if self.layers:
            shutil.rmtree(self.layers)


def _mount(*args: str) -> None:
    p = subprocess.run(["mount", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)} failed: {p.stderr.strip()}")


if __name__ == "__main__":      # python3 tests/harness/slurms.py trixie sid: build or find them
    for name in sys.argv[1:]:
        print(ensure_chroot(name))
