"""The hook verbs for use by hand (`prolog`, `task-prolog`, `epilog`) and
`reconcile`. Slurm itself runs the lean `slurm-mig-hook` instead."""
from __future__ import annotations

import os
import sys

import click

from .app import job_id, main, node_name


@main.command()
@click.option("--job", help="Job id. [default: SLURM_JOB_ID]")
@click.option("--request", "spec", metavar="SPEC", help="MIG request; default: read from Slurm (squeue).")
@click.option("--gpu", type=int, help="GPU index; default: the GPU Slurm gave the job's shards.")
@click.option("--uid", type=click.IntRange(0, 2**32 - 2), help="Owner of the job's env file. [default: SLURM_JOB_UID]")
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
    from ..hooks.dispatch import run_prolog
    cfg = obj.cfg(wait_for_room=wait)
    job = job_id(job)
    if uid is None and os.environ.get("SLURM_JOB_UID", "").isdigit():
        uid = int(os.environ["SLURM_JOB_UID"])
    if whole_gpus is not None:
        from ..core.syntax import parse_idx
        whole_gpus = parse_idx(whole_gpus)
    run_prolog(cfg, job, spec, gpu, uid, idx, whole_gpus)


@main.command("task-prolog")
@click.option("--job", help="Job id. [default: SLURM_JOB_ID]")
@click.pass_obj
def task_prolog(obj, job):
    """Slurm TaskProlog: print `export CUDA_VISIBLE_DEVICES=...` for this job
    (or `print <reason>` and exit 1 when the prolog could not serve it)."""
    from ..hooks.main import task_prolog as run_task_prolog
    text, code = run_task_prolog(obj.cfg(), job_id(job))
    sys.stdout.write(text)
    return code


@main.command()
@click.option("--job", help="Job id. [default: SLURM_JOB_ID]")
@click.pass_obj
def epilog(obj, job):
    """Slurm Epilog: destroy this job's instances. Idempotent."""
    from ..core.lifecycle import State
    from ..hooks.epilog import epilog as run_epilog
    rec = run_epilog(obj.cfg(), job_id(job))
    if rec is not None and rec.state is State.RELEASING:
        click.echo(f"slurm-mig: {rec.reason}; kept for `slurm-mig reconcile`", err=True)


@main.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be cleaned.")
@click.option("--node", metavar="NAME", callback=node_name, help="This node's Slurm name, to ask which jobs still run "
              "(default: SLURMD_NODENAME, else the short host name).")
@click.pass_obj
def reconcile(obj, dry_run, node):
    """Clean instances no job owns, records whose prolog died or whose
    instances vanished, and records of jobs Slurm no longer runs here."""
    import time
    from ..node.context import NodeContext
    from ..node.ledger import this_node
    from ..node.reconcile import reconcile_node
    from ..slurm.jobinfo import active_jobs
    since = time.time()         # records written after this are not judged by the answer
    active = active_jobs(node or this_node(), obj.cfg().slurm_bin_dir)
    if active is None:
        click.echo("squeue unavailable: jobs that ended without an epilog are not checked", err=True)
    actions = reconcile_node(NodeContext(obj.cfg()), dry_run=dry_run, active_jobs=active, since=since)
    prefix = "would " if dry_run else ""
    for a in actions:
        click.echo(prefix + a)
    if not actions:
        click.echo("nothing to do")
