"""Catalog import: read a live GPU's MIG profiles through NVML (read-only) and
build a catalog entry for it, so a new GPU model needs data, not code."""
from __future__ import annotations

from ..core.catalog import ARCH_CODES
from ..errors import BadInput
from .driver import Driver, nvml_str


def catalog_entry(driver: Driver, index: int, key: str = None) -> dict:
    """The `layouts` + `models` entry describing GPU `index`, keyed `key`
    (default: its NVML name without the vendor)."""
    n = driver.nvml
    h = driver.handle(index)
    name = nvml_str(n.nvmlDeviceGetName(h))
    profiles = driver.gi_profiles(h)
    if not profiles:
        raise BadInput(f"GPU {index} ({name}) reports no MIG profiles; is MIG mode on?")
    placements = {info.id: driver.placements(h, info.id) for _, info in profiles}
    slots = max(s + z for pl in placements.values() for s, z in pl)
    arch = {code: arch for arch, code in ARCH_CODES.items()}.get(n.nvmlDeviceGetArchitecture(h))
    if arch is None:
        raise BadInput(f"GPU {index} ({name}) has an architecture the catalog does not know "
                       "(MIG mode handling is per architecture)")
    layout, models = {}, {}
    for enum, info in profiles:
        pl = placements[info.id]
        layout[str(enum)] = {"id": info.id, "slices": info.sliceCount, "mem_slots": pl[0][1] if pl else 0,
                             "max": info.instanceCount, "starts": [s for s, _ in pl]}
        models[str(enum)] = {"name": nvml_str(info.name).replace("MIG ", ""),
                             "memory_mib": info.memorySizeMB, "sms": info.multiprocessorCount}
    pci = n.nvmlDeviceGetPciInfo(h)
    key = key or name.replace("NVIDIA ", "").replace(" ", "-")
    return {"layouts": {key: {"memory_slots": slots,
                              "compute_slices": max(i.sliceCount for _, i in profiles),
                              "gi_profiles": layout}},
            "models": {key: {"aliases": [], "nvml_names": [name],
                             "pci_device_ids": [f"0x{pci.pciDeviceId >> 16:04X}"],
                             "arch": arch, "layout": key,
                             "memory_mib": n.nvmlDeviceGetMemoryInfo(h).total >> 20,
                             "profiles": models}}}
