"""What the Prolog hands a job through run_dir: its device list
(`<job>.env`), or why it got none (`<job>.fail`), both read by the
TaskProlog (node/jobfiles.py), and the directory its steps claim instances
in; with dcgm_job_mapping_dir, its devices' labels for dcgm-exporter. The
Epilog removes them."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import TYPE_CHECKING, List, Optional

from ..fsutil import atomic_write, safe_dir
from .jobfiles import ENV, FAIL, REQUEUED, STEPS, WHOLE_GPU, Device, devices_text, job_file

if TYPE_CHECKING:
    from ..core.lifecycle import Record


class Handout:
    def __init__(self, run_dir: str, dcgm_dir: str = ""):
        self.run_dir, self.dcgm_dir = run_dir, dcgm_dir

    def ensure(self) -> None:
        """Create run_dir, or refuse one others could write (a node fault)."""
        safe_dir(self.run_dir, 0o755, "run_dir")

    def _write(self, job: str, suffix: str, text: str, uid: Optional[int]) -> None:
        self.ensure()
        atomic_write(job_file(self.run_dir, job, suffix), text.encode(), mode=0o400, uid=uid)

    def remove(self, job: str) -> None:
        for suffix in (ENV, FAIL, REQUEUED):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(job_file(self.run_dir, job, suffix))   # a bad run_dir is refused when written
        steps = job_file(self.run_dir, job, STEPS)
        if os.path.isdir(steps) and not os.path.islink(steps):
            shutil.rmtree(steps, ignore_errors=True)     # the user's: rmtree follows no link in it
        if self.dcgm_dir:
            from . import dcgm
            dcgm.remove(self.dcgm_dir, job)

    def bind(self, job: str, uid: Optional[int], uuids: List[str], rec: Optional["Record"] = None) -> None:
        """Write the job's device list; with a dcgm dir, label its devices
        (from `rec`) for dcgm-exporter."""
        self.remove(job)
        self._write(job, ENV, devices_text(_devices(uuids, rec)), uid)
        if rec is not None and rec.request and uid is not None:
            self._steps_dir(job, uid)
        if rec is not None and self.dcgm_dir:
            from . import dcgm
            dcgm.write(self.dcgm_dir, job, dcgm.mapping_names(rec))

    def _steps_dir(self, job: str, uid: int) -> None:
        """Where the job's steps claim their instances (node/stepclaims.py):
        the user's own, made here because only root may write run_dir."""
        path = job_file(self.run_dir, job, STEPS)
        os.mkdir(path, 0o700)
        os.chown(path, uid, -1, follow_symlinks=False)

    def refuse(self, job: str, uid: Optional[int], reason: str) -> None:
        """The job gets no devices: its TaskProlog prints `reason` and exits 1."""
        self.remove(job)
        self._write(job, FAIL, refusal(job, reason) + "\n", uid)


def refusal(job: str, reason: str) -> str:
    """What the user of a job that gets no devices is told."""
    return f"slurm-mig: job {job} could not get its MIG devices: {reason}"


def _devices(uuids: List[str], rec: Optional[Record]) -> List[Device]:
    """The job file's lines: each device with its GPU and profile (or `gpu`
    for a whole GPU), the UUID alone where the record says neither (static
    mode: Slurm's own File= devices)."""
    if rec is None or rec.static:
        return [Device(u) for u in uuids]
    held = {h.uuid: h for h in rec.instances if h.uuid}
    whole = dict(zip(rec.gpu_uuids, rec.whole_gpus))
    devices = []
    for u in uuids:
        if u in whole:
            devices.append(Device(u, whole[u], WHOLE_GPU))
        elif u in held:
            devices.append(Device(u, held[u].gpu, WHOLE_GPU if rec.whole_gpus else held[u].profile))
        else:
            devices.append(Device(u))
    return devices
