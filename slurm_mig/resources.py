"""Finding the files shipped beside the package: templates/ and the hook scripts."""
from __future__ import annotations

import os
import sys

from .errors import NodeProblem

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resource(*parts: str) -> str:
    """A path under the source checkout, else under <prefix>/share/slurm-mig."""
    for root in (_REPO, os.path.join(sys.prefix, "share", "slurm-mig")):
        path = os.path.join(root, *parts)
        if os.path.exists(path):
            return path
    raise NodeProblem(f"slurm-mig file {os.path.join(*parts)} not found (package incomplete?)")
