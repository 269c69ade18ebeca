"""Hook work that must not make a job wait runs in a process of its own."""
from __future__ import annotations

import os
from typing import Mapping, Optional


def spawn_detached(verb: str, job: str, env: Optional[Mapping[str, str]] = None) -> None:
    """`slurm-mig-hook <verb>` in a session of its own, detached from slurmd's
    pipes, so the hook that starts it ends at once: `steer` (slurm/requeue.py)
    outlives the Prolog by the Epilog's run time, `publish` (slurm/room.py)
    sends the node's free slices to Slurm without making a job wait,
    `stuck-hold` (hooks/stuckgpu.py) holds a GPU a stuck instance is on."""
    import subprocess
    import sys
    subprocess.Popen([sys.executable, "-m", "slurm_mig.hooks.main", verb],
                     env={**os.environ, **(env or {}), "SLURM_JOB_ID": job},
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)
