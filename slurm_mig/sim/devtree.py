"""The simulated node's device and proc tree, next to its state file
(`<state>.root/`, config.sim_root): what the NVIDIA driver and
nvidia-modprobe make on a real node (docs/facts.md, MIG: device nodes).

    dev/nvidia<minor>, dev/nvidiactl          char 195:<minor>, 195:255, mode 0666
    dev/nvidia-caps/nvidia-cap<M>             char CAPS_MAJOR:<M>: config 0400, monitor
                                              0444, every GI/CI access cap of the local
                                              GPUs 0444 (the driver's default)
    proc/driver/nvidia-caps/mig-minors        every capability and its minor
    proc/driver/nvidia/capabilities/mig/{config,monitor}, and
    proc/driver/nvidia/capabilities/gpu<N>/mig/gi<G>[/ci<C>]/access while that
    instance exists (the simulated NVML adds and removes them, instance_caps())
                                              DeviceFileMinor / DeviceFileMode / DeviceFileModify
    proc/devices                              the nvidia-caps major
    proc/driver/nvidia/params                 ModifyDeviceFiles: 1 (the module's default)

Opening one of these char devices finds no driver (ENXIO), so a test tells that
from a permission denial (EACCES). Without CAP_MKNOD (not root) the nodes are
plain empty files with the same names and modes.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from typing import List, Optional

from ..config import sim_root
from ..core import caps

NVIDIA_MAJOR = 195            # fixed for /dev/nvidia*
CAPS_MAJOR = 508              # dynamic on a real node (/proc/devices nvidia-caps)
GPU_SLOTS = 32                # mig-minors covers 32 GPUs


def cap_minor(gpu_minor: int, gi: int, ci: int = -1) -> int:
    """The observed formula: gpuN/giG/access = 3 + 135N + 9G, its CI C follows at +1+C."""
    base = 3 + 135 * gpu_minor + 9 * gi
    return base if ci < 0 else base + 1 + ci


def mig_minors_text(gpus: int = GPU_SLOTS) -> str:
    """/proc/driver/nvidia-caps/mig-minors as the driver writes it."""
    lines = ["config 1", "monitor 2"]
    for n in range(gpus):
        for g in range(15):
            lines.append(f"{caps.cap_key(n, g)} {cap_minor(n, g)}")
            lines.extend(f"{caps.cap_key(n, g, c)} {cap_minor(n, g, c)}" for c in range(8))
    return "\n".join(lines) + "\n"


def cap_proc_text(minor: int, mode: int, modify: int = 1) -> str:
    return f"DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: {modify}\n"


def instance_caps(state_path: str, gpu_minor: int, gi: int, ci: Optional[int] = None,
                  present: bool = True) -> None:
    """Register (or remove) the /proc capability file of a GI or CI, as the
    driver does when it creates (destroys) one: mode 0444 (DeviceFileMode 292),
    DeviceFileModify from the module parameter."""
    proc = os.path.join(sim_root(state_path), "proc")
    key = caps.cap_key(gpu_minor, gi, ci)
    path = caps.proc_path(proc, key)
    if not present:                             # the GI's or CI's directory, with what is under it
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        return
    try:
        with open(caps.params_path(proc), encoding="ascii") as f:
            modify = caps.field(f.read(), "ModifyDeviceFiles")
    except FileNotFoundError:
        return                                  # a state file without its tree: nothing to mirror
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    minor = cap_minor(gpu_minor, gi, -1 if ci is None else ci)
    _write(path, cap_proc_text(minor, 0o444, 1 if modify is None else modify))


def _node(path: str, major: int, minor: int, mode: int) -> None:
    try:
        os.mknod(path, mode | stat.S_IFCHR, os.makedev(major, minor))
    except OSError as e:
        if e.errno != errno.EPERM:
            raise
        open(path, "w").close()           # no CAP_MKNOD: a plain file stands in
    os.chmod(path, mode)


def _write(path: str, text: str, mode: int = 0o444) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)
    os.chmod(path, mode)


def make_tree(state_path: str, gpu_minors: List[int]) -> str:
    """(Re)create the tree for GPUs with these device minors; returns its root."""
    root = sim_root(state_path)
    if os.path.islink(root):
        raise OSError(errno.ELOOP, f"{root} is a symlink")
    shutil.rmtree(root, ignore_errors=True)
    dev, caps_dir = os.path.join(root, "dev"), os.path.join(root, "dev", caps.CAPS_DIR)
    proc = os.path.join(root, "proc", "driver")
    for d in (caps_dir, os.path.join(proc, "nvidia-caps"),
              os.path.join(proc, "nvidia", "capabilities", "mig")):
        os.makedirs(d, mode=0o755, exist_ok=True)
    for m in gpu_minors:
        _node(os.path.join(dev, f"nvidia{m}"), NVIDIA_MAJOR, m, 0o666)
    _node(os.path.join(dev, "nvidiactl"), NVIDIA_MAJOR, 255, 0o666)
    for minor, (name, mode) in enumerate(caps.NODE_WIDE.items(), start=1):
        _node(os.path.join(caps_dir, f"nvidia-cap{minor}"), CAPS_MAJOR, minor, mode)
        _write(caps.proc_path(os.path.join(root, "proc"), name), cap_proc_text(minor, mode))
    for m in gpu_minors:
        for g in range(15):
            for minor in [cap_minor(m, g)] + [cap_minor(m, g, c) for c in range(8)]:
                _node(os.path.join(caps_dir, f"nvidia-cap{minor}"), CAPS_MAJOR, minor, 0o444)
    _write(os.path.join(proc, "nvidia-caps", "mig-minors"), mig_minors_text())
    _write(os.path.join(proc, "nvidia", "params"), "ModifyDeviceFiles: 1\nDeviceFileUID: 0\n"
           "DeviceFileGID: 0\nDeviceFileMode: 438\n")
    _write(os.path.join(root, "proc", "devices"), f"Character devices:\n  1 mem\n"
           f"{NVIDIA_MAJOR} nvidia-frontend\n{CAPS_MAJOR} {caps.CAPS_DEVICE}\n\nBlock devices:\n"
           "  8 sd\n")
    return root
