"""`slurm-mig sim ...`: create and steer a simulated MIG node."""
from __future__ import annotations

import click

from ..errors import BadInput
from .app import main


@main.group()
def sim():
    """Create and steer a simulated MIG node (state in one JSON file)."""


@sim.command("init")
@click.argument("state", type=click.Path(dir_okay=False))
@click.option("--gpus", required=True, metavar="NxMODEL[,...]",
              help="GPUs to simulate, e.g. 2xH100-80GB or 1xA100-40GB,1xA30. See `slurm-mig catalog`.")
@click.option("--mig/--no-mig", default=True, show_default=True, help="Start with MIG mode on.")
def sim_init(state, gpus, mig):
    """Create a simulated node in STATE (overwrites it), and its device and
    proc tree beside it; STATE's folder must exist (a mistyped path is not
    made, as root, folder by folder)."""
    import os
    from ..errors import BadInput
    from ..sim import init_state
    folder = os.path.dirname(os.path.abspath(state))
    if not os.path.isdir(folder):
        raise BadInput(f"folder {folder} does not exist; make it first")
    st = init_state(state, gpus, mig_enabled=mig)
    click.echo(f"simulated node {state}: " + ", ".join(
        f"GPU {i} {g['model']}" for i, g in enumerate(st["gpus"])))


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
    from ..sim import control
    if clear:
        control.clear_faults(state)
        return
    if not call or not error:
        raise BadInput("give --call and --error (or --clear)")
    control.add_fault(state, call, error, after, times)


@sim.command("busy")
@click.argument("state", type=click.Path(exists=True, dir_okay=False))
@click.option("--uuid", "mig_uuid", required=True, help="MIG-... UUID of the compute instance.")
@click.option("--clear", is_flag=True, help="End the simulated processes on it instead.")
def sim_busy(state, mig_uuid, clear):
    """Mark a process running on a MIG instance (or end it with --clear)."""
    from ..sim import control
    pid = control.set_busy(state, mig_uuid, busy=not clear)
    if pid is not None:
        click.echo(f"pid {pid} now runs on {mig_uuid}")


@sim.command("reset")
@click.argument("state", type=click.Path(exists=True, dir_okay=False))
@click.option("--gpu", "index", type=int, required=True, help="GPU index to reset.")
def sim_reset(state, index):
    """Reset one simulated GPU (like `nvidia-smi --gpu-reset -i N`): a pending
    MIG mode takes effect and its instances vanish. Refused while processes run."""
    from ..sim import control
    control.reset_gpu(state, index)
