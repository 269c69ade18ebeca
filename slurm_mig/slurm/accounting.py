"""slurm.conf's accounting lines for MIG: every profile and GPU type a
trackable resource (AccountingStorageTRES), so that sacct and sreport tell a
1g.10gb job from a 7g.80gb one, and billing weights by the compute slices a
job holds (a whole GPU costs all of its slices), overridable per profile.

Slurm refuses GRES TRES without slurmdbd, so the lines go with
AccountingStorageType=accounting_storage/slurmdbd; TRESBillingWeights is a
partition option, added to each GPU partition's line.
"""
from __future__ import annotations

import math
import re
from typing import Dict, List, Mapping, NamedTuple, Sequence

from ..core import catalog
from ..errors import BadInput
from .confgen import gpu_type

# Slurm's TRESBillingWeights items: CPU=1.0, Mem=0.25G, GRES/gpu:a100=2 ...
_ITEM = re.compile(r"^[A-Za-z]+(/[A-Za-z0-9_.:+-]+)?=\d+(\.\d+)?[KMGTP]?$")


class Billing(NamedTuple):
    """What a job is billed: per profile name a weight (default: its compute
    slices), and other TRESBillingWeights items kept as written (default:
    each CPU 1, Slurm's own billing without weights)."""
    weights: Mapping[str, float] = {}
    also: str = "CPU=1"


def parse_billing(raw: Mapping, where: str) -> Billing:
    """The [accounting] table of a cluster description."""
    unknown = sorted(set(raw) - {"weights", "also"})
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; known: weights, also")
    weights = raw.get("weights", {})
    if not isinstance(weights, dict):
        raise BadInput(f"{where}: `weights` must be a table of profile = number")
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise BadInput(f"{where}: weight of {name} must be a number >= 0, not {w!r}")
    also = raw.get("also", Billing().also)
    if not isinstance(also, str) or any(not _ITEM.match(i) for i in also.split(",") if also):
        raise BadInput(f"{where}: `also` must be TRESBillingWeights items such as \"CPU=0.1,Mem=0.25G\", "
                       f"not {also!r}")
    return Billing({k: float(v) for k, v in weights.items()}, also)


def lines(models: Sequence[catalog.GpuModel], billing: Billing = Billing()) -> str:
    """The slurm.conf.accounting text for a cluster of `models`."""
    profiles: Dict[str, int] = {}
    for m in sorted(models, key=lambda m: m.key):
        for p in m.profiles:
            profiles.setdefault(p.name, p.slices)
    unknown = sorted(set(billing.weights) - set(profiles))
    if unknown:
        raise BadInput(f"billing weights for unknown profile(s) {', '.join(unknown)}; "
                       f"the cluster's profiles: {', '.join(sorted(profiles))}")
    types = sorted({(gpu_type(m), m.compute_slices) for m in models})
    tres: List[str] = ["gres/gpu"] + [f"gres/gpu:{t}" for t, _ in types] + ["gres/mig"] + \
        [f"gres/mig:{name}" for name in sorted(profiles)]
    weights = [f"GRES/gpu:{t}={slices}" for t, slices in types] + \
        [f"GRES/mig:{name}={billing.weights.get(name, slices):g}"
         for name, slices in sorted(profiles.items())]
    return ("# Accounting per MIG profile and GPU model (needs slurmdbd:\n"
            "# AccountingStorageType=accounting_storage/slurmdbd). Merge AccountingStorageTRES\n"
            "# with the site's own; add TRESBillingWeights to each GPU partition's\n"
            "# PartitionName= line. Billing: the compute slices a job holds"
            + (", overridden for " + ", ".join(sorted(billing.weights)) if billing.weights else "") + ".\n"
            f"AccountingStorageTRES={','.join(tres)}\n"
            f"TRESBillingWeights={','.join(([billing.also] if billing.also else []) + weights)}\n")
