"""NVML errors, recognised by class at the NVML boundary, and said by name.

Both backends raise pynvml's NVMLError subclasses (the simulator raises the
real classes with the real codes), so one class check serves both. pynvml
prints an error as NVML's own string only when the library is loaded, and as
"NVML Error with code 19" otherwise; `describe` gives every message the name
and what it means here, whichever backend raised it.
"""
import pynvml
from pynvml import NVMLError, NVML_ERROR_IN_USE, NVML_ERROR_NOT_FOUND  # noqa: F401

__all__ = ["NVMLError", "NVML_ERROR_IN_USE", "NVML_ERROR_NOT_FOUND", "describe"]

# What an error means for the instance or GPU at hand (the codes that NVML's
# MIG calls return; see docs/facts.md, MIG: NVML errors).
MEANINGS = {
    "INVALID_ARGUMENT": "a profile or placement this GPU does not accept",
    "NOT_SUPPORTED": "not supported here (MIG off, or a profile this GPU lacks)",
    "NO_PERMISSION": "needs root",
    "NOT_FOUND": "the instance or GPU is gone",
    "RESET_REQUIRED": "the GPU needs a reset",
    "IN_USE": "in use (a process, or a compute instance, still holds it)",
    "INSUFFICIENT_RESOURCES": "no room for it there (the placement is taken)",
    "GPU_IS_LOST": "the GPU fell off the bus",
}
NAMES = {getattr(pynvml, n): n[len("NVML_ERROR_"):] for n in dir(pynvml)
         if n.startswith("NVML_ERROR_") and isinstance(getattr(pynvml, n), int)}


def describe(e: Exception) -> str:
    """'IN_USE (19): in use (a process, ...)' for an NVMLError; str(e) otherwise."""
    code = getattr(e, "value", None)
    if not isinstance(e, NVMLError) or not isinstance(code, int):
        return str(e)
    name = NAMES.get(code, "UNKNOWN")
    return f"{name} ({code}): {MEANINGS.get(name, str(e))}"
