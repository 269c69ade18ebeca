"""`slurm-mig doctor`: check this node and its Slurm configuration (slurm/doctor.py)."""
from __future__ import annotations

import click

from .app import main, node_name


@main.command()
@click.option("--node-name", metavar="NAME", callback=node_name, help="This node's Slurm name, for its gres.conf records. "
              "[default: SLURMD_NODENAME, else the short host name]")
@click.option("--systemd-dir", metavar="DIR", help="Where the units are installed and enabled. "
              "[default: /etc/systemd/system when systemd runs; else the units are not checked]")
@click.option("--controller", is_flag=True, help="On the controller host: only slurm.conf's checks "
              "and job_submit.lua's (which must be next to slurm.conf there), no GPU or node checks.")
@click.pass_obj
def doctor(obj, node_name, systemd_dir, controller):
    """Check the node and its Slurm: one line per check, each failure with its fix.

    Asks the controller for its configuration (`scontrol show config`) and, on
    a GPU node, for this node's Gres (`sinfo`), and checks: SelectType is
    select/cons_tres; PrologFlags has Alloc (merged into the flags already
    set); JobSubmitPlugins has lua and GresTypes the GRES the mode needs;
    Prolog=, TaskProlog= and Epilog= exist here and are this install's
    scripts (or wrappers that name them); PrologEpilogTimeout and
    BatchStartTimeout outlast a Prolog that waits for the lock, for room
    (wait_for_room) and for its read of the job; gres.conf, and the counts the
    controller runs this node with, match the live GPUs; job_submit.lua (when next to slurm.conf here) matches the catalog and
    admits this node's GPU model; state_dir, run_dir and the other directories
    root writes into are not writable by others; steer_return outlasts the
    controller's credential lifetime; guarantee_after is below max_requeues;
    the hook server's socket, when one runs; the systemd units are
    installed and enabled (when systemd runs). With --controller, on the
    controller host: the slurm.conf checks and job_submit.lua only.

    Exit 0 when nothing failed, 1 otherwise."""
    from ..slurm import doctor as checks
    from ..node.ledger import this_node
    results = checks.run(obj.cfg(), node_name or this_node(), systemd_dir, controller)
    for check in results:
        click.echo(check.line())
    failed = [c.name for c in results if c.status == checks.FAIL]
    click.echo(f"{len(failed)} of {len(results)} checks failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
