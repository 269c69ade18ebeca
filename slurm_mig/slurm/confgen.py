"""gres.conf, the slurm.conf node line and job_submit.lua, from the live GPUs
or from a declared node ('2xH100-80GB'). Deterministic output."""
from __future__ import annotations

import math
import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..config import Config
from ..core import caps, catalog, guarantee, shards
from ..core.syntax import parse_gpu_spec
from ..core.view import Gpu, Instance
from ..errors import BadInput, NodeProblem

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")

TEMPLATES = ("gres.conf", "slurm.conf.node", "job_submit.lua")


class GpuDesc(NamedTuple):
    """A GPU to describe to Slurm: live, or declared by a GPU spec."""
    index: int
    minor: int
    model: catalog.GpuModel
    instances: Tuple[Instance, ...] = ()


def from_gpus(gpus: List[Gpu]) -> List[GpuDesc]:
    out = []
    for g in gpus:
        if g.model is None:
            raise BadInput(f"GPU {g.index} ({g.name}) is not in the catalog; add it with "
                           "`slurm-mig catalog import`")
        out.append(GpuDesc(g.index, g.minor, g.model, g.instances))
    return out


def from_spec(spec: str) -> List[GpuDesc]:
    cat = catalog.load()
    return [GpuDesc(i, i, cat.model(k)) for i, k in enumerate(parse_gpu_spec(spec))]


def models_of(keys: str) -> List[catalog.GpuModel]:
    """'H100-80GB,A30' -> catalog models (aliases allowed), each once."""
    cat = catalog.load()
    models = {m.key: m for m in (cat.model(k) for k in keys.split(",") if k.strip())}
    if not models:
        raise BadInput(f"no GPU models in {keys!r}; expected e.g. H100-80GB,A30-24GB")
    return list(models.values())


def gpu_type(model: catalog.GpuModel) -> str:
    return gpu_type_name(model.key)


def gpu_type_name(name: str) -> str:
    """A GPU model's name as Slurm GRES types and features spell it: H100-80GB -> h100_80gb."""
    return name.lower().replace("-", "_")


def static_records(gpus: List[GpuDesc], dev_root: str, minors: Dict[str, int]) -> List[dict]:
    """One record per instance in the order Slurm numbers their IDX: Slurm counts
    type by type in the order of the node's Gres= (written in the order the types
    first appear here), so records are grouped by profile in the order of first
    appearance by GPU index and placement start, then by GPU index and start."""
    records = []
    for g in sorted(gpus, key=lambda g: g.index):
        for i in sorted(g.instances, key=lambda i: i.start):
            if i.ci_id is None:
                continue
            gi_key, ci_key = caps.cap_key(g.minor, i.gi_id), caps.cap_key(g.minor, i.gi_id, i.ci_id)
            if gi_key not in minors or ci_key not in minors:
                raise NodeProblem(f"mig-minors has no entry for {ci_key}")
            files = ",".join([os.path.join(dev_root, f"nvidia{g.minor}"),
                              caps.node_path(dev_root, minors[gi_key]),
                              caps.node_path(dev_root, minors[ci_key])])
            records.append({"gpu": g.index, "gi_id": i.gi_id, "ci_id": i.ci_id, "start": i.start,
                            "size": i.size, "uuid": i.uuid, "profile": i.profile, "files": files})
    first = {}
    for r in records:
        first.setdefault(r["profile"], len(first))
    return sorted(records, key=lambda r: first[r["profile"]])


class NodeGroup(NamedTuple):
    """Nodes alike: a Slurm hostlist (None: the one node described, named
    nowhere), the GPUs each of them has and the site's own features."""
    nodes: Optional[str]
    gpus: List[GpuDesc]
    features: Tuple[str, ...] = ()


def models_in(groups: List[NodeGroup], cluster_models: Sequence[catalog.GpuModel] = ()) -> List[catalog.GpuModel]:
    """Every GPU model of the groups and `cluster_models`, each once, in order."""
    models = {g.model.key: g.model for group in groups for g in group.gpus}
    models.update({m.key: m for m in cluster_models})
    return list(models.values())


def features(models: Sequence[catalog.GpuModel], extra: Sequence[str] = ()) -> List[str]:
    """slurm.conf Features= of a node with `models`: per model its GRES type
    (h100_sxm5_80gb), its aliases (h100_80gb, h100) and its architecture
    (hopper), so that `--constraint=h100` picks nodes the way admins name
    them; then the site's `extra` ones."""
    out: List[str] = []
    for name in [gpu_type_name(n) for m in models for n in (m.key,) + m.aliases + (m.arch,)] + list(extra):
        if name not in out:
            out.append(name)
    return out


