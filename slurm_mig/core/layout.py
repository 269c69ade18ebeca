"""Static layouts in NVIDIA mig-parted's config format: parse, diff, export. Pure.

Unlike mig-parted, a GPU is not wiped to change it: instances already in the
wanted layout stay, the rest is planned around them with explicit placements,
and an instance in use that would have to go stops the whole apply before
anything changes.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from ..errors import BadInput, NeverFits, NoFit
from . import planner
from .view import Gpu, GpuView, occupied


@dataclass(frozen=True)
class Wanted:
    mig_enabled: bool
    devices: Dict[str, int]          # profile name -> count


@dataclass
class GpuChange:
    gpu: Gpu
    wanted: Wanted
    plan: Optional[planner.Plan] = None
    disable_mig: bool = False
    destroy_all: List = field(default_factory=list)

    @property
    def empty(self) -> bool:
        p = self.plan
        return not self.disable_mig and not self.destroy_all and (
            p is None or (not p.destroy and not p.enable_mig
                          and all(x.reuse is not None for x in p.placements)))


# mig-parted's v1 format (pkg/types/v1). A misspelt key would otherwise read as
# "not given": `mig-device:` would mean "MIG on, no instances" and destroy them.
TOP_KEYS = ("version", "mig-configs")
ENTRY_KEYS = ("devices", "device-filter", "mig-enabled", "mig-devices")


def _known_keys(mapping: dict, known, what: str) -> None:
    unknown = sorted(map(str, set(mapping) - set(known)))
    if unknown:
        raise BadInput(f"{what} has unknown key(s) {', '.join(unknown)}; "
                       f"the mig-parted v1 format knows {', '.join(known)}")


def load_config(text: str, name: str, source: str = "layout file") -> list:
    """The entries of config `name` from mig-parted YAML text, validated;
    `source` names the text in errors (the file's path)."""
    import yaml
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(filter(None, (getattr(e, "context", None), getattr(e, "problem", None)))) or str(e)
        raise BadInput(f"{source} is not valid YAML{where}: {what}") from e
    if not isinstance(doc, dict) or doc.get("version") != "v1" or not isinstance(doc.get("mig-configs"), dict):
        raise BadInput("layout file must have `version: v1` and a `mig-configs:` mapping (mig-parted format)")
    _known_keys(doc, TOP_KEYS, "the layout file")
    configs = doc["mig-configs"]
    if name not in configs:
        raise BadInput(f"no config {name!r} in the layout file; it has: {', '.join(map(str, configs))}")
    entries = configs[name]
    if not isinstance(entries, list) or not entries:
        raise BadInput(f"config {name!r} must be a list of device entries")
    for e in entries:
        if not isinstance(e, dict) or "devices" not in e or "mig-enabled" not in e:
            raise BadInput(f"config {name!r}: each entry needs `devices` and `mig-enabled`: {e!r}")
        _known_keys(e, ENTRY_KEYS, f"config {name!r}: an entry")
        devices = e["devices"]
        if devices != "all" and not (isinstance(devices, list) and all(
                isinstance(d, int) and d >= 0 for d in devices)):
            raise BadInput(f"config {name!r}: devices must be `all` or a list of GPU indices, not {devices!r}")
        if not isinstance(e["mig-enabled"], bool):
            raise BadInput(f"config {name!r}: mig-enabled must be true or false")
        mig_devices = e.get("mig-devices") or {}
        if not isinstance(mig_devices, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in mig_devices.items()):
            raise BadInput(f"config {name!r}: mig-devices must map profile names to counts")
        if mig_devices and not e["mig-enabled"]:
            raise BadInput(f"config {name!r}: mig-devices given with mig-enabled: false")
    return entries


def _filter_ids(entry) -> Optional[List[int]]:
    f = entry.get("device-filter")
    if f is None:
        return None
    items = f if isinstance(f, list) else [f]
    try:
        return [int(str(x), 16) for x in items]
    except ValueError:
        raise BadInput(f"device-filter must be PCI ids such as 0x233010DE, not {f!r}") from None


def wanted_for(entries: list, gpu: Gpu) -> Optional[Wanted]:
    """The entry that applies to `gpu`, or None; two matching entries are an error."""
    matches = []
    for e in entries:
        if e["devices"] != "all" and gpu.index not in e["devices"]:
            continue
        ids = _filter_ids(e)
        if ids is not None and gpu.pci_device_id not in ids:
            continue
        matches.append(e)
    if len(matches) > 1:
        raise BadInput(f"GPU {gpu.index} matches {len(matches)} entries of the config; make them disjoint")
    if not matches:
        return None
    e = matches[0]
    if gpu.model is None:
        raise BadInput(f"GPU {gpu.index} ({gpu.name}) is not in the catalog")
    devices: Counter = Counter()            # by the profile's own name: an alias adds to it
    for name, count in (e.get("mig-devices") or {}).items():
        profile = gpu.model.find_profile(name.lower())
        if profile is None:
            raise BadInput(f"GPU {gpu.index} ({gpu.model.key}) has no MIG profile {name!r}; it has: "
                           + ", ".join(p.name for p in gpu.model.profiles))
        devices[profile.name] += count
    return Wanted(mig_enabled=e["mig-enabled"], devices={n: c for n, c in devices.items() if c})


def diff(gpus: List[Gpu], entries: list, busy: Dict[str, str]) -> List[GpuChange]:
    """What must change per GPU. `busy` maps MIG UUIDs in use to why (job, pids).
    Raises NoFit / BadInput, before anything is changed, when the layout cannot
    be reached without touching a busy instance."""
    have = {g.index for g in gpus}
    missing = sorted({d for e in entries if e["devices"] != "all" for d in e["devices"]} - have)
    if missing:
        raise BadInput(f"the layout names GPU(s) {', '.join(map(str, missing))}, which this node does not "
                       f"have (GPUs {', '.join(map(str, sorted(have))) or 'none'}); nothing was changed")
    changes = []
    wanted_by_gpu = [(gpu, wanted_for(entries, gpu)) for gpu in gpus]
    if not any(wanted for _, wanted in wanted_by_gpu):
        found = "; ".join(f"GPU {g.index}: {g.name}, device-filter id 0x{g.pci_device_id:08X}" for g in gpus)
        raise BadInput(f"no entry of the config applies to any GPU of this node ({found or 'it has no GPU'}); "
                       "nothing was changed")
    for gpu, wanted in wanted_by_gpu:
        if wanted is None:
            continue
        change = GpuChange(gpu, wanted)
        in_use = [i for i in gpu.instances if i.uuid in busy]
        if not wanted.mig_enabled:
            if in_use:
                raise NoFit(f"GPU {gpu.index}: MIG must be disabled but "
                            + ", ".join(f"{i.uuid} is in use ({busy[i.uuid]})" for i in in_use))
            change.destroy_all = list(gpu.instances)
            change.disable_mig = gpu.mig_on or gpu.mig_pending_on
            changes.append(change)
            continue
        remaining = Counter(wanted.devices)
        for i in in_use + [i for i in gpu.instances if not i.known and i not in in_use]:
            if remaining[i.profile] > 0:
                remaining[i.profile] -= 1
            else:
                raise NoFit(f"GPU {gpu.index}: {i.profile} {i.uuid} is in use "
                            f"({busy.get(i.uuid, 'a profile the catalog does not know')}) "
                            "but not in the layout; nothing was changed (use --force to ignore "
                            "job ownership; NVML still refuses while processes run)")
        view = GpuView(gpu.index, gpu.model, gpu.mig_on,
                       tuple(occupied(i, busy.get(i.uuid)) for i in gpu.instances))
        request = {n: c for n, c in remaining.items() if c > 0}
        if request:
            try:
                change.plan = planner.plan([view], request, gpu=gpu.index)
            except NeverFits as e:
                raise NeverFits(f"GPU {gpu.index}: {e}") from e
            except NoFit as e:
                raise NoFit(f"GPU {gpu.index}: the layout does not fit next to the instances in use: {e}") from e
        else:
            change.destroy_all = [i for i in gpu.instances if i.uuid not in busy and i.known]
            change.plan = planner.Plan(placements=(), enable_mig=() if gpu.mig_on else (gpu.index,))
        changes.append(change)
    return changes


def describe(changes: List[GpuChange]) -> List[str]:
    lines = []
    for c in changes:
        if c.empty:
            continue
        g = c.gpu.index
        lines += [f"GPU {g}: destroy {i.profile} GI {i.gi_id} at {i.start}:{i.size}" for i in c.destroy_all]
        if c.disable_mig:
            lines.append(f"GPU {g}: disable MIG mode")
        if c.plan:
            lines += [f"GPU {g}: {line}" for line in c.plan.describe() if not line.startswith("reuse")]
    return lines


def export(gpus: List[Gpu], name: str = "current") -> str:
    """The live layout as a mig-parted config that `apply` accepts."""
    import yaml
    entries = []
    for g in gpus:
        if not g.mig_capable:
            continue
        entry = {"devices": [g.index], "mig-enabled": g.mig_on}
        counts = Counter(i.profile for i in g.instances)
        if counts:
            entry["mig-devices"] = dict(sorted(counts.items()))
        entries.append(entry)
    return yaml.safe_dump({"version": "v1", "mig-configs": {name: entries}}, sort_keys=False)
