"""Site hooks: executables an admin drops in hooks_dir to stop and restart GPU
clients (DCGM, monitoring agents) around a MIG mode change, like mig-parted's."""
from __future__ import annotations

import os
import subprocess

from ..errors import NodeProblem
from ..log import log


def runner(hooks_dir: str, timeout: float = 300.0):
    """A function (phase, gpu index, enabled) that runs every executable in
    hooks_dir, in name order, as `HOOK PHASE GPU on|off`. A failing pre hook
    stops the change."""
    def run(phase: str, index: int, enabled: bool) -> None:
        if not os.path.isdir(hooks_dir):
            return
        for name in sorted(os.listdir(hooks_dir)):
            path = os.path.join(hooks_dir, name)
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                continue
            argv = [path, phase, str(index), "on" if enabled else "off"]
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                raise NodeProblem(f"site hook {path} {phase} timed out after {timeout:g}s") from None
            log.info("site hook %s %s GPU %d: exit %d", name, phase, index, p.returncode)
            if p.returncode != 0 and phase.startswith("pre"):
                raise NodeProblem(f"site hook {path} {phase} failed ({p.returncode}): "
                                  f"{(p.stderr or p.stdout).strip()[:500]}")
    return run