def render(groups: List[NodeGroup], mode: str, dev_root: str, command: str, source: str,
           proc_root: str = "/proc", cluster_models: Sequence[catalog.GpuModel] = (),
           static_partitions: Sequence[str] = (),
           interactive_charge: float = Config().interactive_charge,
           interactive_charge_one_start: float = Config().interactive_charge_one_start,
           guarantee_after: int = Config().guarantee_after) -> Dict[str, str]:
    """The files for the node groups (static mode: one node); in dynamic mode
    job_submit.lua also admits what `cluster_models` (GPU models on nodes not
    described here) can hold, leaves jobs for `static_partitions` (of
    static-mode nodes) as they are, and charges srun/salloc jobs
    `interactive_charge` of the way up to guarantee units (core/guarantee.py;
    `interactive_charge_one_start` for a set with a profile of one start),
    and batch jobs requeued `guarantee_after` times the guarantee (0: never)."""
    import jinja2
    if not groups or not all(g.gpus for g in groups):
        raise BadInput("no GPUs to describe")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    ctx = {"mode": mode, "command": command, "source": source, "static_partitions": static_partitions,
           "what": ", ".join(g.nodes for g in groups if g.nodes) or "this node"}
    if mode == "dynamic":
        ctx.update(dynamic_context(groups, dev_root, cluster_models, interactive_charge,
                                   interactive_charge_one_start), guarantee_after=guarantee_after)
        ctx["gres_types"] = "gpu,shard,mig"
        names = TEMPLATES
    else:
        from ..node.procfs import read_mig_minors
        if len(groups) != 1:
            raise BadInput("static mode describes one node at a time: its live instances")
        records = static_records(groups[0].gpus, dev_root, read_mig_minors(proc_root))
        if not records:
            raise BadInput("no MIG instances to list; apply a layout first (static mode)")
        types: Dict[str, int] = {}
        for r in records:
            types[f"mig:{r['profile']}"] = types.get(f"mig:{r['profile']}", 0) + 1
        ctx.update(records=records, gres_types="mig", groups=[_group_context(groups[0], types, [])])
        names = TEMPLATES[:2]
    return {n: env.get_template(n + ".j2").render(**ctx) for n in names}


def _group_context(group: NodeGroup, types: Dict[str, int], gpus: List[dict]) -> dict:
    """One node group's template values: its NodeName= prefix, GPUs, Gres= and Features=."""
    return {"prefix": f"NodeName={group.nodes} " if group.nodes else "", "nodes": group.nodes or "NODE",
            "gpus": gpus, "gres": ",".join(f"{k}:{v}" for k, v in types.items()),
            "features": ",".join(features([g.model for g in group.gpus], group.features))}


def dynamic_context(groups: List[NodeGroup], dev_root: str,
                    cluster_models: Sequence[catalog.GpuModel], interactive_charge: float,
                    interactive_charge_one_start: float) -> dict:
    """Template values of dynamic mode: per GPU its shard Count (its layout's
    searched weights, core/shards.py, scaled so that each profile name costs
    the same on every model), per group its Gres= (count-only mig: the most
    of each profile a node holds), and for job_submit.lua each profile
    name's shard units plus, per model, its limits and every set of
    instances an empty GPU can hold, so that sbatch refuses exactly what no
    model can, with what an interactive job asking for that set is charged
    and its guarantee."""
    models = {m.key: m for m in models_in(groups, cluster_models)}
    layouts = shards.shard_units(models.values())
    prices = {m.key: {name: layouts[m.layout].units[p.enum] for p in m.profiles for name in (p.name,) + p.aliases}
              for m in models.values()}
    try:
        scale = shards.common_scales(prices)
    except ValueError as e:
        raise BadInput(f"{e}; generate job_submit.lua for models that agree") from None
    canonical: Dict[str, str] = {}
    for m in sorted(models.values(), key=lambda m: m.key):
        for p in m.profiles:
            for name in (p.name,) + p.aliases:
                if canonical.setdefault(name, p.name) != p.name:
                    raise BadInput(f"{name} names the profile {canonical[name]} on one GPU model and "
                                   f"{p.name} on {m.key}; generate job_submit.lua for models that agree")
    units = {name: prices[m.key][name] * scale[m.key] for m in models.values() for name in prices[m.key]}
    return {
        "groups": [_dynamic_group(group, layouts, scale, dev_root) for group in groups],
        "units": [(name, canonical[name], u) for name, u in sorted(units.items())],
        "valid": ", ".join(sorted({p.name for m in models.values() for p in m.profiles})),
        "models": [_lua_model(m, layouts[m.layout], scale[m.key], interactive_charge,
                              interactive_charge_one_start)
                   for m in sorted(models.values(), key=lambda m: m.key)],
    }


