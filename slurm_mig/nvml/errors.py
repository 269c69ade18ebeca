"""NVML errors, recognised by class at the NVML boundary.

Both backends raise pynvml's NVMLError subclasses (the simulator raises the
real classes with the real codes), so one class check serves both.
"""
from pynvml import NVMLError, NVML_ERROR_IN_USE, NVML_ERROR_NOT_FOUND  # noqa: F401

__all__ = ["NVMLError", "NVML_ERROR_IN_USE", "NVML_ERROR_NOT_FOUND"]
