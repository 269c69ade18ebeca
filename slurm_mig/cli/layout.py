"""`slurm-mig apply` and `slurm-mig export`: static layouts in mig-parted's format."""
from __future__ import annotations

import click

from .app import main


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
    apply before anything changes. For static mode: on a dynamic-mode node the
    reconcile timer removes such instances again (a warning says so)."""
    from ..core import layout
    from ..errors import NoFit, SlurmMigError
    from ..node.context import NodeContext
    from ..node.layout_apply import apply_changes, busy_instances
    from ..node.sitehooks import runner
    cfg = obj.cfg()
    with open(path, encoding="utf-8") as f:
        entries = layout.load_config(f.read(), name, path)
    node = NodeContext(cfg)
    with node.ledger.lock():
        busy = busy_instances(node, include_jobs=not force)
        try:
            changes = layout.diff(node.devices.driver.gpus(), entries, busy)
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
        apply_changes(node.devices.driver, changes, runner(cfg.hooks_dir), allow_reset)
    for line in lines:
        click.echo(line)
    click.echo(f"{name}: applied" if lines else f"{name}: already in place, nothing changed")
    if cfg.mode == "dynamic" and any(c.wanted.devices for c in changes):
        click.echo("slurm-mig: this node is in dynamic mode: Prologs make each job's instances, and "
                   "`slurm-mig reconcile` (its timer) destroys idle instances no job owns, these "
                   "included; set mode = \"static\" in the config to keep a fixed layout", err=True)


@main.command("export")
@click.option("--name", default="current", show_default=True, help="Name of the mig-config written.")
@click.pass_obj
def export_cmd(obj, name):
    """Print the live layout as mig-parted YAML that `apply` accepts."""
    from ..core import layout
    from ..nvml.backend import open_driver
    click.echo(layout.export(open_driver(obj.cfg().backend).gpus(), name), nl=False)
