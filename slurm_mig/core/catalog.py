"""GPU models and their MIG profiles: pure data, loaded once.

Profiles are keyed by (model, NVML profile id). Names are for people and
requests only; they move with drivers, so aliases map old names onto ids.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..errors import BadInput

DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "catalog.json")

# NVML enum names (pynvml NVML_GPU_INSTANCE_PROFILE_*) by value, for display.
GI_ENUM_NAMES = {
    0x0: "1_SLICE", 0x1: "2_SLICE", 0x2: "3_SLICE", 0x3: "4_SLICE", 0x4: "7_SLICE",
    0x5: "8_SLICE", 0x6: "6_SLICE", 0x7: "1_SLICE_REV1", 0x8: "2_SLICE_REV1",
    0x9: "1_SLICE_REV2", 0xA: "1_SLICE_GFX", 0xB: "2_SLICE_GFX", 0xC: "4_SLICE_GFX",
    0xD: "1_SLICE_NO_ME", 0xE: "2_SLICE_NO_ME", 0xF: "1_SLICE_ALL_ME",
    0x10: "2_SLICE_ALL_ME", 0x11: "3_SLICE_GFX",
}
GI_ENUM_COUNT = 0x12
# nvmlDeviceGetArchitecture values (NVML_DEVICE_ARCH_*) of the architectures with MIG.
ARCH_CODES = {"ampere": 7, "hopper": 9, "blackwell": 10}
CI_ENUM_COUNT = 0x9


class CiProfile(NamedTuple):
    enum: int          # also the CI profile id NVML reports
    slices: int
    max: int
    starts: Tuple[int, ...]


class GiProfile(NamedTuple):
    name: str
    enum: int
    id: int
    slices: int          # compute slices
    mem_slots: int       # placement size, in memory slots
    max: int             # max instances per GPU
    starts: Tuple[int, ...]
    memory_mib: Optional[int]
    sms: Optional[int]
    aliases: Tuple[str, ...] = ()
    unverified: Tuple[str, ...] = ()

    @property
    def ci_full_enum(self) -> int:
        """The CI profile that spans the whole GI (the one nvidia-smi -C makes)."""
        return {1: 0, 2: 1, 3: 2, 4: 3, 7: 4, 8: 5, 6: 6}[self.slices]


class GpuModel(NamedTuple):
    key: str
    arch: str
    layout: str          # catalog layout key: models on one layout share profile shapes by enum
    memory_slots: int
    compute_slices: int
    memory_mib: int
    aliases: Tuple[str, ...]
    nvml_names: Tuple[str, ...]
    pci_device_ids: Tuple[str, ...]
    profiles: Tuple[GiProfile, ...]
    ci_profiles: Dict[int, Tuple[CiProfile, ...]]
    unverified: Tuple[str, ...] = ()
    shard_weights: Optional[Tuple[int, Tuple[Tuple[int, int], ...]]] = None
    # the layout's measured shard Count and (enum, units) pairs; None: searched (core/shards.py)

    @property
    def mig_toggle_needs_reset(self) -> bool:
        """Ampere resets the GPU to change MIG mode; Hopper and later do not."""
        return self.arch == "ampere"

    def profile_by_id(self, profile_id: int) -> Optional[GiProfile]:
        return next((p for p in self.profiles if p.id == profile_id), None)

    def profile_by_enum(self, enum: int) -> Optional[GiProfile]:
        return next((p for p in self.profiles if p.enum == enum), None)

    def find_profile(self, name: str) -> Optional[GiProfile]:
        name = name.strip().lower()
        for p in self.profiles:
            if name == p.name or name in p.aliases:
                return p
        return None

    def ci_profiles_for(self, gi: GiProfile) -> Tuple[CiProfile, ...]:
        return self.ci_profiles.get(gi.slices, ())


def _ci_table(raw: dict) -> Dict[int, Tuple[CiProfile, ...]]:
    return {
        int(slices): tuple(
            CiProfile(enum=c["enum"], slices=c["slices"], max=c["max"],
                      starts=tuple(i * c["slices"] for i in range(c["max"])))
            for c in entries)
        for slices, entries in raw.items()
    }


def _build_model(key: str, raw: dict, layouts: dict, ci: dict) -> GpuModel:
    layout = layouts[raw["layout"]]
    profiles = []
    for enum_s, info in raw["profiles"].items():
        shape = layout["gi_profiles"][enum_s]
        profiles.append(GiProfile(
            name=info["name"], enum=int(enum_s), id=shape["id"], slices=shape["slices"],
            mem_slots=shape["mem_slots"], max=shape["max"], starts=tuple(shape["starts"]),
            memory_mib=info.get("memory_mib"), sms=info.get("sms"),
            aliases=tuple(info.get("aliases", ())),
            unverified=tuple(info.get("unverified", ()))
            + (("placements",) if "layout" in raw.get("unverified", ()) else ()),
        ))
    profiles.sort(key=lambda p: (p.slices, p.mem_slots, p.enum))
    return GpuModel(
        key=key, arch=raw["arch"], layout=raw["layout"], memory_slots=layout["memory_slots"],
        compute_slices=layout["compute_slices"], memory_mib=raw["memory_mib"],
        aliases=tuple(raw.get("aliases", ())),
        nvml_names=tuple(raw["nvml_names"]), pci_device_ids=tuple(raw["pci_device_ids"]),
        profiles=tuple(profiles), ci_profiles=_ci_table(ci),
        unverified=tuple(raw.get("unverified", ())),
        shard_weights=_shard_weights(layout.get("shard_weights")),
    )


def _shard_weights(raw: Optional[dict]):
    if raw is None:
        return None
    return raw["count"], tuple(sorted((int(enum), units) for enum, units in raw["units"].items()))


class Catalog:
    def __init__(self, models: Dict[str, GpuModel]):
        self.models = models

    @classmethod
    def from_dict(cls, raw: dict) -> "Catalog":
        layouts, ci = raw["layouts"], raw["ci_profiles"]
        return cls({k: _build_model(k, v, layouts, ci) for k, v in raw["models"].items()})

    def model(self, key: str) -> GpuModel:
        wanted = key.strip().lower()
        for k, m in self.models.items():
            if wanted == k.lower() or wanted in (a.lower() for a in m.aliases):
                return m
        raise BadInput(f"unknown GPU model {key!r}; known models: {', '.join(self.models)}")

    def identify(self, nvml_name: str, pci_device_id: Optional[str] = None) -> Optional[GpuModel]:
        """The catalog model of a live GPU, by PCI device id, then by NVML name."""
        if pci_device_id:
            for m in self.models.values():
                if pci_device_id.lower() in (d.lower() for d in m.pci_device_ids):
                    return m
        for m in self.models.values():
            if nvml_name in m.nvml_names:
                return m
        return None

    def all_profile_names(self) -> List[str]:
        return sorted({p.name for m in self.models.values() for p in m.profiles})


@functools.lru_cache(maxsize=None)
def load(path: str = DATA_FILE) -> Catalog:
    with open(path, encoding="utf-8") as f:
        return Catalog.from_dict(json.load(f))
