"""The hooks as the tests call them: by config, the way slurm-mig-hook does."""
from slurm_mig.hooks.dispatch import run_prolog  # noqa: F401
from slurm_mig.hooks.epilog import epilog  # noqa: F401
from slurm_mig.node.context import NodeContext
from slurm_mig.node.reconcile import reconcile_node


def prolog(cfg, job, spec, gpu=None, uid=None):
    """The MIG Prolog for the request SPEC, as `slurm-mig prolog --request` runs it."""
    return run_prolog(cfg, job, spec, gpu, uid)


def reconcile(cfg, dry_run=False, active_jobs=None):
    """`slurm-mig reconcile` for the node `cfg` describes."""
    return reconcile_node(NodeContext(cfg), dry_run=dry_run, active_jobs=active_jobs)
