"""What the NVIDIA driver publishes under /proc: the MIG capability minors."""
from __future__ import annotations

import os
import re
from typing import Dict

from ..errors import NodeProblem


def read_mig_minors(proc_root: str) -> Dict[str, int]:
    """`gpuN/giG/access` and `gpuN/giG/ciC/access` -> minor of /dev/nvidia-caps/nvidia-capM."""
    path = os.path.join(proc_root, "driver", "nvidia-caps", "mig-minors")
    try:
        with open(path, encoding="ascii") as f:
            text = f.read()
    except OSError as e:
        raise NodeProblem(f"cannot read {path}: {e.strerror}; is the NVIDIA driver loaded?") from e
    minors = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if m:
            minors[m.group(1)] = int(m.group(2))
    return minors
