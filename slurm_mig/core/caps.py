"""How the NVIDIA driver names MIG capabilities (docs/facts.md, MIG: device nodes),
in one place for the code that reads a node (node/isolation.py, static
gres.conf) and the simulator that writes one. Pure: names and text only.

- `gpu<N>/gi<G>/access`, `gpu<N>/gi<G>/ci<C>/access`: keys of
  /proc/driver/nvidia-caps/mig-minors (N is the GPU's device minor, not its
  NVML index), each with the minor of /dev/nvidia-caps/nvidia-cap<minor>.
- /proc/driver/nvidia/capabilities/gpu<N>/mig/gi<G>[/ci<C>]/access: the
  capability's file (DeviceFileMinor / DeviceFileMode / DeviceFileModify),
  there while the instance exists; `mig/config` and `mig/monitor` always.
- /proc/driver/nvidia/params: the module parameters, `ModifyDeviceFiles: 0|1`
  among them (not in sysfs: the driver registers its parameters with mode 0).
"""
from __future__ import annotations

import re
from typing import Optional

CAPS_DIR = "nvidia-caps"                       # under /dev
CAPS_DEVICE = "nvidia-caps"                    # its name in /proc/devices
NODE_WIDE = {"config": 0o400, "monitor": 0o444}   # the modes the driver registers them with
_KEY = re.compile(r"gpu(\d+)/gi(\d+)(?:/ci(\d+))?/access")


def cap_key(gpu_minor: int, gi: int, ci: Optional[int] = None) -> str:
    return f"gpu{gpu_minor}/gi{gi}/access" if ci is None else f"gpu{gpu_minor}/gi{gi}/ci{ci}/access"


def key_gpu(key: str) -> Optional[int]:
    """The GPU minor of an instance capability key, None for config/monitor."""
    m = _KEY.fullmatch(key)
    return int(m.group(1)) if m else None


def node_path(dev_root: str, minor: int) -> str:
    return f"{dev_root.rstrip('/')}/{CAPS_DIR}/nvidia-cap{minor}"


def proc_path(proc_root: str, key: str) -> str:
    """The capability's /proc file: `gpu0/gi1/access` -> .../capabilities/gpu0/mig/gi1/access."""
    rest = f"mig/{key}" if key in NODE_WIDE else key.replace("/", "/mig/", 1)
    return f"{proc_root.rstrip('/')}/driver/nvidia/capabilities/{rest}"


def params_path(proc_root: str) -> str:
    return f"{proc_root.rstrip('/')}/driver/nvidia/params"


def field(text: str, name: str) -> Optional[int]:
    """A `Name: <number>` line of a driver /proc file (params: `ModifyDeviceFiles`;
    a capability file: `DeviceFileMinor`, `DeviceFileMode`, `DeviceFileModify`)."""
    m = re.search(rf"^{re.escape(name)}:[ \t]*(\d+)[ \t]*$", text, re.M)
    return int(m.group(1)) if m else None


def char_major(devices_text: str, name: str = CAPS_DEVICE) -> Optional[int]:
    """The major number /proc/devices gives a character device driver (the
    nvidia-caps major is allocated at module load, so it differs between nodes)."""
    chars = devices_text.split("Block devices:")[0]
    m = re.search(rf"^\s*(\d+)\s+{re.escape(name)}\s*$", chars, re.M)
    return int(m.group(1)) if m else None
