"""The verbs of `slurm-mig`; `slurm-mig VERB --help` documents each."""
from __future__ import annotations

import json
import os
import sys

import click

from .cli import _job_id, main
from .errors import BadInput


def _table(rows, headers) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [headers] + rows)


# -- sim -----------------------------------------------------------------
@main.group()
def sim():
    """Create and steer a simulated MIG node (state in one JSON file)."""


@sim.command("init")
@click.argument("state", type=click.Path(dir_okay=False))
@click.option("--gpus", required=True, metavar="NxMODEL[,...]",
              help="GPUs to simulate, e.g. 2xH100-80GB or 1xA100-40GB,1xA30. See `slurm-mig catalog`.")
@click.option("--mig/--no-mig", default=True, show_default=True, help="Start with MIG mode on.")
def sim_init(state, gpus, mig):
    """Create a simulated node in STATE (overwrites it)."""
    from .sim import init_state
    st = init_state(state, gpus, mig_enabled=mig)
    click.echo(f"simulated node {state}: " + ", ".join(
        f"GPU {i} {g['model']}" for i, g in enumerate(st["gpus"])))


def _error_code(value: str) -> int:
    import pynvml
    from .sim.nvml import KILL
    if value.isdigit():
        return int(value)
    if value.upper() == "KILL":
        return KILL
    name = "NVML_ERROR_" + value.upper().replace("NVML_ERROR_", "")
    if not hasattr(pynvml, name):
        raise BadInput(f"unknown NVML error {value!r}; use a number or a name such as "
                       "IN_USE, INSUFFICIENT_RESOURCES, UNKNOWN")
    return getattr(pynvml, name)


@sim.command("fault")
@click.argument("state", type=click.Path(exists=True, dir_okay=False))
@click.option("--call", "call", metavar="NVML_FUNCTION", help="e.g. nvmlDeviceCreateGpuInstanceWithPlacement")
@click.option("--error", metavar="CODE", help="NVML error code or name, e.g. 23 or INSUFFICIENT_RESOURCES; "
              "KILL instead SIGKILLs the calling process at that call (crash tests).")
@click.option("--after", default=0, show_default=True, help="Let this many calls succeed first.")
@click.option("--times", default=1, show_default=True, help="Fail this many calls.")
@click.option("--clear", is_flag=True, help="Remove all injected faults.")
def sim_fault(state, call, error, after, times, clear):
    """Make the Nth call of an NVML function fail with an error code."""
    from .sim import SimNvml, SimStore
    with SimStore(state).transaction() as st:
        st["_dirty"] = True
        if clear:
            st["faults"], st["calls"] = [], {}
            return
        if not call or not error:
            raise BadInput("give --call and --error (or --clear)")
        if not hasattr(SimNvml, call):
            raise BadInput(f"the simulator has no NVML function {call!r}")
        if after < 0 or times < 1:
            raise BadInput("--after must be >= 0 and --times >= 1")
        st["calls"].pop(call, None)
        st["faults"].append({"call": call, "error": _error_code(error), "after": after,
                             "times": times, "fired": 0})


@sim.command("busy")
@click.argument("state", type=click.Path(exists=True, dir_okay=False))
@click.option("--uuid", "mig_uuid", required=True, help="MIG-... UUID of the compute instance.")
@click.option("--clear", is_flag=True, help="End the simulated processes on it instead.")
def sim_busy(state, mig_uuid, clear):
    """Mark a process running on a MIG instance (or end it with --clear)."""
    from .sim import SimStore
    from .sim.nvml import lookup_uuid
    with SimStore(state).transaction() as st:
        where = lookup_uuid(st, mig_uuid)
        if where is None:
            raise BadInput(f"no instance with UUID {mig_uuid} on this simulated node")
        g, gi, ci = where
        st["_dirty"] = True
        if clear:
            st["processes"] = [p for p in st["processes"] if (p["gpu"], p["gi"], p["ci"]) != where]
            return
        st["next_pid"] += 1
        st["processes"].append({"pid": st["next_pid"], "gpu": g, "gi": gi, "ci": ci})
        click.echo(f"pid {st['next_pid']} now runs on {mig_uuid}")