def _dynamic_group(group: NodeGroup, layouts: Dict[str, "shards.LayoutUnits"], scale: Dict[str, int],
                   dev_root: str) -> dict:
    gpus = [{"type": gpu_type(g.model), "device": os.path.join(dev_root, f"nvidia{g.minor}"),
             "units": layouts[g.model.layout].count * scale[g.model.key]} for g in group.gpus]
    types: Dict[str, int] = {}
    for gpu in gpus:
        types[f"gpu:{gpu['type']}"] = types.get(f"gpu:{gpu['type']}", 0) + 1
    types["shard"] = sum(gpu["units"] for gpu in gpus)
    counts: Dict[str, int] = {}
    for g in group.gpus:
        for p in g.model.profiles:
            counts[p.name] = counts.get(p.name, 0) + p.max
    types.update({f"mig:{name}": count for name, count in sorted(counts.items())})
    return dict(_group_context(group, types, gpus), mig_counts=sorted(counts.items()))


def _lua_model(model: catalog.GpuModel, layout: "shards.LayoutUnits", scale: int,
               interactive_charge: float, interactive_charge_one_start: float) -> dict:
    """One model for job_submit.lua: its limits, and the key of every set of
    instances an empty GPU holds, for an exact lookup, with the shards an
    interactive job asking for it is charged and its guarantee (in the
    model's scaled units: a guarantee scaled stays one). A key lists
    'name:count' in the order of `profiles`, as the Lua builds it (no sort:
    Lua compares strings by locale)."""
    order = {p.enum: i for i, p in enumerate(model.profiles)}
    weights = layout.result.weights
    fits = []
    for counts in shards.placeable_sets(layout.geometry):
        held = [(order.get(e), c) for e, c in zip(layout.enums, counts) if c]
        if all(i is not None for i, _ in held):
            fits.append((",".join(f"{model.profiles[i].name}:{c}" for i, c in sorted(held)),
                         scale * guarantee.interactive_units(layout.geometry, weights, layout.count, counts,
                                                             interactive_charge,
                                                             interactive_charge_one_start),
                         scale * guarantee.guarantee(layout.geometry, tuple(weights), layout.count,
                                                     tuple(counts))))
    return {"key": model.key, "slices": model.compute_slices, "slots": model.memory_slots,
            "shards": layout.count * scale, "fits": sorted(fits),
            "profiles": [(p.name, p.max, p.slices, p.mem_slots) for p in model.profiles]}


# Seconds an NVML-heavy Prolog or Epilog may spend besides waiting (creating,
# destroying, MIG mode changes, site hooks).
NVML_MARGIN = 60


def hook_timeouts(cfg) -> Tuple[int, int]:
    """(PrologEpilogTimeout, BatchStartTimeout) a node with config `cfg`
    needs: slurmd must not kill a Prolog that is still waiting for a slow
    controller (every try of its one read), for the node lock (lock_timeout,
    at the start and again to fail the job) or for room (wait_for_room;
    interactive_wait for srun/salloc jobs, which BatchStartTimeout need not
    cover), nor an Epilog retrying busy instances (up to 7 per GPU), before it
    can report why itself."""
    from .jobinfo import read_budget
    prolog = 2 * cfg.lock_timeout + NVML_MARGIN + read_budget()       # besides waiting for room
    epilog = cfg.lock_timeout + (cfg.epilog_retries + 1) * cfg.epilog_retry_delay * 7 + NVML_MARGIN
    limit = int(math.ceil(max(prolog + max(cfg.wait_for_room, cfg.interactive_wait), epilog)))
    batch = int(math.ceil(max(prolog + cfg.wait_for_room, epilog)))   # a batch job never waits longer
    return limit, batch + 10


def hook_lines(cfg, mode: str, scripts: Optional[Dict[str, str]]) -> str:
    """slurm.conf's lines for the hooks: the installed scripts (`scripts`,
    None when run from a source tree), job_submit.lua in dynamic mode, and
    the timeouts a node with config `cfg` needs (hook_timeouts)."""
    limit, batch = hook_timeouts(cfg)
    if scripts:
        hooks = "".join(f"{param}={path}\n" for param, path in scripts.items())
    else:
        hooks = ("# Prolog=, TaskProlog=, Epilog=: <prefix>/share/slurm-mig/... of a pip install "
                 "(this slurm-mig runs from a source tree)\n")
    return (hooks + ("JobSubmitPlugins=lua\n" if mode == "dynamic" else "")
            + f"# from lock_timeout={cfg.lock_timeout:g} wait_for_room={cfg.wait_for_room:g} "
            f"interactive_wait={cfg.interactive_wait:g} "
            f"epilog_retries={cfg.epilog_retries} epilog_retry_delay={cfg.epilog_retry_delay:g}\n"
            f"PrologEpilogTimeout={limit}\nBatchStartTimeout={batch}\n"
            "PrologFlags=Alloc\n")
