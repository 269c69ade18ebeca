"""`slurm-mig catalog [MODEL | import]`: GPU models and their MIG profiles."""
from __future__ import annotations

import json

import click

from .app import main, table


@main.command()
@click.argument("model", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--gpu", "index", type=int, default=0, show_default=True,
              help="With `catalog import`: NVML index of the GPU to read.")
@click.option("--key", help="With `catalog import`: model key for the new entry.")
@click.pass_obj
def catalog(obj, model, as_json, index, key):
    """GPU models and their MIG profiles.

    MODEL shows one model (e.g. H100-80GB). `catalog import` instead reads a
    live GPU through NVML (read-only; MIG mode must be on) and prints a
    catalog entry for it, so a new GPU model needs data, not code."""
    if model == "import":
        _catalog_import(obj, index, key)
        return
    from ..core import catalog as cat
    c = cat.load()
    models = [c.model(model)] if model else list(c.models.values())
    if as_json:
        click.echo(json.dumps({m.key: _model_json(m) for m in models}, indent=1))
        return
    if not model:
        click.echo(table([(m.key, m.arch, m.memory_slots, m.compute_slices,
                            ", ".join(p.name for p in m.profiles)) for m in models],
                          ["MODEL", "ARCH", "SLOTS", "SLICES", "PROFILES"]))
        return
    m = models[0]
    click.echo(f"{m.key} ({m.arch}; {m.memory_slots} memory slots, {m.compute_slices} compute slices; "
               f"MIG mode change {'needs a GPU reset' if m.mig_toggle_needs_reset else 'without reset'})")
    rows = [(p.name, cat.GI_ENUM_NAMES[p.enum], p.id, p.slices, p.mem_slots,
             p.memory_mib if p.memory_mib else "?", p.sms or "?", p.max,
             "{" + ",".join(map(str, p.starts)) + f"}}:{p.mem_slots}",
             "; ".join(filter(None, ["aka " + ",".join(p.aliases) if p.aliases else "",
                                     "unverified: " + ",".join(p.unverified) if p.unverified else ""])))
            for p in m.profiles]
    click.echo(table(rows, ["PROFILE", "ENUM", "ID", "SLICES", "SLOTS", "MiB", "SMs", "MAX",
                             "PLACEMENTS", "NOTES"]))


def _model_json(m):
    return {"arch": m.arch, "memory_slots": m.memory_slots, "compute_slices": m.compute_slices,
            "aliases": list(m.aliases), "nvml_names": list(m.nvml_names),
            "pci_device_ids": list(m.pci_device_ids), "unverified": list(m.unverified),
            "profiles": [{"name": p.name, "aliases": list(p.aliases), "enum": p.enum, "id": p.id,
                          "slices": p.slices, "mem_slots": p.mem_slots, "memory_mib": p.memory_mib,
                          "sms": p.sms, "max": p.max, "starts": list(p.starts),
                          "unverified": list(p.unverified),
                          "ci_profiles": [{"enum": c.enum, "slices": c.slices, "max": c.max}
                                          for c in m.ci_profiles_for(p)]}
                         for p in m.profiles]}


def _catalog_import(obj, index, key):
    from ..nvml.backend import open_driver
    from ..nvml.discovery import catalog_entry
    click.echo(json.dumps(catalog_entry(open_driver(obj.cfg().backend), index, key), indent=1))
