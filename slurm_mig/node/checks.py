"""The checks of `slurm-mig doctor` that need only the node: the directories
root writes into and the systemd units (slurm/doctor.py adds Slurm's)."""
from __future__ import annotations

import os
import re
from typing import Iterator, List, NamedTuple, Optional

from .. import installed
from ..config import Config
from ..fsutil import dir_fix, read_text, unsafe_dir

OK, FAIL, SKIP = "ok", "FAIL", "skip"


class Check(NamedTuple):
    name: str
    status: str            # OK, FAIL or SKIP
    text: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.text}" + (f" -- fix: {self.fix}" if self.fix else "")


def directories(cfg: Config) -> Iterator[Check]:
    created = "not there yet: the first hook that needs it creates it"
    dirs = [("state_dir", cfg.state_dir, 0o700, created), ("run_dir", cfg.run_dir, 0o755, created)]
    if cfg.dcgm_job_mapping_dir:
        dirs.append(("dcgm_job_mapping_dir", cfg.dcgm_job_mapping_dir, 0o755, created))
    dirs.append(("hooks_dir", cfg.hooks_dir, 0o755, "not there: no site hooks"))   # run as root
    for setting, path, mode, absent in dirs:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            yield Check(setting, OK, f"{path} {absent}")
            continue
        why = unsafe_dir(st)
        if why:
            yield Check(setting, FAIL, f"{path} is {why}: another user could plant files root acts on",
                        dir_fix(path, mode))
        else:
            yield Check(setting, OK, f"{path} mode {st.st_mode & 0o7777:04o}, uid {st.st_uid}")


def hook_server(cfg: Config) -> Check:
    """Whether a hook server (hooks/server.py) answers under run_dir, where
    slurmd's hooks look when it exports SLURM_MIG_RUN_DIR as the TaskProlog needs."""
    if not cfg.hook_server:
        return Check("hook_server", OK, "off: every Prolog and Epilog runs as a process of its own")
    directory = os.path.join(cfg.run_dir, "hookd")
    try:
        sockets = sorted(n for n in os.listdir(directory) if n.endswith(".sock"))
    except OSError:
        sockets = []
    answering = [os.path.join(directory, n) for n in sockets if _answers(os.path.join(directory, n))]
    if answering:
        return Check("hook_server", OK, "serving on " + ", ".join(answering))
    return Check("hook_server", OK, "none running now: the next Prolog or Epilog starts one")


def _answers(path: str) -> bool:
    """A connection is taken (the server's spare child then finds no request and ends)."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def wanted_units(cfg: Config) -> List[str]:
    units = ["slurm-mig-reconcile.timer"]
    if cfg.isolate_devices:
        units.append("slurm-mig-node-setup.service")
    if cfg.mode == "static":
        units.append("slurm-mig-layout.service")
    return units


def systemd(cfg: Config, unit_dir: Optional[str]) -> Iterator[Check]:
    if unit_dir is None:
        if not os.path.isdir("/run/systemd/system"):
            yield Check("systemd", SKIP, "systemd is not running here")
            return
        unit_dir = "/etc/systemd/system"
    try:
        shipped = installed.systemd_units()
    except installed.NotInstalled as e:
        yield Check("systemd", SKIP, str(e))
        return
    write = f"`slurm-mig systemd-units --output {unit_dir}` then `systemctl daemon-reload`"
    for unit in wanted_units(cfg):
        files = [unit] + ([unit.replace(".timer", ".service")] if unit.endswith(".timer") else [])
        stale = [f for f in files if read_text(os.path.join(unit_dir, f)) != shipped[f]]
        targets = re.findall(r"^WantedBy=(\S+)", shipped[unit], re.M)
        if stale:
            yield Check(unit, FAIL, f"{', '.join(stale)} in {unit_dir} missing or not this install's", write)
        elif not any(os.path.lexists(os.path.join(unit_dir, f"{t}.wants", unit)) for t in targets):
            yield Check(unit, FAIL, "not enabled", f"systemctl enable --now {unit}")
        else:
            yield Check(unit, OK, f"installed and enabled in {unit_dir}")
