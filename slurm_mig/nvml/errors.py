"""The one NVML error boundary: every NVML error is named here and
translated into what it means for the job or the node (`Effect`).

Both backends raise pynvml's NVMLError subclasses (the simulator raises the
real classes with the real codes), so one class check serves both. pynvml
prints an error as NVML's own string only when the library is loaded, and as
"NVML Error with code 19" otherwise; `fault` gives every error its name, what
it means here and its effect, whichever backend raised it.
"""
from enum import Enum
from typing import NamedTuple, Optional

import pynvml
from pynvml import NVMLError, NVML_ERROR_IN_USE, NVML_ERROR_NOT_FOUND  # noqa: F401

from ..errors import NodeProblem

__all__ = ["NVMLError", "NVML_ERROR_IN_USE", "NVML_ERROR_NOT_FOUND", "Effect", "NvmlFault", "fault",
           "describe", "explain", "node_problem"]


class Effect(str, Enum):
    """What an NVML error means for the job or the node."""
    RETRY = "retry"        # the node moved under the call: read it again and retry (once)
    BUSY = "busy"          # something still holds it: not now; what holds it is kept
    REFUSED = "refused"    # this GPU refuses what was asked: the job fails alone, the node is fine
    NODE = "node"          # the driver or the GPU needs an admin: a node problem (slurmd drains it)


# name -> (what it means here, its effect); the codes NVML's MIG calls return
# (see docs/facts.md, MIG: NVML errors). An error not named here: RETRY.
ERRORS = {
    "INVALID_ARGUMENT": ("a profile or placement this GPU does not accept", Effect.REFUSED),
    "NOT_SUPPORTED": ("not supported here (MIG off, or a profile this GPU lacks)", Effect.REFUSED),
    "NO_PERMISSION": ("needs root", Effect.NODE),
    "NOT_FOUND": ("the instance or GPU is gone", Effect.RETRY),
    "RESET_REQUIRED": ("the GPU needs a reset", Effect.NODE),
    "IN_USE": ("in use (a process, or a compute instance, still holds it)", Effect.BUSY),
    "INSUFFICIENT_RESOURCES": ("no room for it there (the placement is taken)", Effect.RETRY),
    "GPU_IS_LOST": ("the GPU fell off the bus", Effect.NODE),
    "DRIVER_NOT_LOADED": ("the NVIDIA driver is not loaded", Effect.NODE),
    "UNINITIALIZED": ("NVML is not initialised", Effect.NODE),
    "LIB_RM_VERSION_MISMATCH": ("the NVML library and the kernel driver differ in version", Effect.NODE),
}
NAMES = {getattr(pynvml, n): n[len("NVML_ERROR_"):] for n in dir(pynvml)
         if n.startswith("NVML_ERROR_") and isinstance(getattr(pynvml, n), int)}


class NvmlFault(NamedTuple):
    name: str          # NVML's name without NVML_ERROR_, UNKNOWN for a code pynvml does not name
    code: int
    meaning: str
    effect: Effect

    def __str__(self) -> str:
        return f"{self.name} ({self.code}): {self.meaning}"


def fault(e: NVMLError) -> NvmlFault:
    code = getattr(e, "value", None)
    code = code if isinstance(code, int) else -1
    name = NAMES.get(code, "UNKNOWN")
    meaning, effect = ERRORS.get(name, (str(e), Effect.RETRY))
    return NvmlFault(name, code, meaning, effect)


def describe(e: Exception) -> str:
    """'IN_USE (19): in use (a process, ...)' for an NVMLError; str(e) otherwise."""
    return str(fault(e)) if isinstance(e, NVMLError) else str(e)


def explain(e: Exception, doing: str) -> str:
    """The reason a job or an admin reads: 'NVML error while <doing>: <fault>'."""
    return f"NVML error while {doing}: {describe(e)}"


def node_problem(e: Exception, doing: str) -> Optional[NodeProblem]:
    """What `e` means for the node: the NodeProblem it is, or stands for (an
    NVML error whose effect is NODE); None when it is the job's problem."""
    if isinstance(e, NodeProblem):
        return e
    if isinstance(e, NVMLError) and fault(e).effect is Effect.NODE:
        return NodeProblem(f"{explain(e, doing)}; the GPU or its driver needs an admin")
    return None
