"""A simulated NVML: the pynvml calls this project makes, over a shared JSON state file."""
from .nvml import SimNvml
from .state import SimStore, init_state

__all__ = ["SimNvml", "SimStore", "init_state"]
