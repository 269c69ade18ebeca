"""SimNvml: the subset of the pynvml API this project calls, simulated.

Same function names, same ctypes structs and handle types, errors raised as
pynvml.NVMLError with the codes real NVML returns (docs/facts.md, MIG: NVML errors).
Handles are real ctypes pointers whose value encodes (kind, gpu, gi, ci).
"""
from __future__ import annotations

import ctypes
import functools
import os
import signal
from types import SimpleNamespace
from typing import Callable, List, Optional

import pynvml

from ..core import catalog
from ..core.view import overlaps
from .devtree import instance_caps
from .state import SimStore, random_uuid

_DEV, _MIG, _GI, _CI = 1, 2, 3, 4
KILL = -9       # a fault "error" that SIGKILLs the calling process instead: crash tests


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def _handle(kind: int, gpu: int, gi: int = 0, ci: int = 0, ptype=pynvml.c_nvmlDevice_t):
    value = (kind << 28) | (gpu << 16) | (gi << 8) | ci
    return ctypes.cast(ctypes.c_void_p(value), ptype)


def _decode(handle) -> tuple:
    value = ctypes.cast(handle, ctypes.c_void_p).value or 0
    return value >> 28, (value >> 16) & 0xFFF, (value >> 8) & 0xFF, value & 0xFF


def _deref(ref):
    """The ctypes object behind byref(x), pointer(x) or x itself."""
    if hasattr(ref, "_obj"):
        return ref._obj
    if isinstance(ref, ctypes._Pointer):
        return ref.contents
    return ref


