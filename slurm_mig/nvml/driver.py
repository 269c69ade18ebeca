"""The NVML driver layer, written once against the pynvml API.

`nvml` is either the real `pynvml` module or the simulator (see backend.py):
the same calls run unchanged on both. Everything above this module speaks in
core.view's Gpu / Instance. Instances of every profile NVML reports are
listed, also those the catalog does not know (marked `known=False`).
"""
from __future__ import annotations

import contextlib
import ctypes
from typing import Dict, List, Optional, Tuple

from ..core import catalog
from ..core.view import Gpu, Instance
from ..errors import NodeProblem
from .errors import NVMLError, describe


def nvml_str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Profile:
    """A GI profile as NVML reports it on one GPU, named from the catalog when known."""
    __slots__ = ("id", "name", "slices", "max", "known", "ci_enums")

    def __init__(self, id: int, name: str, slices: int, max: int, known: bool, ci_enums):
        self.id, self.name, self.slices, self.max = id, name, slices, max
        self.known, self.ci_enums = known, ci_enums


class Driver:
    def __init__(self, nvml):
        self.nvml = nvml
        self._profiles: Dict[int, List[_Profile]] = {}
        try:
            nvml.nvmlInit()
        except NVMLError as e:
            raise NodeProblem(f"NVML initialisation failed: {describe(e)}; check the NVIDIA driver") from e

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
        name = nvml_str(n.nvmlDeviceGetName(h))
        pci = n.nvmlDeviceGetPciInfo(h).pciDeviceId
        model = catalog.load().identify(name, f"0x{pci >> 16:04X}")
        try:
            current, pending = n.nvmlDeviceGetMigMode(h)
            capable = True
        except n.NVMLError_NotSupported:
            current = pending = 0
            capable = False
        instances = self._instances(index, h, model) if with_instances and current == 1 else []
        return Gpu(index=index, name=name, uuid=nvml_str(n.nvmlDeviceGetUUID(h)),
                   minor=n.nvmlDeviceGetMinorNumber(h), pci_device_id=pci, model=model,
                   mig_capable=capable, mig_on=current == 1, mig_pending_on=pending == 1,
                   instances=tuple(instances))

    def gpus(self, with_instances: bool = True) -> List[Gpu]:
        with self.batch():
            return [self._gpu(i, with_instances) for i in range(self.count())]

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

    def forget(self) -> None:
        """Drop the cached profile lists: a read that failed for one profile
        would otherwise hide that profile's instances for this Driver's life."""
        self._profiles.clear()

    def _profiles_of(self, index: int, h, model) -> List[_Profile]:
        """Every GI profile NVML reports for the GPU (read once per GPU and
        Driver), named and limited from the catalog where it knows the id."""
        if index not in self._profiles:
            profiles = []
            for _, info in self.gi_profiles(h):
                p = model.profile_by_id(info.id) if model else None
                if p is not None:
                    profiles.append(_Profile(p.id, p.name, p.slices, p.max, True,
                                             [c.enum for c in model.ci_profiles_for(p)]))
                else:
                    profiles.append(_Profile(info.id, nvml_str(info.name).replace("MIG ", ""),
                                             info.sliceCount, info.instanceCount, False, None))
            self._profiles[index] = profiles
        return self._profiles[index]

    def _instances(self, index: int, h, model) -> List[Instance]:
        n = self.nvml
        found = []
        for p in self._profiles_of(index, h, model):
            array = (n.c_nvmlGpuInstance_t * max(p.max, 1))()
            count = ctypes.c_uint(len(array))
            n.nvmlDeviceGetGpuInstances(h, p.id, array, ctypes.byref(count))
            for gi in array[:count.value]:
                info = n.nvmlGpuInstanceGetInfo(gi)
                cis = self._compute_instances(gi, p.ci_enums)
                ci_id, uuid = cis[0] if cis else (None, None)
                found.append(Instance(gpu=index, profile_id=p.id, profile=p.name, gi_id=info.id,
                                      start=info.placement.start, size=info.placement.size,
                                      slices=p.slices, ci_id=ci_id, uuid=uuid, ci_count=len(cis),
                                      known=p.known))
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
            out.append((ci_info.id, nvml_str(n.nvmlDeviceGetUUID(ci_info.device))))
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
                uuid = nvml_str(n.nvmlDeviceGetUUID(ci_info.device))
            except NVMLError:
                n.nvmlComputeInstanceDestroy(ci)
                raise
        except NVMLError:
            n.nvmlGpuInstanceDestroy(gi)
            raise
        return Instance(gpu=index, profile_id=profile.id, profile=profile.name, gi_id=info.id,
                        start=info.placement.start, size=info.placement.size,
                        slices=profile.slices, ci_id=ci_info.id, uuid=uuid, ci_count=1)

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
