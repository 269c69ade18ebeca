"""`slurm-mig gres-conf`: the Slurm configuration that matches the node."""
from __future__ import annotations

import os

import click

from ..errors import BadInput
from .app import main, node_name


@main.command("gres-conf")
@click.option("--mode", type=click.Choice(["dynamic", "static"]), help="Default: the config's mode.")
@click.option("--output", metavar="DIR", help="Write the files here (default: print them).")
@click.option("--node-name", metavar="NAME", callback=node_name, help="NodeName for the records and the node line.")
@click.option("--dev-root", metavar="DIR", help="Where /dev/nvidiaN and nvidia-caps/ live. "
              "[default: config dev_root: /dev, or the simulated node's own]")
@click.option("--proc-root", metavar="DIR", help="Where driver/nvidia-caps/mig-minors lives (static "
              "mode). [default: config proc_root: /proc, or the simulated node's own]")
@click.option("--from-spec", "spec", metavar="NxMODEL[,...]",
              help="Describe a declared node (e.g. 8xH100-80GB) instead of the live GPUs (dynamic mode).")
@click.option("--cluster", "cluster_file", metavar="FILE",
              help="A cluster description (TOML: [[group]] nodes = HOSTLIST, gpus = NxMODEL; "
              "optional [accounting]): every file for every group at once, in dynamic mode.")
@click.option("--cluster-models", metavar="MODEL[,...]",
              help="GPU models on other nodes of the cluster (with --cluster: on nodes it does not "
              "describe, e.g. static ones): job_submit.lua (one file for the whole cluster) then "
              "also admits what they can hold, and the accounting lines track their profiles. "
              "Regenerate it with every model listed when a model is added.")
@click.pass_obj
def gres_conf(obj, mode, output, node_name, dev_root, proc_root, spec, cluster_file, cluster_models):
    """Generate gres.conf, slurm.conf.node (GresTypes + the node's Gres= and
    Features=), slurm.conf.hooks (Prolog=, TaskProlog=, Epilog= naming this
    install's scripts, PrologFlags and the timeouts the config needs),
    slurm.conf.accounting (AccountingStorageTRES per profile and GPU type,
    TRESBillingWeights by compute slices; needs slurmdbd) and, in dynamic
    mode, job_submit.lua, from the live GPUs or a declared node.

    In dynamic mode each GPU offers `shard` units counted with weights
    searched per GPU layout (a 7-slice instance costs the whole GPU), and
    job_submit.lua turns --gres=mig:<profile>:<n> into those units, refusing
    at sbatch what no GPU model of the cluster can hold, with the limit.
    A profile name that several models offer costs the same units on each
    (their weights and Counts scaled), so one job_submit.lua serves a
    cluster of mixed models; Slurm runs a job only on nodes whose Gres=
    lists its profiles. An srun/salloc job is charged more (config
    interactive_charge, 0..1, of the way up to units at which every GPU
    Slurm may pick can hold it; interactive_charge_one_start for a request
    with a profile of one legal start, 4g.40gb): it cannot go back to the
    queue when its GPU has no room. A batch job the Prolog sent back
    guarantee_after times is charged those units from then on.

    With --cluster FILE, one run describes every node group of the cluster:
    one gres.conf for all nodes (NodeName=<hostlist> records, to install
    unchanged on every node) and one NodeName= line per group."""
    from ..slurm import accounting, confgen
    cfg = obj.cfg()
    if spec is not None and not spec.strip():
        raise BadInput("--from-spec is empty; give NxMODEL, e.g. 8xH100-80GB (or leave it out for the live GPUs)")
    mode = mode or ("dynamic" if cluster_file else cfg.mode)
    dev_root, proc_root = dev_root or cfg.dev_root, proc_root or cfg.proc_root
    if cluster_models and mode == "static":
        raise BadInput("--cluster-models is for job_submit.lua, which only dynamic mode uses")
    if spec and mode == "static":
        raise BadInput("--from-spec describes no instances; static mode reads the live GPUs")
    billing, static_partitions = accounting.Billing(), ()
    if cluster_file:
        cluster = _cluster(cluster_file, mode, node_name, spec)
        groups, billing, static_partitions = cluster.groups, cluster.billing, cluster.static_partitions
        source, command = f"the cluster description {cluster_file}", f"gres-conf --cluster {cluster_file}"
    elif spec:
        groups, source = [confgen.NodeGroup(node_name, confgen.from_spec(spec))], f"the declared node {spec}"
    else:
        from ..nvml.backend import open_driver
        groups = [confgen.NodeGroup(node_name, confgen.from_gpus(open_driver(cfg.backend).gpus()))]
        source = f"the live GPUs (backend {cfg.backend})"
    if not cluster_file:
        command = " ".join(["gres-conf", "--mode", mode] + (["--from-spec", spec] if spec else []))
    models = confgen.models_of(cluster_models) if cluster_models else ()
    if models:
        command += " --cluster-models " + ",".join(m.key for m in models)
    files = confgen.render(groups, mode, dev_root, command, source, proc_root, models, static_partitions,
                           cfg.interactive_charge, cfg.interactive_charge_one_start, cfg.guarantee_after)
    from ..installed import hook_scripts_if_installed
    files["slurm.conf.hooks"] = confgen.hook_lines(cfg, mode, hook_scripts_if_installed())
    files["slurm.conf.accounting"] = accounting.lines(confgen.models_in(groups, models), billing)
    _emit(files, output)


def _cluster(path, mode, node_name, spec):
    """The cluster description at `path`, which no per-node option may amend."""
    from ..slurm import clusterdesc
    clashing = [name for name, given in (("--mode static", mode == "static"), ("--node-name", node_name),
                                         ("--from-spec", spec)) if given]
    if clashing:
        raise BadInput(f"--cluster describes every node and model; drop {', '.join(clashing)}")
    return clusterdesc.load(path)


def _emit(files, output) -> None:
    """Write each file into `output` (atomically, 0644), or print them all."""
    from ..fsutil import atomic_write
    if output:
        os.makedirs(output, exist_ok=True)
    for name, text in files.items():
        if output:
            atomic_write(os.path.join(output, name), text.encode(), mode=0o644)
            click.echo(f"wrote {os.path.join(output, name)}")
        else:
            click.echo(f"==> {name} <==\n{text}")


@main.command("systemd-units")
@click.option("--output", metavar="DIR", help="Write the units here, e.g. /etc/systemd/system "
              "(default: print them).")
def systemd_units(output):
    """The systemd units, naming this install's slurm-mig.

    slurm-mig-reconcile.{service,timer}: release instances of jobs that ended
    without an Epilog (every 10 min). slurm-mig-metrics.{service,timer}:
    node metrics for node_exporter (every minute). slurm-mig-layout.service:
    static layout at boot, before slurmd. slurm-mig-node-setup.service:
    root-only MIG cap nodes at boot (device isolation). Enable with
    `systemctl daemon-reload && systemctl enable --now slurm-mig-reconcile.timer`."""
    from ..installed import systemd_units as units
    _emit(units(), output)
