"""Where this installation put its commands and hook scripts, and the files
an admin copies that must name them (slurm.conf's hook lines, systemd units).

pip puts console scripts in the install scheme's `scripts` directory and the
hook scripts under its `data` directory (share/slurm-mig/, setup.cfg), so the
paths are derived from the running interpreter's scheme: a venv in /opt/x
gives /opt/x/bin/slurm-mig and /opt/x/share/slurm-mig/prolog/slurm-mig-prolog.
"""
from __future__ import annotations

import os
import sysconfig
from importlib import resources
from typing import Dict, Optional

from .errors import SlurmMigError

HOOK_SCRIPTS = {"Prolog": "prolog/slurm-mig-prolog",
                "TaskProlog": "prolog/slurm-mig-task-prolog",
                "Epilog": "epilog/slurm-mig-epilog"}


class NotInstalled(SlurmMigError):
    """Run from a source tree: there are no installed scripts to name."""


def command(name: str = "slurm-mig") -> str:
    """The absolute path of one of this installation's console scripts."""
    return _existing(os.path.join(sysconfig.get_path("scripts"), name))


def hook_scripts() -> Dict[str, str]:
    """slurm.conf parameter -> absolute path of the installed hook script."""
    share = os.path.join(sysconfig.get_path("data"), "share", "slurm-mig")
    return {param: _existing(os.path.join(share, rel)) for param, rel in HOOK_SCRIPTS.items()}


def hook_scripts_if_installed() -> Optional[Dict[str, str]]:
    """hook_scripts(), or None when run from a source tree."""
    try:
        return hook_scripts()
    except NotInstalled:
        return None


def systemd_units() -> Dict[str, str]:
    """File name -> text of every shipped unit, naming this install's slurm-mig."""
    slurm_mig = command()
    folder = resources.files(__package__).joinpath("systemd")
    return {unit.name: unit.read_text(encoding="utf-8").replace("@SLURM_MIG@", slurm_mig)
            for unit in sorted(folder.iterdir(), key=lambda u: u.name)
            if unit.name.endswith((".service", ".timer"))}


def _existing(path: str) -> str:
    if not os.access(path, os.X_OK):
        raise NotInstalled(f"{path} is missing: this slurm-mig is not a complete pip install "
                           "(a source tree?); install the package with pip into the prefix the "
                           "nodes run it from")
    return path
