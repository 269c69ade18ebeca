"""Steering a simulated node from outside NVML: injected faults, busy
instances, GPU resets. What `slurm-mig sim ...` does; never part of NVML."""
from __future__ import annotations

from typing import Optional

import pynvml

from ..errors import BadInput
from .nvml import KILL, SimNvml, lookup_uuid
from .state import SimStore


def error_code(value: str) -> int:
    """An NVML error code from a number, a name (IN_USE, NVML_ERROR_IN_USE) or KILL."""
    if value.isdigit():
        return int(value)
    if value.upper() == "KILL":
        return KILL
    name = "NVML_ERROR_" + value.upper().replace("NVML_ERROR_", "")
    if not hasattr(pynvml, name):
        raise BadInput(f"unknown NVML error {value!r}; use a number or a name such as "
                       "IN_USE, INSUFFICIENT_RESOURCES, UNKNOWN")
    return getattr(pynvml, name)


def add_fault(path: str, call: str, error: str, after: int = 0, times: int = 1) -> None:
    """Make the (after+1)th call of NVML function `call` fail `times` times."""
    if not hasattr(SimNvml, call):
        raise BadInput(f"the simulator has no NVML function {call!r}")
    if after < 0 or times < 1:
        raise BadInput("--after must be >= 0 and --times >= 1")
    code = error_code(error)
    with SimStore(path).transaction() as st:
        st["_dirty"] = True
        st["calls"].pop(call, None)
        st["faults"].append({"call": call, "error": code, "after": after, "times": times, "fired": 0})


def clear_faults(path: str) -> None:
    with SimStore(path).transaction() as st:
        st["_dirty"] = True
        st["faults"], st["calls"] = [], {}


def set_busy(path: str, mig_uuid: str, busy: bool = True) -> Optional[int]:
    """Start a simulated process on an instance (its pid) or end them all (None)."""
    with SimStore(path).transaction() as st:
        where = lookup_uuid(st, mig_uuid)
        if where is None:
            raise BadInput(f"no instance with UUID {mig_uuid} on this simulated node")
        g, gi, ci = where
        st["_dirty"] = True
        if not busy:
            st["processes"] = [p for p in st["processes"] if (p["gpu"], p["gi"], p["ci"]) != where]
            return None
        st["next_pid"] += 1
        st["processes"].append({"pid": st["next_pid"], "gpu": g, "gi": gi, "ci": ci})
        return st["next_pid"]


def reset_gpu(path: str, index: int) -> None:
    """Reset one simulated GPU: a pending MIG mode takes effect, instances vanish."""
    n = SimNvml(path)
    n.nvmlInit()
    try:
        n.reset_gpu(index)
    except pynvml.NVMLError as e:
        raise BadInput(f"cannot reset GPU {index}: "
                       + ("processes are running on it" if e.value == pynvml.NVML_ERROR_IN_USE
                          else f"no GPU {index} on this simulated node")) from None
