"""`slurm-mig node-setup`: prepare the node's capability device nodes for
device isolation (node/isolation.py)."""
from __future__ import annotations

import click

from ..errors import BadInput
from .app import fold_paths, main

MODIFY = {0: "ModifyDeviceFiles=0 is in effect: nvidia-modprobe leaves the cap nodes as set",
          1: "ModifyDeviceFiles=1 (the driver's default): nvidia-modprobe may put a changed cap node "
             "back to 0444, so the Prolog writes DeviceFileModify 0 for each job's capabilities; "
             "`options nvidia NVreg_ModifyDeviceFiles=0` (then create /dev/nvidia* at boot) makes "
             "that unnecessary",
          None: "ModifyDeviceFiles unknown: no /proc/driver/nvidia/params; the Prolog writes "
                "DeviceFileModify 0 for each job's capabilities"}


@main.command("node-setup")
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if a node is missing, not "
              "root-only, or not the device it should be.")
@click.pass_obj
def node_setup(obj, check):
    """Device isolation: make the local GPUs' MIG cap nodes root-only (boot).

    Every GI and CI capability node of the local GPUs
    (/dev/nvidia-caps/nvidia-cap<minor>, minors from
    /proc/driver/nvidia-caps/mig-minors) is made to exist as root:root 0400,
    so that only the jobs the Prolog hands them to can use MIG instances
    (isolate_devices = true). Nodes given to running jobs stay theirs.
    Reports whether NVreg_ModifyDeviceFiles=0 is in effect.

    Run at boot before slurmd (slurm-mig-node-setup.service, from
    `slurm-mig systemd-units`).
    Exit 0 when the nodes are as they should be (after fixing them), 1 when
    a problem remains (or, with --check, anything differs), 2 when
    isolate_devices is off: root-only cap nodes would then lock every job
    out of its instances."""
    from ..node import isolation
    from ..node.context import NodeContext
    cfg = obj.cfg()
    if not cfg.isolate_devices:
        raise BadInput("isolate_devices is off: root-only cap nodes would lock every job out of "
                       "its MIG instances; set `isolate_devices = true` in the config first")
    ctx = NodeContext(cfg)
    if check:
        report = isolation.setup(ctx, fix=False)
    else:
        with ctx.ledger.lock():
            report = isolation.setup(ctx)
    would = "would be " if check else ""
    click.echo(f"{report.nodes} capability nodes of the local GPUs under {cfg.dev_root}/nvidia-caps")
    if report.created:
        click.echo(f"{would}created ({len(report.created)}): {fold_paths(report.created)}")
    for was, paths in sorted(report.fixed.items()):
        click.echo(f"{would}made root-only ({len(paths)}, were {was}): {fold_paths(paths)}")
    for job, paths in sorted(report.jobs.items()):
        click.echo(f"left to job {job}: {fold_paths(paths)}")
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    click.echo(MODIFY[report.modify if report.modify in (0, 1) else None])
    differs = check and (report.created or report.fixed)
    return 1 if report.problems or differs else 0