# -- catalog ---------------------------------------------------------------
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
    from . import catalog as cat
    c = cat.load()
    models = [c.model(model)] if model else list(c.models.values())
    if as_json:
        click.echo(json.dumps({m.key: _model_json(m) for m in models}, indent=1))
        return
    if not model:
        click.echo(_table([(m.key, m.arch, m.memory_slots, m.compute_slices,
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
    click.echo(_table(rows, ["PROFILE", "ENUM", "ID", "SLICES", "SLOTS", "MiB", "SMs", "MAX",
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
    from .driver import Driver, _nvml_str, open_backend
    d = Driver(open_backend(obj.cfg().backend))
    n = d.nvml
    h = d.handle(index)
    name = _nvml_str(n.nvmlDeviceGetName(h))
    profiles = d.gi_profiles(h)
    if not profiles:
        raise BadInput(f"GPU {index} ({name}) reports no MIG profiles; is MIG mode on?")
    from .catalog import ARCH_CODES
    placements = {info.id: d.placements(h, info.id) for _, info in profiles}
    slots = max(s + z for pl in placements.values() for s, z in pl)
    arch = {code: name for name, code in ARCH_CODES.items()}.get(n.nvmlDeviceGetArchitecture(h))
    if arch is None:
        raise BadInput(f"GPU {index} ({name}) has an architecture the catalog does not know "
                       "(MIG mode handling is per architecture)")
    layout, models = {}, {}
    for enum, info in profiles:
        pl = placements[info.id]
        layout[str(enum)] = {"id": info.id, "slices": info.sliceCount, "mem_slots": pl[0][1] if pl else 0,
                             "max": info.instanceCount, "starts": [s for s, _ in pl]}
        models[str(enum)] = {"name": _nvml_str(info.name).replace("MIG ", ""),
                             "memory_mib": info.memorySizeMB, "sms": info.multiprocessorCount}
    pci = n.nvmlDeviceGetPciInfo(h)
    key = key or name.replace("NVIDIA ", "").replace(" ", "-")
    entry = {"layouts": {key: {"memory_slots": slots,
                               "compute_slices": max(i.sliceCount for _, i in profiles),
                               "gi_profiles": layout}},
             "models": {key: {"aliases": [], "nvml_names": [name],
                              "pci_device_ids": [f"0x{pci.pciDeviceId >> 16:04X}"],
                              "arch": arch, "layout": key,
                              "memory_mib": n.nvmlDeviceGetMemoryInfo(h).total >> 20,
                              "profiles": models}}}
    click.echo(json.dumps(entry, indent=1))


# -- status / plan -------------------------------------------------------
def _status_doc(cfg):
    from . import planner
    from .executor import node_view, owners
    from .hooks import Node
    node = Node(cfg)
    gpus = node.driver.gpus()
    try:
        records = node.ledger.live()
    except PermissionError:
        records = []
    owned = owners(records)
    views = {v.index: v for v in node_view(gpus, records)}
    doc = []
    for g in gpus:
        view = views.get(g.index)
        free = {}
        if view is not None:
            as_busy = planner.GpuView(view.index, view.model, True,
                                      tuple(s._replace(owner=s.owner or "-") for s in view.slots))
            free = {p.name: planner.capacity(as_busy, p) for p in view.model.profiles}
        doc.append({
            "index": g.index, "name": g.name, "model": g.model_key, "uuid": g.uuid, "minor": g.minor,
            "mig": {"current": g.mig_current, "pending": g.mig_pending},
            "instances": [{"profile": i.profile, "profile_id": i.profile_id, "gi_id": i.gi_id,
                           "ci_id": i.ci_id, "placement": [i.start, i.size], "uuid": i.uuid,
                           "owner": owned.get((g.index, i.gi_id))} for i in g.instances],
            "can_create": free})
    return doc


def _mode(v: int) -> str:
    return {1: "on", 0: "off"}.get(v, "n/a")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(obj, as_json):
    """GPUs, MIG mode, instances with their owning jobs, and free room."""
    doc = _status_doc(obj.cfg())
    if as_json:
        click.echo(json.dumps({"gpus": doc}, indent=1))
        return
    click.echo(_table([(g["index"], g["model"], g["uuid"], f"{_mode(g['mig']['current'])}/"
                        f"{_mode(g['mig']['pending'])}", len(g["instances"])) for g in doc],
                      ["GPU", "MODEL", "UUID", "MIG(cur/pend)", "INSTANCES"]))
    rows = [(g["index"], i["gi_id"], i["ci_id"] if i["ci_id"] is not None else "-", i["profile"],
             f"{i['placement'][0]}:{i['placement'][1]}", i["uuid"] or "-",
             f"job {i['owner']}" if i["owner"] else "idle")
            for g in doc for i in g["instances"]]
    if rows:
        click.echo()
        click.echo(_table(rows, ["GPU", "GI", "CI", "PROFILE", "PLACEMENT", "UUID", "OWNER"]))
    click.echo()
    click.echo("Can still create (each alone):")
    for g in doc:
        room = ", ".join(f"{k}:{v}" for k, v in g["can_create"].items() if v) or "nothing"
        click.echo(f"  GPU {g['index']}: {room}")


@main.command()
@click.option("--request", "spec", required=True, metavar="SPEC", help="e.g. mig:3g.40gb:1,mig:1g.10gb:2")
@click.option("--gpu", type=int, help="Place only on this GPU index.")
@click.option("--policy", type=click.Choice(["most-room", "packed", "first-fit"]), help="Placement policy.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plan(obj, spec, gpu, policy, as_json):
    """Show what a prolog would do for SPEC; changes nothing. Exit 3 if it does not fit."""
    from . import planner
    from .hooks import Node
    from .request import parse_spec
    cfg = obj.cfg(policy=policy)
    request = parse_spec(spec)
    p = planner.plan(Node(cfg).view(), request, gpu, planner.POLICIES[cfg.policy])
    if as_json:
        click.echo(json.dumps({
            "enable_mig": list(p.enable_mig),
            "destroy": [{"gpu": s.gpu, "gi_id": s.gi_id, "placement": [s.start, s.size]} for s in p.destroy],
            "placements": [{"gpu": x.gpu, "profile": x.profile.name, "profile_id": x.profile.id,
                            "placement": [x.start, x.profile.mem_slots],
                            "reuse_gi": x.reuse.gi_id if x.reuse else None} for x in p.placements]},
            indent=1))
    else:
        click.echo("\n".join(p.describe()))


# -- hooks -----------------------------------------------------------------
@main.command()
@click.option("--job", help="Job id. [default: SLURM_JOB_ID]")
@click.option("--request", "spec", metavar="SPEC", help="MIG request; default: read from Slurm (scontrol).")
@click.option("--gpu", type=int, help="GPU index; default: the GPU Slurm gave the job's shards.")
@click.option("--uid", type=int, help="Owner of the job's env file. [default: SLURM_JOB_UID]")
@click.option("--wait", "wait", type=float, help="Seconds to wait for room (overrides config wait_for_room).")
@click.option("--idx", metavar="LIST", help="Static mode: allocated mig IDX numbers, e.g. 0-1,4; default: from Slurm.")
@click.option("--whole-gpus", metavar="LIST", help="GPUs given to the job whole (--gres=gpu), e.g. 0,1; "
              "default: from Slurm.")
@click.pass_obj
def prolog(obj, job, spec, gpu, uid, wait, idx, whole_gpus):
    """Slurm Prolog: create (dynamic mode) or look up (static mode) and bind
    this job's MIG instances.

    Exit 0 also when the job cannot be served (its TaskProlog then fails it
    with the reason), so per-job problems never drain the node; exit 1 only
    for node problems."""
    from . import hooks
    cfg = obj.cfg(wait_for_room=wait)
    job = _job_id(job)
    if uid is None and os.environ.get("SLURM_JOB_UID", "").isdigit():
        uid = int(os.environ["SLURM_JOB_UID"])
    if whole_gpus is not None:
        from .static import parse_idx
        whole_gpus = parse_idx(whole_gpus)
    hooks.run_prolog(cfg, job, spec, gpu, uid, idx, whole_gpus)


@main.command("task-prolog")
@click.option("--job", help="Job id. [default: SLURM_JOB_ID]")
@click.pass_obj
def task_prolog(obj, job):
    """Slurm TaskProlog: print `export CUDA_VISIBLE_DEVICES=...` for this job
    (or `print <reason>` and exit 1 when the prolog could not serve it)."""
    from .jobfiles import task_prolog as read_job_files
    text, code = read_job_files(obj.cfg().run_dir, _job_id(job))
    sys.stdout.write(text)
    return code


@main.command()
@click.option("--job", help="Job id. [default: SLURM_JOB_ID]")
@click.pass_obj
def epilog(obj, job):
    """Slurm Epilog: destroy this job's instances. Idempotent."""
    from . import hooks
    rec = hooks.epilog(obj.cfg(), _job_id(job))
    if rec is not None and rec.state == "releasing":
        click.echo(f"slurm-mig: {rec.reason}; kept for `slurm-mig reconcile`", err=True)


@main.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be cleaned.")
@click.option("--node", metavar="NAME", help="This node's Slurm name, to ask which jobs still run "
              "(default: SLURMD_NODENAME, else the short host name).")
@click.pass_obj
def reconcile(obj, dry_run, node):
    """Clean instances no job owns, records whose prolog died or whose
    instances vanished, and records of jobs Slurm no longer runs here."""
    import socket
    from . import hooks
    from .slurm import active_jobs
    node = node or os.environ.get("SLURMD_NODENAME") or socket.gethostname().split(".")[0]
    active = active_jobs(node)
    if active is None:
        click.echo("squeue unavailable: jobs that ended without an epilog are not checked", err=True)
    actions = hooks.reconcile(obj.cfg(), dry_run=dry_run, active_jobs=active)
    prefix = "would " if dry_run else ""
    for a in actions:
        click.echo(prefix + a)
    if not actions:
        click.echo("nothing to do")


# -- Slurm configuration ---------------------------------------------------
@main.command("gres-conf")
@click.option("--mode", type=click.Choice(["dynamic", "static"]), help="Default: the config's mode.")
@click.option("--output", metavar="DIR", help="Write the files here (default: print them).")
@click.option("--node-name", metavar="NAME", help="NodeName for the records and the node line.")
@click.option("--dev-root", default="/dev", show_default=True, metavar="DIR",
              help="Where /dev/nvidiaN and nvidia-caps/ live (tests use fake ones).")
@click.option("--proc-root", default="/proc", show_default=True, metavar="DIR",
              help="Where driver/nvidia-caps/mig-minors lives (static mode).")
@click.option("--from-spec", "spec", metavar="NxMODEL[,...]",
              help="Describe a declared node (e.g. 8xH100-80GB) instead of the live GPUs (dynamic mode).")
@click.pass_obj
def gres_conf(obj, mode, output, node_name, dev_root, proc_root, spec):
    """Generate gres.conf, slurm.conf.node (GresTypes + the node's Gres=) and,
    in dynamic mode, job_submit.lua, from the live GPUs or a declared node."""
    from . import generator
    from .fsutil import atomic_write
    cfg = obj.cfg()
    mode = mode or cfg.mode
    if spec and mode == "static":
        raise BadInput("--from-spec describes no instances; static mode reads the live GPUs")
    if spec:
        gpus, source = generator.from_spec(spec), f"the declared node {spec}"
    else:
        from .driver import Driver, open_backend
        gpus, source = generator.from_driver(Driver(open_backend(cfg.backend))), \
            f"the live GPUs (backend {cfg.backend})"
    command = " ".join(["gres-conf", "--mode", mode] + (["--from-spec", spec] if spec else []))
    files = generator.render(gpus, mode, node_name, dev_root, command, source, proc_root)
    if output:
        os.makedirs(output, exist_ok=True)
        for name, text in files.items():
            atomic_write(os.path.join(output, name), text.encode(), mode=0o644)
            click.echo(f"wrote {os.path.join(output, name)}")
    else:
        for name, text in files.items():
            click.echo(f"==> {name} <==\n{text}")


# -- static layouts ----------------------------------------------------------
@main.command("apply")
@click.option("-f", "--file", "path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Layout file in mig-parted format (version: v1, mig-configs: ...).")
@click.option("-c", "--config-name", "name", required=True, metavar="NAME", help="Which mig-config to apply.")
@click.option("--check", is_flag=True, help="Change nothing; exit 1 with the differences if the GPUs differ.")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--force", is_flag=True, help="Also remove instances a Slurm job owns (NVML still refuses while processes run).")
@click.option("--allow-reset", is_flag=True, help="When a MIG mode change is left pending (Ampere), reset "
              "that GPU alone, if no process uses it.")
@click.pass_obj
def apply_cmd(obj, path, name, check, dry_run, force, allow_reset):
    """Apply a static MIG layout, changing only what differs (idempotent).

    Instances already in the layout stay where they are; what is missing is
    placed around them. An instance in use that would have to go stops the
    apply before anything changes."""
    from . import layout
    from .errors import NoFit, SlurmMigError
    from .hooks import Node
    from .sitehooks import runner
    cfg = obj.cfg()
    with open(path, encoding="utf-8") as f:
        entries = layout.load_config(f.read(), name)
    node = Node(cfg)
    with node.ledger.lock():
        busy = _busy_instances(node, include_jobs=not force)
        try:
            changes = layout.diff(node.driver, entries, busy)
        except NoFit as e:
            raise SlurmMigError(f"cannot apply {name!r}: {e}") from e
        lines = layout.describe(changes)
        if check or dry_run:
            for line in lines:
                click.echo(line)
            if check:
                click.echo(f"{name}: {'differs' if lines else 'matches'}", err=bool(lines))
                return 1 if lines else 0
            return 0
        layout.apply_changes(node.driver, changes, runner(cfg.hooks_dir), allow_reset)
    for line in lines:
        click.echo(line)
    click.echo(f"{name}: applied" if lines else f"{name}: already in place, nothing changed")


def _busy_instances(node, include_jobs: bool) -> dict:
    """MIG UUID -> why it is in use: a running process, or a job's ledger record."""
    busy = {}
    if include_jobs:
        for rec in node.ledger.live():
            for u in rec.uuids:
                busy[u] = f"job {rec.job}"
    for g in node.driver.gpus():
        for i in g.instances:
            if i.uuid:
                pids = node.driver.busy_pids(i.uuid)
                if pids:
                    busy[i.uuid] = "pids " + ",".join(map(str, pids))
    return busy


@main.command("export")
@click.option("--name", default="current", show_default=True, help="Name of the mig-config written.")
@click.pass_obj
def export_cmd(obj, name):
    """Print the live layout as mig-parted YAML that `apply` accepts."""
    from . import layout
    from .driver import Driver, open_backend
    click.echo(layout.export(Driver(open_backend(obj.cfg().backend)), name), nl=False)


@sim.command("reset")
@click.argument("state", type=click.Path(exists=True, dir_okay=False))
@click.option("--gpu", "index", type=int, required=True, help="GPU index to reset.")
def sim_reset(state, index):
    """Reset one simulated GPU (like `nvidia-smi --gpu-reset -i N`): a pending
    MIG mode takes effect and its instances vanish. Refused while processes run."""
    import pynvml
    from .sim import SimNvml
    n = SimNvml(state)
    n.nvmlInit()
    try:
        n.reset_gpu(index)
    except pynvml.NVMLError as e:
        raise BadInput(f"cannot reset GPU {index}: "
                       + ("processes are running on it" if e.value == pynvml.NVML_ERROR_IN_USE
                          else f"no GPU {index} on this simulated node")) from None