def _fill(array_ref, count_ref, handles) -> int:
    """Fill a caller-allocated handle array as NVML does; too small -> INSUFFICIENT_SIZE."""
    count, array = _deref(count_ref), _deref(array_ref)
    count.value = len(handles)
    if len(array) < len(handles):
        raise _err(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
    for i, h in enumerate(handles):
        array[i] = h
    return pynvml.NVML_SUCCESS


def gi_id_for(placement_start: int, placement_size: int, memory_slots: int) -> int:
    """GI ids fall in swizzId ranges by size (the driver's swizzle ids): full 0, halves 1-2, ..."""
    fraction = memory_slots // placement_size
    return fraction - 1 + placement_start // placement_size


def driver_order(starts, size: int, memory_slots: int) -> List[int]:
    """Placement the driver picks without one given: small ones from the top
    block down (7x1g on an H100 lands at 6,4,5,0,1,2,3), large ones ascending."""
    half = memory_slots // 2
    if size >= half:
        return sorted(starts)
    upper = sorted((s for s in starts if s >= half), key=lambda s: (-(s // size // 2), s))
    return upper + sorted(s for s in starts if s < half)


def nvml_call(fn: Callable) -> Callable:
    """Run `fn(self, state, *args)` in one transaction, after fault injection."""
    name = fn.__name__

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if not self._initialized and name != "nvmlInit":
            raise _err(pynvml.NVML_ERROR_UNINITIALIZED)
        with self.store.transaction() as state:
            if _maybe_fault(state, name):
                self.store.save(state)               # the fired fault must stay fired
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(self, state, *args, **kwargs)
    return wrapper


def _maybe_fault(state: dict, name: str) -> bool:
    """Count the call; raise the injected error, or return True for a KILL."""
    faults = [f for f in state.get("faults", []) if f["call"] == name]
    if not faults:
        return False
    calls = state.setdefault("calls", {})
    calls[name] = n = calls.get(name, 0) + 1
    state["_dirty"] = True
    for f in faults:
        if n > f["after"] and f["fired"] < f["times"]:
            f["fired"] += 1
            if f["error"] == KILL:
                return True
            raise _err(f["error"])
    return False


class SimNvml:
    """Drop-in for the `pynvml` module, backed by a state file."""

    NVMLError = pynvml.NVMLError

    def __init__(self, path: str):
        self.store = SimStore(path)
        self._initialized = False

    def __getattr__(self, name):
        # Constants, structs and error classes are the real pynvml ones.
        if name.startswith(("NVML_", "c_nvml", "nvmlGpuInstancePlacement", "NVMLError")):
            return getattr(pynvml, name)
        raise AttributeError(f"simulated NVML does not implement {name}")

    def session(self):
        """Not NVML: lets the driver batch many calls under one state lock."""
        return self.store.session()

    def reset_gpu(self, index: int) -> None:
        """Not NVML (it is `nvidia-smi --gpu-reset -i N`): a pending MIG mode takes
        effect and the GPU's instances vanish. Refused while processes run."""
        with self.store.transaction() as state:
            if not 0 <= index < len(state["gpus"]):
                raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
            if self._processes(state, index):
                raise _err(pynvml.NVML_ERROR_IN_USE)
            gpu = state["gpus"][index]
            for gi in gpu["gis"]:
                instance_caps(self.store.path, gpu["minor"], gi["id"], present=False)
            gpu["mig_current"], gpu["gis"] = gpu["mig_pending"], []
            state["_dirty"] = True

    # -- library ---------------------------------------------------------
    @nvml_call
    def nvmlInit(self, state):
        """Opening the state checks it: a missing or corrupt file fails here, by name."""
        self._initialized = True

    def nvmlShutdown(self):
        self._initialized = False

    def _gpu(self, state, handle, kinds=(_DEV,)):
        kind, g, gi, ci = _decode(handle)
        if kind not in kinds or g >= len(state["gpus"]):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return state["gpus"][g], g, gi, ci

    @staticmethod
    def _model(gpu) -> catalog.GpuModel:
        return catalog.load().model(gpu["model"])

    def _mig_on(self, gpu):
        if gpu["mig_current"] != 1:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def _find_gi(self, gpu, gi_id):
        return next((g for g in gpu["gis"] if g["id"] == gi_id), None)

    def _gi(self, state, handle):
        gpu, g, gi_id, _ = self._gpu(state, handle, (_GI,))
        self._mig_on(gpu)
        gi = self._find_gi(gpu, gi_id)
        if gi is None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu, g, gi

    def _ci(self, state, handle, kinds=(_CI,)):
        gpu, g, gi_id, ci_id = self._gpu(state, handle, kinds)
        self._mig_on(gpu)
        gi = self._find_gi(gpu, gi_id)
        ci = gi and next((c for c in gi["cis"] if c["id"] == ci_id), None)
        if ci is None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu, g, gi, ci

    def _processes(self, state, g, gi_id=None, ci_id=None):
        return [p for p in state["processes"] if p["gpu"] == g
                and (gi_id is None or p["gi"] == gi_id)
                and (ci_id is None or p["ci"] == ci_id)]

    @staticmethod
    def _profile(model, profile_id):
        p = model.profile_by_id(profile_id)
        if p is None:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return p

    # -- devices ---------------------------------------------------------
    @nvml_call
    def nvmlDeviceGetCount(self, state):
        return len(state["gpus"])

    @nvml_call
    def nvmlDeviceGetHandleByIndex(self, state, index):
        if not 0 <= index < len(state["gpus"]):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _handle(_DEV, index)

    @nvml_call
    def nvmlDeviceGetHandleByUUID(self, state, uuid_str):
        for g, gpu in enumerate(state["gpus"]):
            if gpu["uuid"] == uuid_str:
                return _handle(_DEV, g)
            for gi in gpu["gis"]:
                for ci in gi["cis"]:
                    if ci["uuid"] == uuid_str:
                        return _handle(_MIG, g, gi["id"], ci["id"])
        raise _err(pynvml.NVML_ERROR_NOT_FOUND)

    @nvml_call
    def nvmlDeviceGetName(self, state, handle):
        gpu, *_ = self._gpu(state, handle, (_DEV, _MIG))
        return gpu["name"]

    @nvml_call
    def nvmlDeviceGetUUID(self, state, handle):
        kind = _decode(handle)[0]
        if kind == _MIG:
            return self._ci(state, handle, (_MIG,))[3]["uuid"]
        return self._gpu(state, handle)[0]["uuid"]

    @nvml_call
    def nvmlDeviceGetMinorNumber(self, state, handle):
        return self._gpu(state, handle)[0]["minor"]

    @nvml_call
    def nvmlDeviceGetPciInfo(self, state, handle):
        gpu, g, *_ = self._gpu(state, handle)
        info = pynvml.nvmlPciInfo_t()
        info.pciDeviceId = (int(gpu["pci_device_id"], 16) << 16) | 0x10DE
        info.busId = f"00000000:{0x18 + g:02X}:00.0".encode()
        return info

    @nvml_call
    def nvmlDeviceGetArchitecture(self, state, handle):
        gpu, *_ = self._gpu(state, handle)
        return catalog.ARCH_CODES[self._model(gpu).arch]

    @nvml_call
    def nvmlDeviceGetMemoryInfo(self, state, handle, version=None):
        gpu, *_ = self._gpu(state, handle)
        info = pynvml.c_nvmlMemory_t()
        info.total = self._model(gpu).memory_mib << 20
        info.used, info.free = 0, info.total
        return info

    @nvml_call
    def nvmlDeviceGetMigMode(self, state, handle):
        gpu, *_ = self._gpu(state, handle)
        return [gpu["mig_current"], gpu["mig_pending"]]

    @nvml_call
    def nvmlDeviceSetMigMode(self, state, handle, mode):
        """Returns the activation status, as pynvml does (it is not raised)."""
        gpu, g, *_ = self._gpu(state, handle)
        if mode not in (0, 1):
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        state["_dirty"] = True
        gpu["mig_pending"] = mode
        if mode == gpu["mig_current"]:
            return pynvml.NVML_SUCCESS
        if self._processes(state, g) or gpu["gis"]:
            return pynvml.NVML_ERROR_IN_USE
        if self._model(gpu).mig_toggle_needs_reset and not gpu["reset_capable"]:
            return pynvml.NVML_ERROR_RESET_REQUIRED
        gpu["mig_current"] = mode   # Hopper+: no reset; Ampere: the driver resets it
        return pynvml.NVML_SUCCESS

    @nvml_call
    def nvmlDeviceGetComputeRunningProcesses(self, state, handle):
        if _decode(handle)[0] == _MIG:
            _, g, gi, ci = self._ci(state, handle, (_MIG,))
            procs = self._processes(state, g, gi["id"], ci["id"])
        else:
            _, g, *_ = self._gpu(state, handle)
            procs = self._processes(state, g)
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=1 << 20,
                                gpuInstanceId=p["gi"], computeInstanceId=p["ci"])
                for p in procs]

    # -- GPU instances ---------------------------------------------------
    @nvml_call
    def nvmlDeviceGetGpuInstanceProfileInfo(self, state, handle, profile, version=2):
        gpu, *_ = self._gpu(state, handle)
        if not 0 <= profile < catalog.GI_ENUM_COUNT:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if version == 2:
            self._mig_on(gpu)   # the V variant needs MIG enabled
        p = self._model(gpu).profile_by_enum(profile)
        if p is None:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t() if version == 2 \
            else pynvml.c_nvmlGpuInstanceProfileInfo_t()
        info.id, info.isP2pSupported, info.sliceCount = p.id, 0, p.slices
        info.instanceCount, info.multiprocessorCount = p.max, p.sms or 0
        info.memorySizeMB = p.memory_mib or 0
        if version == 2:
            info.name = f"MIG {p.name}".encode()
        return info

    @nvml_call
    def nvmlDeviceGetGpuInstancePossiblePlacements(self, state, handle, profileId, placementsRef, countRef):
        gpu, *_ = self._gpu(state, handle)
        p = self._profile(self._model(gpu), profileId)
        count = _deref(countRef)
        if placementsRef is None:
            count.value = len(p.starts)
            return pynvml.NVML_SUCCESS
        if count.value < len(p.starts):
            count.value = len(p.starts)
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_SIZE)
        array = _deref(placementsRef)
        for i, s in enumerate(p.starts):
            array[i].start, array[i].size = s, p.mem_slots
        count.value = len(p.starts)
        return pynvml.NVML_SUCCESS

    def _free_starts(self, gpu, model, p) -> List[int]:
        """Starts where `p` fits now: no memory overlap, instance and slice limits kept."""
        gis = gpu["gis"]
        if sum(1 for g in gis if g["profile_id"] == p.id) >= p.max:
            return []
        used = sum(model.profile_by_id(g["profile_id"]).slices for g in gis)
        if used + p.slices > model.compute_slices:
            return []
        return [s for s in p.starts
                if not any(overlaps(s, p.mem_slots, g["start"], g["size"]) for g in gis)]

    def _create_gi(self, state, g, gpu, p, start):
        model = self._model(gpu)
        if start not in self._free_starts(gpu, model, p):
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        gi = {"id": gi_id_for(start, p.mem_slots, model.memory_slots),
              "profile_id": p.id, "start": start, "size": p.mem_slots, "cis": []}
        gpu["gis"].append(gi)
        state["_dirty"] = True
        instance_caps(self.store.path, gpu["minor"], gi["id"])
        return _handle(_GI, g, gi["id"], ptype=pynvml.c_nvmlGpuInstance_t)

    @nvml_call
    def nvmlDeviceCreateGpuInstance(self, state, handle, profileId):
        gpu, g, *_ = self._gpu(state, handle)
        self._mig_on(gpu)
        model = self._model(gpu)
        p = self._profile(model, profileId)
        free = self._free_starts(gpu, model, p)
        for start in driver_order(p.starts, p.mem_slots, model.memory_slots):
            if start in free:
                return self._create_gi(state, g, gpu, p, start)
        raise _err(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)

    @nvml_call
    def nvmlDeviceCreateGpuInstanceWithPlacement(self, state, handle, profileId, placement):
        gpu, g, *_ = self._gpu(state, handle)
        self._mig_on(gpu)
        p = self._profile(self._model(gpu), profileId)
        pl = _deref(placement)
        if pl.start not in p.starts or pl.size != p.mem_slots:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._create_gi(state, g, gpu, p, pl.start)

    @nvml_call
    def nvmlDeviceGetGpuInstances(self, state, handle, profileId, gpuInstancesRef, countRef):
        gpu, g, *_ = self._gpu(state, handle)
        self._mig_on(gpu)
        p = self._profile(self._model(gpu), profileId)
        found = sorted(x["id"] for x in gpu["gis"] if x["profile_id"] == p.id)
        return _fill(gpuInstancesRef, countRef,
                     [_handle(_GI, g, i, ptype=pynvml.c_nvmlGpuInstance_t) for i in found])

    @nvml_call
    def nvmlDeviceGetGpuInstanceById(self, state, handle, gi_id):
        gpu, g, *_ = self._gpu(state, handle)
        self._mig_on(gpu)
        if self._find_gi(gpu, gi_id) is None:
            raise _err(pynvml.NVML_ERROR_NOT_FOUND)
        return _handle(_GI, g, gi_id, ptype=pynvml.c_nvmlGpuInstance_t)

    @nvml_call
    def nvmlGpuInstanceGetInfo(self, state, handle):
        _, g, gi = self._gi(state, handle)
        info = pynvml.c_nvmlGpuInstanceInfo_t()
        info.device = _handle(_DEV, g)
        info.id, info.profileId = gi["id"], gi["profile_id"]
        info.placement.start, info.placement.size = gi["start"], gi["size"]
        return info

    @nvml_call
    def nvmlGpuInstanceDestroy(self, state, handle):
        gpu, g, gi = self._gi(state, handle)
        if gi["cis"] or self._processes(state, g, gi["id"]):
            raise _err(pynvml.NVML_ERROR_IN_USE)
        gpu["gis"].remove(gi)
        state["_dirty"] = True
        instance_caps(self.store.path, gpu["minor"], gi["id"], present=False)
        return pynvml.NVML_SUCCESS

    # -- compute instances -----------------------------------------------
    def _ci_profile(self, gpu, gi, profile):
        model = self._model(gpu)
        gi_profile = model.profile_by_id(gi["profile_id"])
        if not 0 <= profile < catalog.CI_ENUM_COUNT:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        cp = next((c for c in model.ci_profiles_for(gi_profile) if c.enum == profile), None)
        if cp is None:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gi_profile, cp

    @nvml_call
    def nvmlGpuInstanceGetComputeInstanceProfileInfo(self, state, handle, profile, engProfile=0, version=2):
        gpu, _, gi = self._gi(state, handle)
        gi_profile, cp = self._ci_profile(gpu, gi, profile)
        if engProfile != 0:
            raise _err(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        info = pynvml.c_nvmlComputeInstanceProfileInfo_v2_t() if version == 2 \
            else pynvml.c_nvmlComputeInstanceProfileInfo_t()
        info.id, info.sliceCount, info.instanceCount = cp.enum, cp.slices, cp.max
        sms = gi_profile.sms or 0
        info.multiprocessorCount = sms * cp.slices // gi_profile.slices
        if version == 2:
            info.name = (gi_profile.name if cp.slices == gi_profile.slices
                         else f"{cp.slices}c.{gi_profile.name}").encode()
        return info

    @staticmethod
    def _ci_free_starts(gi, cp, gi_slices: int) -> List[int]:
        """CI starts free now, in compute slices inside the GI."""
        if sum(1 for c in gi["cis"] if c["profile_id"] == cp.enum) >= cp.max:
            return []
        if sum(c["size"] for c in gi["cis"]) + cp.slices > gi_slices:
            return []
        return [s for s in cp.starts if s + cp.slices <= gi_slices
                and not any(s < c["start"] + c["size"] and c["start"] < s + cp.slices
                            for c in gi["cis"])]

    @nvml_call
    def nvmlGpuInstanceCreateComputeInstance(self, state, handle, profileId):
        gpu, g, gi = self._gi(state, handle)
        gi_profile, cp = self._ci_profile(gpu, gi, profileId)
        starts = self._ci_free_starts(gi, cp, gi_profile.slices)
        if not starts:
            raise _err(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
        ci_id = min(set(range(8)) - {c["id"] for c in gi["cis"]})
        gi["cis"].append({"id": ci_id, "profile_id": cp.enum, "start": starts[0],
                          "size": cp.slices, "uuid": "MIG-" + random_uuid()})
        state["_dirty"] = True
        instance_caps(self.store.path, gpu["minor"], gi["id"], ci_id)
        return _handle(_CI, g, gi["id"], ci_id, ptype=pynvml.c_nvmlComputeInstance_t)

    @nvml_call
    def nvmlGpuInstanceGetComputeInstances(self, state, handle, profileId, computeInstancesRef, countRef):
        gpu, g, gi = self._gi(state, handle)
        _, cp = self._ci_profile(gpu, gi, profileId)
        found = sorted(c["id"] for c in gi["cis"] if c["profile_id"] == cp.enum)
        return _fill(computeInstancesRef, countRef,
                     [_handle(_CI, g, gi["id"], i, ptype=pynvml.c_nvmlComputeInstance_t) for i in found])

    @nvml_call
    def nvmlComputeInstanceGetInfo(self, state, handle):
        _, g, gi, ci = self._ci(state, handle)
        info = pynvml.c_nvmlComputeInstanceInfo_t()
        info.device = _handle(_MIG, g, gi["id"], ci["id"])
        info.gpuInstance = _handle(_GI, g, gi["id"], ptype=pynvml.c_nvmlGpuInstance_t)
        info.id, info.profileId = ci["id"], ci["profile_id"]
        info.placement.start, info.placement.size = ci["start"], ci["size"]
        return info

    @nvml_call
    def nvmlComputeInstanceDestroy(self, state, handle):
        gpu, g, gi, ci = self._ci(state, handle)
        if self._processes(state, g, gi["id"], ci["id"]):
            raise _err(pynvml.NVML_ERROR_IN_USE)
        gi["cis"].remove(ci)
        state["_dirty"] = True
        instance_caps(self.store.path, gpu["minor"], gi["id"], ci["id"], present=False)
        return pynvml.NVML_SUCCESS


def lookup_uuid(state: dict, mig_uuid: str) -> Optional[tuple]:
    """(gpu index, gi id, ci id) of a MIG UUID in a state document."""
    for g, gpu in enumerate(state["gpus"]):
        for gi in gpu["gis"]:
            for ci in gi["cis"]:
                if ci["uuid"] == mig_uuid:
                    return g, gi["id"], ci["id"]
    return None
