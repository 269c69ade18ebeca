"""The `slurm-mig` click group, its global options and helpers for the verbs."""
from __future__ import annotations

import os
from typing import Optional

import click

from .. import __version__
from ..errors import BadInput


class Ctx:
    def __init__(self, backend, state_dir, run_dir, config_path):
        self._args = dict(backend=backend, state_dir=state_dir, run_dir=run_dir)
        self.path = config_path          # --config, else None
        self._cfg = None

    def cfg(self, **overrides):
        from .. import config
        if self._cfg is None:
            self._cfg = config.load(self.path, **self._args)
        return config.override(self._cfg, **overrides)


def job_id(job: Optional[str]) -> str:
    from ..core.syntax import check_job_id
    job = job or os.environ.get("SLURM_JOB_ID")
    if not job:
        raise BadInput("no job id: pass --job or run under Slurm (SLURM_JOB_ID)")
    return check_job_id(job)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--backend", metavar="nvml|sim:STATE.json",
              help="GPU backend: real NVML, or a simulated node state file. [env SLURM_MIG_BACKEND; default nvml]")
@click.option("--state-dir", metavar="DIR", help="Root-only ledger directory. [env SLURM_MIG_STATE_DIR; default /var/lib/slurm-mig]")
@click.option("--run-dir", metavar="DIR", help="Per-job env files for the TaskProlog. [env SLURM_MIG_RUN_DIR; default /run/slurm-mig]")
@click.option("--config", "config_path", metavar="FILE", help="Config file. [env SLURM_MIG_CONFIG; default /etc/slurm-mig/config.toml]")
@click.option("-v", "--verbose", is_flag=True, help="Log every action to stderr.")
@click.version_option(__version__, prog_name="slurm-mig", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx, backend, state_dir, run_dir, config_path, verbose):
    """Per-job NVIDIA MIG for Slurm: reshape a node's MIG layout per job.

    Users ask `sbatch --gres=mig:3g.40gb:1`; the Prolog creates the instance,
    the TaskProlog exports CUDA_VISIBLE_DEVICES=MIG-<uuid>, the Epilog removes it.
    Exit codes: 0 ok, 1 node or other error, 2 bad input, 3 request does not fit.
    """
    from ..log import setup_logging
    setup_logging(verbose)
    ctx.obj = Ctx(backend, state_dir, run_dir, config_path)


def node_name(ctx, param, value: Optional[str]) -> Optional[str]:
    """click callback: a Slurm node name given on the command line, checked
    (it goes into Slurm commands and generated files)."""
    from ..slurm.jobinfo import check_node_name
    if value is None:
        return None
    try:
        return check_node_name(value)
    except BadInput as e:
        raise click.BadParameter(str(e)) from None


def table(rows, headers) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [headers] + rows)


def fold_paths(paths) -> str:
    """Paths folded per directory as Slurm folds host names, so 1,080 cap
    nodes read as one short line: /dev/nvidia-caps/nvidia-cap[1-1080]."""
    from ClusterShell.NodeSet import NodeSet
    folders = {}
    for path in paths:
        folder, name = os.path.split(path)
        folders.setdefault(folder, []).append(name)
    return " ".join(os.path.join(folder, str(NodeSet.fromlist(names)))
                    for folder, names in sorted(folders.items()))
