"""`slurm-mig free` (any user, any host with the Slurm client) and
`slurm-mig publish-room` (root, on a node): the cluster's free MIG slices
(slurm/room.py)."""
from __future__ import annotations

import json
import os

import click

from ..errors import BadInput
from .app import main, node_name, table


@main.command()
@click.option("-p", "--partition", metavar="NAME", help="Only this partition's nodes.")
@click.option("-n", "--nodes", metavar="HOSTLIST", help="Only these nodes.")
@click.option("--profile", metavar="NAME", help="Only GPUs where this profile can start, e.g. 3g.40gb.")
@click.option("--field", type=click.Choice(["extra", "comment"]),
              help="The node field the nodes publish into. [default: room_field of the config: extra]")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def free(obj, partition, nodes, profile, field, as_json):
    """Which MIG profiles can start now, and how many, per node and GPU.

    Needs no root and works from any host with the Slurm client: one `sinfo`
    reads what every node published (after each GPU job's Prolog and Epilog,
    and every 10 minutes) into its Extra field. A count is for that profile
    alone: 1g.10gb:7 and 7g.80gb:1 on one GPU means either, not both. AGE is
    how old the node's summary is; nodes that are down, drained or fully
    allocated show their state instead. Slurm's own views do not tell this:
    `sinfo -o %G` lists the most of each profile a node could ever hold, and
    `scontrol show job -d` shows the shard units a job was charged."""
    from ..slurm.room import age, cluster_room
    cfg = _users_config(obj)
    field = field or cfg.room_field
    if not field:
        raise BadInput("room_field is empty in the config: no node publishes; pass --field extra")
    if profile:
        profile = _canonical(profile)
    lines = cluster_room(field, cfg.slurm_bin_dir, partition, nodes)
    rows = []
    for line in lines:
        if line.room is None:
            if line.mig and not profile:         # nothing published: no profile known to start
                rows.append(dict(node=line.node, state=line.state, gpu=None, model=None, can_start=None, age=None))
            continue
        for g in line.room.gpus:
            can = g.can_start if line.usable else {}
            if profile and not can.get(profile):
                continue
            rows.append(dict(node=line.node, state=line.state, gpu=g.index, model=g.model, can_start=can,
                             age=age(line.room)))
    if as_json:
        click.echo(json.dumps({"gpus": rows}, indent=1))
        return 0
    if not rows:
        click.echo(f"no GPU {'where ' + profile + ' can start' if profile else 'publishes its free slices'}")
        return 0
    click.echo(table([(r["node"], r["state"], "-" if r["gpu"] is None else r["gpu"], r["model"] or "-",
                       _room(r), "-" if r["age"] is None else f"{r['age']}s") for r in rows],
                     ["NODE", "STATE", "GPU", "MODEL", "CAN START NOW (each profile alone)", "AGE"]))
    totals = {}
    for r in rows:
        for name, n in (r["can_start"] or {}).items():
            totals[name] = totals.get(name, 0) + n
    if totals:
        click.echo("\nIn all: " + ", ".join(f"{name}:{n}" for name, n in sorted(totals.items())))
    return 0


def _users_config(obj):
    """The config, or the defaults when it is root's alone (mode 0600): `free`
    needs only room_field and slurm_bin_dir, and any user may run it."""
    from .. import config
    try:
        return obj.cfg()
    except BadInput:
        path = config.config_path(obj.path)
        if not os.path.exists(path) or os.access(path, os.R_OK):
            raise
        click.echo(f"slurm-mig: {path} is not readable by you: using the defaults "
                   f"(room_field = {config.Config().room_field}; --field names another)", err=True)
        return config.Config()


def _canonical(name: str) -> str:
    """A profile name as the nodes publish it (aliases such as 3g.39gb accepted)."""
    from ..core import catalog
    cat = catalog.load()
    for model in cat.models.values():
        found = model.find_profile(name)
        if found is not None:
            return found.name
    raise BadInput(f"unknown MIG profile {name!r}; valid profiles: {', '.join(cat.all_profile_names())}")


def _room(row) -> str:
    if row["can_start"] is None:
        return "not published (no Prolog/Epilog since slurmd started, or room_field off)"
    return " ".join(f"{p}:{n}" for p, n in row["can_start"].items()) or "nothing"


@main.command("publish-room")
@click.option("--node", metavar="NAME", callback=node_name, help="This node's Slurm name (default: SLURMD_NODENAME, "
              "else the short host name).")
@click.option("--force", is_flag=True, help="Send it even when it did not change since the last time.")
@click.pass_obj
def publish_room(obj, node, force):
    """Send this node's free MIG slices to Slurm (root, on the node).

    `scontrol update NodeName=... Extra=<summary>` (room_field), which
    `slurm-mig free` reads for users. A GPU job's Prolog and Epilog do it when
    the summary changed; the reconcile timer runs this with --force, for a
    controller that lost the field."""
    from ..node.ledger import this_node
    from ..slurm.room import publish
    click.echo(publish(obj.cfg(), node or this_node(), force))
