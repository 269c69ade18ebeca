"""A node installed the way the README tells an admin to, word for word.

The README's admin-install block runs as one `sh -e` script, as root, in a
throwaway overlay of a Debian chroot (slurms.RootView(writable=True)), from
a copy of this checkout at /root/slurm-mig. What the test adds is only what a
real node has and a chroot lacks: simulated GPUs (the config file at its
default path names them), pip's packages from a local wheelhouse (PIP_NO_INDEX,
PIP_FIND_LINKS, as with a site mirror) and a `systemctl` that records what it
was asked (no systemd runs in a chroot). The generated files are then merged
into slurm.conf as the README says, and Slurm runs with the installed hooks,
defaults included (state_dir, run_dir, the hook finding slurm-mig-hook).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, Optional

from . import install, slurms
from .devcluster import ClusterError, DevCluster, _write, node_line

PREFIX = "/opt/slurm-mig"          # what the README's block installs into
CLONE = "/root/slurm-mig"
GEN = "/etc/slurm/gen"


def readme_block(marker: str = "<!-- admin-install -->") -> str:
    """The shell block that follows `marker` in the README."""
    with open(os.path.join(slurms.REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(re.escape(marker) + r"\s*```sh\n(.*?)```", text, re.S)
    if not m:
        raise ClusterError(f"no ```sh block after {marker} in README.md")
    return m.group(1)


class AdminInstallCluster(DevCluster):
    """One node named after this host; slurm-mig from the README's block."""

    def __init__(self, slurm: slurms.Slurm, **kw):
        super().__init__("2xH100-80GB", slurm=slurm, **kw)
        self.nodes = [self.hostname]
        self.node = self.hostname
        self.gpus = {self.hostname: "2xH100-80GB"}
        self.bin = "/usr/local/bin/slurm-mig"          # the README's link
        self.systemctl_log = os.path.join(self.dir, "systemctl.log")
        self.block_output = ""

    def _install(self) -> Optional[install.Installed]:
        return install.Installed(PREFIX)               # made by the README's block, below

    def _view(self) -> slurms.RootView:
        if self.slurm.host:
            raise ClusterError("the admin install runs in a chroot's overlay, not on the host")
        return slurms.RootView(self.slurm.root, self.dir, writable=True)

    def env_for(self, node: Optional[str] = None) -> Dict[str, str]:
        env = super().env_for(node)
        del env["SLURM_MIG_CONFIG"]                    # /etc/slurm-mig/config.toml, the default
        return env

    def epilog_done(self, job: str) -> bool:
        return not os.path.exists(self.in_root("/run/slurm-mig", f"{job}.env")) and \
            "COMPLETING" not in self.run("scontrol", "show", "job", "-o", job, check=False).stdout

    def in_root(self, *path: str) -> str:
        """A path of the node's root, seen from the host."""
        return os.path.join(self.root, *(p.lstrip("/") for p in path))

    def stop(self) -> None:
        # The node's hook server ends once its socket is gone (its run_dir,
        # /run/slurm-mig, outlives the cluster's own folder otherwise).
        if self.view is not None:
            shutil.rmtree(self.in_root("/run/slurm-mig/hookd"), ignore_errors=True)
        super().stop()

    def _layout(self) -> None:
        self._folders()
        state = os.path.join(self.dir, "gpus.json")    # the same path inside and outside
        subprocess.run([sys.executable, "-m", "slurm_mig", "sim", "init", state, "--gpus", self.gpus[self.node]],
                       check=True, capture_output=True, cwd=slurms.REPO)
        os.makedirs(self.in_root("/etc/slurm-mig"))
        _write(self.in_root("/etc/slurm-mig/config.toml"), f'backend = "sim:{state}"\nwait_for_room = 5\n')
        self._run_readme_block()
        gen = self.in_root(GEN)
        shutil.copy(os.path.join(gen, "gres.conf"), os.path.join(self.dir, "etc"))
        shutil.copy(os.path.join(gen, "job_submit.lua"), os.path.join(self.dir, "etc"))
        with open(os.path.join(gen, "slurm.conf.hooks"), encoding="utf-8") as f:
            hooks = f.read()
        self._write_slurm_conf([node_line(os.path.join(gen, "slurm.conf.node"))], hooks)

    def _run_readme_block(self) -> None:
        shutil.copytree(slurms.REPO, self.in_root(CLONE), symlinks=True, ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache", ".hypothesis"))
        wheels = os.path.join(self.dir, "wheelhouse")
        shutil.copytree(install.wheelhouse(install.python_version(self.root)), wheels)
        _write(self.in_root("/usr/local/sbin/systemctl"),
               f'#!/bin/sh\necho "$*" >> {shlex.quote(self.systemctl_log)}\n', 0o755)
        p = subprocess.run(["chroot", self.root, "env", "-i", "HOME=/root", "LANG=C.UTF-8",
                            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "DEBIAN_FRONTEND=noninteractive", "PIP_NO_INDEX=1", f"PIP_FIND_LINKS={wheels}",
                            "PIP_DISABLE_PIP_VERSION_CHECK=1",
                            "sh", "-exc", f"cd {CLONE}\n{readme_block()}"],
                           capture_output=True, text=True, timeout=600)
        self.block_output = p.stdout + p.stderr
        if p.returncode != 0:
            raise ClusterError(f"the README's admin block failed ({p.returncode}):\n{self.block_output[-3000:]}")
