"""Backends: a pynvml-shaped object, real or simulated, chosen by a spec string.

'nvml' is the pynvml module itself (package nvidia-ml-py); 'sim:PATH' is the
simulated NVML over the node state file PATH. Both offer the same call names,
ctypes structs and NVMLError classes, so the driver is written once.
"""
from __future__ import annotations

from ..errors import BadInput


def open_backend(spec: str):
    """'nvml' -> the pynvml module; 'sim:PATH' -> a simulated NVML on PATH."""
    if spec == "nvml":
        import pynvml
        return pynvml
    if spec.startswith("sim:") and len(spec) > 4:
        from ..sim import SimNvml
        return SimNvml(spec[4:])
    raise BadInput(f"unknown backend {spec!r}; use 'nvml' or 'sim:STATE.json'")


def open_driver(spec: str):
    """A Driver over the backend `spec`."""
    from .driver import Driver
    return Driver(open_backend(spec))
