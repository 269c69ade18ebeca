"""The node's state as Prometheus metrics, for node_exporter's textfile
collector (`slurm-mig status --prometheus --output FILE`): per GPU its MIG
mode, its instances with their owning jobs, what it could still take per
profile, and the node counters (node/counters.py).

Built with prometheus_client's metric families in a registry of its own,
rendered by generate_latest: the values are read from NVML and the state
directory at each run, so no _created series and nothing process-global.
When NVML or the state directory cannot be read, what can be is still
written, and slurm_mig_nvml_up / slurm_mig_state_readable say so."""
from __future__ import annotations

from typing import List, Optional, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..errors import SlurmMigError
from ..nvml.errors import NVMLError, describe
from . import counters
from .context import NodeContext
from .status import status_doc

PREFIX = "slurm_mig_"
# status_doc's owner_kind -> the `owner` label, where they differ
OWNER_LABELS = {"quarantined": "unknown", "unreadable": "unknown"}


class _Families:
    """A collector handing over families made beforehand."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return iter(self.families)


def _gpu_families(doc: List[dict]) -> list:
    info = GaugeMetricFamily(PREFIX + "gpu_info", "A GPU of this node (value 1).",
                             labels=["gpu", "uuid", "model", "name"])
    mode = GaugeMetricFamily(PREFIX + "gpu_mig_mode", "MIG mode: 1 on, 0 off, -1 the GPU has no MIG; "
                             "state current or pending (after a reset).", labels=["gpu", "state"])
    inst = GaugeMetricFamily(PREFIX + "instance", "A MIG instance (value 1): its profile, ids, UUID and "
                             "owner (job, idle, in_use: processes but no job, unknown, unknown_profile); "
                             "job is the owning job's id.",
                             labels=["gpu", "gi", "ci", "profile", "uuid", "owner", "job"])
    count = GaugeMetricFamily(PREFIX + "instances", "MIG instances per GPU and profile.",
                              labels=["gpu", "profile"])
    free = GaugeMetricFamily(PREFIX + "can_create", "Instances of the profile the GPU could still "
                             "take, each alone, with its running instances where they are.",
                             labels=["gpu", "profile"])
    for g in doc:
        gpu = str(g["index"])
        info.add_metric([gpu, g["uuid"], g["model"] or "", g["name"]], 1)
        for state in ("current", "pending"):
            mode.add_metric([gpu, state], g["mig"][state])
        per_profile = {}
        for i in g["instances"]:
            label = OWNER_LABELS.get(i["owner_kind"], i["owner_kind"])
            inst.add_metric([gpu, str(i["gi_id"]), "" if i["ci_id"] is None else str(i["ci_id"]),
                             i["profile"], i["uuid"] or "", label, i["owner"] or ""], 1)
            per_profile[i["profile"]] = per_profile.get(i["profile"], 0) + 1
        for profile, n in sorted(per_profile.items()):
            count.add_metric([gpu, profile], n)
        for profile, n in g["can_create"].items():
            free.add_metric([gpu, profile], n)
    return [info, mode, inst, count, free]


def render(ctx: NodeContext) -> Tuple[bytes, Optional[str]]:
    """The exposition text, and what could not be read (None: everything)."""
    problems, families = [], []
    try:
        doc, ledger_problem = status_doc(ctx)
        families += _gpu_families(doc)
        nvml_up = 1
    except (NVMLError, SlurmMigError) as e:
        problems.append(f"the GPUs: {describe(e)}")
        ledger_problem, nvml_up = None, 0
    if ledger_problem:
        problems.append(f"the ledger: {ledger_problem}")
    try:
        values = counters.read(ctx.cfg.state_dir)
    except SlurmMigError as e:
        problems.append(f"the counters: {e}")
        values = {}
    for name, value in values.items():
        families.append(CounterMetricFamily(PREFIX + name, counters.COUNTERS[name], value=value))
    up = GaugeMetricFamily(PREFIX + "nvml_up", "1 when NVML could be read.", value=nvml_up)
    readable = GaugeMetricFamily(PREFIX + "state_readable", "1 when the ledger (instance owners) "
                                 "and the counters could be read.",
                                 value=0 if ledger_problem or not values else 1)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families + [up, readable]))
    return generate_latest(registry), "; ".join(problems) or None
