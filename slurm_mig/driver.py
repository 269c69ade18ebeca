"""The NVML driver layer, written once against the pynvml API.

`nvml` is either the real `pynvml` module or a SimNvml: the same calls run
unchanged on both. Everything above this module speaks in Gpu / Instance.
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import List, NamedTuple, Optional, Tuple

from . import catalog
from .errors import NodeProblem


class Instance(NamedTuple):
    """One GPU instance and its (full-size) compute instance."""
    gpu: int
    profile_id: int
    profile: str
    gi_id: int
    start: int
    size: int
    ci_id: Optional[int] = None
    uuid: Optional[str] = None
    ci_count: int = 0


class Gpu:
    """A GPU as NVML reports it; mig_current/pending are -1 when MIG is unsupported."""

    def __init__(self, index: int, name: str, uuid: str, minor: int,
                 model: Optional[catalog.GpuModel], mig_current: int, mig_pending: int,
                 instances: Optional[List[Instance]] = None):
        self.index, self.name, self.uuid, self.minor = index, name, uuid, minor
        self.model, self.mig_current, self.mig_pending = model, mig_current, mig_pending
        self.instances: List[Instance] = instances or []

    @property
    def model_key(self) -> str:
        return self.model.key if self.model else "unknown"


def _nvml_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Driver:
    def __init__(self, nvml):
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            raise NodeProblem(f"NVML initialisation failed: {e}; check the NVIDIA driver") from e

    def close(self) -> None:
        self.nvml.nvmlShutdown()

    def batch(self):
        """Group many calls: the simulator then locks its state once. Real NVML
        needs nothing of the kind."""
        session = getattr(self.nvml, "session", None)
        return session() if session else contextlib.nullcontext()

    # -- reading ---------------------------------------------------------
    def count(self) -> int:
        return self.nvml.nvmlDeviceGetCount()

    def handle(self, index: int):
        return self.nvml.nvmlDeviceGetHandleByIndex(index)

    def gpu(self, index: int, with_instances: bool = True) -> Gpu:
        with self.batch():
            return self._gpu(index, with_instances)

    def _gpu(self, index: int, with_instances: bool) -> Gpu:
        n = self.nvml
        h = self.handle(index)
        name = _nvml_str(n.nvmlDeviceGetName(h))
        pci = n.nvmlDeviceGetPciInfo(h)
        model = catalog.load().identify(name, f"0x{pci.pciDeviceId >> 16:04X}")
        try:
            current, pending = n.nvmlDeviceGetMigMode(h)
        except n.NVMLError_NotSupported:
            current = pending = -1    # not MIG-capable
        gpu = Gpu(index=index, name=name, uuid=_nvml_str(n.nvmlDeviceGetUUID(h)),
                  minor=n.nvmlDeviceGetMinorNumber(h), model=model,
                  mig_current=current, mig_pending=pending)
        if with_instances and current == 1:
            gpu.instances = self._instances(index, h, model)
        return gpu

    def gpus(self, with_instances: bool = True) -> List[Gpu]:
        with self.batch():
            return [self.gpu(i, with_instances) for i in range(self.count())]

    def gi_profiles(self, h) -> List[Tuple[int, object]]:
        """(enum, profile info) for every GI profile the device reports."""
        n = self.nvml
        out = []
        for enum in range(catalog.GI_ENUM_COUNT):
            try:
                out.append((enum, n.nvmlDeviceGetGpuInstanceProfileInfo(h, enum)))
            except n.NVMLError_NotSupported:
                continue
            except n.NVMLError_InvalidArgument:
                break
        return out

    def _profile_ids(self, h, model) -> List[Tuple[int, str, int, Optional[List[int]]]]:
        """(profile id, name, max instances, CI profile enums or None for all),
        from the catalog or, for a model it does not know, from NVML."""
        if model:
            return [(p.id, p.name, p.max, [c.enum for c in model.ci_profiles_for(p)])
                    for p in model.profiles]
        return [(info.id, _nvml_str(info.name).replace("MIG ", ""), info.instanceCount, None)
                for _, info in self.gi_profiles(h)]

    def _instances(self, index: int, h, model) -> List[Instance]:
        n = self.nvml
        found = []
        for pid, name, max_count, ci_enums in self._profile_ids(h, model):
            array = (n.c_nvmlGpuInstance_t * max(max_count, 1))()
            count = ctypes.c_uint(len(array))
            n.nvmlDeviceGetGpuInstances(h, pid, array, ctypes.byref(count))
            for gi in array[:count.value]:
                info = n.nvmlGpuInstanceGetInfo(gi)
                cis = self._compute_instances(gi, ci_enums)
                ci_id, uuid = cis[0] if cis else (None, None)
                found.append(Instance(gpu=index, profile_id=pid, profile=name, gi_id=info.id,
                                      start=info.placement.start, size=info.placement.size,
                                      ci_id=ci_id, uuid=uuid, ci_count=len(cis)))
        return sorted(found, key=lambda i: i.start)

    def _ci_handles(self, gi, enums: Optional[List[int]] = None):
        """The compute instances of a GI, over the given CI profiles (default: all)."""
        n = self.nvml
        for enum in range(catalog.CI_ENUM_COUNT) if enums is None else enums:
            try:
                info = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, enum, 0)
            except (n.NVMLError_NotSupported, n.NVMLError_InvalidArgument):
                continue
            array = (n.c_nvmlComputeInstance_t * max(info.instanceCount, 1))()
            count = ctypes.c_uint(len(array))
            n.nvmlGpuInstanceGetComputeInstances(gi, info.id, array, ctypes.byref(count))
            yield from array[:count.value]

    def _compute_instances(self, gi, enums: Optional[List[int]]) -> List[Tuple[int, str]]:
        n = self.nvml
        out = []
        for ci in self._ci_handles(gi, enums):
            ci_info = n.nvmlComputeInstanceGetInfo(ci)
            out.append((ci_info.id, _nvml_str(n.nvmlDeviceGetUUID(ci_info.device))))
        return sorted(out)

    def placements(self, h, profile_id: int) -> List[Tuple[int, int]]:
        n = self.nvml
        count = ctypes.c_uint(0)
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, None, ctypes.byref(count))
        array = (n.c_nvmlGpuInstancePlacement_t * count.value)()
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, array, ctypes.byref(count))
        return [(p.start, p.size) for p in array[:count.value]]

    def busy_pids(self, mig_uuid: str) -> List[int]:
        n = self.nvml
        h = n.nvmlDeviceGetHandleByUUID(mig_uuid)
        return [p.pid for p in n.nvmlDeviceGetComputeRunningProcesses(h)]

    # -- changing --------------------------------------------------------
    def create(self, index: int, profile: catalog.GiProfile, start: int) -> Instance:
        """A GI at exactly `start` plus its full-size CI; nothing is left half-made."""
        with self.batch():
            return self._create(index, profile, start)

    def _create(self, index: int, profile: catalog.GiProfile, start: int) -> Instance:
        n = self.nvml
        h = self.handle(index)
        placement = n.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = start, profile.mem_slots
        gi = n.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile.id, ctypes.byref(placement))
        try:
            info = n.nvmlGpuInstanceGetInfo(gi)   # GI ids are read back, never assumed
            ci_profile = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, profile.ci_full_enum, 0)
            ci = n.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile.id)
            try:
                ci_info = n.nvmlComputeInstanceGetInfo(ci)
                uuid = _nvml_str(n.nvmlDeviceGetUUID(ci_info.device))
            except n.NVMLError:
                n.nvmlComputeInstanceDestroy(ci)
                raise
        except n.NVMLError:
            n.nvmlGpuInstanceDestroy(gi)
            raise
        return Instance(gpu=index, profile_id=profile.id, profile=profile.name, gi_id=info.id,
                        start=info.placement.start, size=info.placement.size,
                        ci_id=ci_info.id, uuid=uuid, ci_count=1)

    def destroy(self, index: int, gi_id: int) -> bool:
        """Destroy a GI and its CIs (CIs first). False when it was already gone."""
        with self.batch():
            return self._destroy(index, gi_id)

    def _destroy(self, index: int, gi_id: int) -> bool:
        n = self.nvml
        h = self.handle(index)
        try:
            gi = n.nvmlDeviceGetGpuInstanceById(h, gi_id)
        except n.NVMLError_NotFound:
            return False
        for ci in list(self._ci_handles(gi)):
            n.nvmlComputeInstanceDestroy(ci)
        n.nvmlGpuInstanceDestroy(gi)
        return True

    def reset_gpu(self, index: int) -> None:
        """Reset this one GPU (never the others): `nvidia-smi --gpu-reset -i N`, or
        the simulator's equivalent. Callers check it has no processes first."""
        reset = getattr(self.nvml, "reset_gpu", None)
        if reset is not None:
            reset(index)
            return
        import subprocess
        p = subprocess.run(["nvidia-smi", "--gpu-reset", "-i", str(int(index))],
                           capture_output=True, text=True, timeout=300, check=False)
        if p.returncode != 0:
            raise NodeProblem(f"GPU {index}: reset failed: {(p.stderr or p.stdout).strip()}")

    def gpu_pids(self, index: int) -> List[int]:
        n = self.nvml
        return [p.pid for p in n.nvmlDeviceGetComputeRunningProcesses(self.handle(index))]

    def set_mig_mode(self, index: int, enabled: bool) -> int:
        """Request a MIG mode; returns NVML's activation status (0 = done)."""
        return self.nvml.nvmlDeviceSetMigMode(self.handle(index), 1 if enabled else 0)


def open_backend(spec: str):
    """'nvml' -> the pynvml module; 'sim:PATH' -> a simulated NVML on PATH."""
    from .errors import BadInput
    if spec == "nvml":
        import pynvml
        return pynvml
    if spec.startswith("sim:") and len(spec) > 4:
        from .sim import SimNvml
        return SimNvml(spec[4:])
    raise BadInput(f"unknown backend {spec!r}; use 'nvml' or 'sim:STATE.json'")
