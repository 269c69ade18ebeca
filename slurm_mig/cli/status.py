"""`slurm-mig status` and `slurm-mig plan`: read the node, change nothing."""
from __future__ import annotations

import json

import click

from ..errors import BadInput
from .app import main, table


def _mode(v: int) -> str:
    return {1: "on", 0: "off"}.get(v, "n/a")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output; each instance's owner is "
              "the owning job's id (null otherwise), owner_kind says what holds it (job, idle, in_use: "
              "processes no job owns, quarantined, unknown_profile, unreadable).")
@click.option("--prometheus", is_flag=True, help="Prometheus text format, for node_exporter's "
              "textfile collector: MIG mode, instances and their jobs, room per profile, and the "
              "node's counters (prologs, requeues, jobs failed, reconcile actions).")
@click.option("--output", metavar="FILE", help="With --prometheus: write FILE atomically (a temporary "
              "file renamed over it), e.g. /var/lib/node_exporter/textfile_collector/slurm_mig.prom.")
@click.pass_obj
def status(obj, as_json, prometheus, output):
    """GPUs, MIG mode, instances with their owning jobs, and free room.

    With --prometheus, what cannot be read (NVML, or the state directory when
    not root) is left out, said by slurm_mig_nvml_up / slurm_mig_state_readable
    and on stderr, and the exit status is 1; the rest is still written."""
    from ..node.context import NodeContext
    if output and not prometheus:
        raise BadInput("--output goes with --prometheus")
    if as_json and prometheus:
        raise BadInput("--json and --prometheus are two formats: give one")
    if prometheus:
        return _prometheus(NodeContext(obj.cfg()), output)
    from ..node.status import status_doc
    doc, problem = status_doc(NodeContext(obj.cfg()))
    if problem:
        click.echo(f"slurm-mig: {problem}: owners unknown, free room not shown", err=True)
    if as_json:
        click.echo(json.dumps({"gpus": doc, **({"ledger_error": problem} if problem else {})}, indent=1))
        return
    click.echo(table([(g["index"], g["model"], g["uuid"], f"{_mode(g['mig']['current'])}/"
                        f"{_mode(g['mig']['pending'])}", len(g["instances"])) for g in doc],
                      ["GPU", "MODEL", "UUID", "MIG(cur/pend)", "INSTANCES"]))
    rows = [(g["index"], i["gi_id"], i["ci_id"] if i["ci_id"] is not None else "-", i["profile"],
             f"{i['placement'][0]}:{i['placement'][1]}", i["uuid"] or "-",
             i["owned_by"])
            for g in doc for i in g["instances"]]
    if rows:
        click.echo()
        click.echo(table(rows, ["GPU", "GI", "CI", "PROFILE", "PLACEMENT", "UUID", "OWNER"]))
    click.echo()
    click.echo("Can still create (each alone):")
    for g in doc:
        room = ", ".join(f"{k}:{v}" for k, v in g["can_create"].items() if v) or "nothing"
        click.echo(f"  GPU {g['index']}: {room}")
    for g in doc:
        if g["hold"]:
            by = f"job {g['hold']['job']}" if g["hold"]["job"] else "a job being submitted"
            click.echo(f"GPU {g['index']} is kept from new jobs by {by} while {g['hold']['instance']}, "
                       "which no job owns, is in use (hold_stuck_gpus)")


def _prometheus(ctx, output) -> int:
    from ..fsutil import atomic_write
    from ..node.metrics import render
    text, problem = render(ctx)
    if output:
        atomic_write(output, text, mode=0o644, durable=False)
    else:
        click.echo(text.decode(), nl=False)
    if problem:
        click.echo(f"slurm-mig: cannot read {problem}", err=True)
    return 1 if problem else 0


@main.command()
@click.option("--request", "spec", required=True, metavar="SPEC", help="e.g. mig:3g.40gb:1,mig:1g.10gb:2")
@click.option("--gpu", type=int, help="Place only on this GPU index (Slurm's GPU for the job). "
              "Without it, on one GPU that can take the request, as a Prolog does; across GPUs "
              "only with gpu_fallback = true.")
@click.option("--policy", type=click.Choice(["most-room", "packed", "first-fit"]), help="Placement policy.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def plan(obj, spec, gpu, policy, as_json):
    """Show what a prolog would do for SPEC; changes nothing. Exit 3 if it does not fit."""
    from ..core import planner
    from ..core.policies import policy as named_policy
    from ..core.syntax import MigRequest
    from ..node.context import NodeContext
    from ..node.occupancy import read_view
    cfg = obj.cfg(policy=policy)
    request = MigRequest.parse(spec)
    p = planner.plan(read_view(NodeContext(cfg)), request, gpu, named_policy(cfg.policy), spread=cfg.gpu_fallback)
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
