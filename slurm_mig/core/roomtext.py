"""The free-slice summary a node publishes in one Slurm node field (Extra by
default), so one `sinfo` shows every node's room: per GPU, which profiles can
start now and how many of each (each alone).

    slurm-mig:1;t=1765100000;0=H100-SXM5-80GB:1g.10gb*7,3g.40gb*2;1=H100-SXM5-80GB:-

`-` is a GPU with no room (full, or handed out whole). The text is written by
root on the node (only Slurm admins may set node fields), read by any user:
decode() still accepts only what encode() can write and drops the rest.
"""
from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional

MAGIC = "slurm-mig:1"
MAX_COUNT = 99
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,40}")
_PROFILE = re.compile(r"\d{1,2}g\.\d{1,4}gb(?:[+-][a-z]{1,4}(?:\.[a-z]{1,4})?)?")
_GPU = re.compile(r"(\d{1,3})=([^:;]+):(-|[^;]+)")


class GpuRoom(NamedTuple):
    index: int
    model: str
    can_start: Dict[str, int]      # profile -> how many could start now, each alone


class NodeRoom(NamedTuple):
    time: int                      # when the node computed it (Unix seconds)
    gpus: List[GpuRoom]


def encode(room: NodeRoom) -> str:
    parts = [MAGIC, f"t={int(room.time)}"]
    for g in room.gpus:
        free = ",".join(f"{p}*{n}" for p, n in g.can_start.items() if n > 0) or "-"
        parts.append(f"{g.index}={g.model}:{free}")
    return ";".join(parts)


def decode(text: str) -> Optional[NodeRoom]:
    """The summary in `text`, or None when it is not one (unset, another
    tool's value, malformed)."""
    parts = (text or "").strip().split(";")
    if len(parts) < 2 or parts[0] != MAGIC or not re.fullmatch(r"t=\d{1,12}", parts[1]):
        return None
    gpus = []
    for part in parts[2:]:
        m = _GPU.fullmatch(part)
        if not m or not _MODEL.fullmatch(m.group(2)):
            return None
        free: Dict[str, int] = {}
        if m.group(3) != "-":
            for item in m.group(3).split(","):
                name, _, count = item.partition("*")
                if not _PROFILE.fullmatch(name) or not count.isdigit() or not 0 < int(count) <= MAX_COUNT:
                    return None
                free[name] = int(count)
        gpus.append(GpuRoom(int(m.group(1)), m.group(2), free))
    return NodeRoom(int(parts[1][2:]), gpus)
