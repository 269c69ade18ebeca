"""The cluster description: the GPU nodes of a cluster as groups of alike
nodes, each a Slurm hostlist with the GPUs every node of it has, from which
`slurm-mig gres-conf --cluster FILE` writes every generated file at once (one
gres.conf with NodeName=<hostlist> records, the node lines with Features=,
one job_submit.lua for all the models, the accounting lines).

    static_partitions = ["fixed"]   # partitions of static-mode nodes, configured on
                                    # each node (`gres-conf --mode static`): jobs
                                    # for them keep their mig: request
    [[group]]
    nodes = "h100-[001-040]"
    gpus = "8xH100-80GB"
    mode = "dynamic"          # the default
    features = ["ib"]         # the site's own, after the GPU models' ones

    [accounting]              # optional: billing weights (default: compute slices)
    weights = { "7g.80gb" = 8 }
    also = "CPU=0.1"          # other TRESBillingWeights items, kept as written

Read strictly: unknown keys, a node in two groups, an unknown GPU model or a
hostlist Slurm could not read are errors naming the file and the group.
"""
from __future__ import annotations

import re
from typing import List, NamedTuple, Tuple

from ..config import read_toml
from ..errors import BadInput
from .accounting import Billing, parse_billing
from .confgen import NodeGroup, from_spec
from .jobinfo import expand_hostlist

GROUP_KEYS = ("nodes", "gpus", "mode", "features")
MODES = ("dynamic",)
_HOSTLIST = re.compile(r"^[A-Za-z0-9._\-\[\],]+$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")          # a feature or partition name


class Cluster(NamedTuple):
    path: str
    groups: List[NodeGroup]
    billing: Billing
    static_partitions: Tuple[str, ...]


def load(path: str) -> Cluster:
    raw = read_toml(path, "cluster description")
    unknown = sorted(set(raw) - {"group", "accounting", "static_partitions"})
    if unknown:
        raise BadInput(f"cluster description {path}: unknown key(s) {', '.join(unknown)}; "
                       "known: group, accounting, static_partitions")
    static = raw.get("static_partitions", [])
    if not isinstance(static, list) or not all(isinstance(p, str) and _NAME.match(p) for p in static):
        raise BadInput(f"cluster description {path}: `static_partitions` must be a list of partition "
                       f"names (letters, digits, . _ -), not {static!r}")
    if not isinstance(raw.get("accounting", {}), dict):
        raise BadInput(f"cluster description {path}: [accounting] must be a table")
    tables = raw.get("group")
    if not isinstance(tables, list) or not tables:
        raise BadInput(f"cluster description {path}: no [[group]] of nodes")
    groups, owner = [], {}
    for n, table in enumerate(tables, 1):
        where = f"cluster description {path}, group {n}"
        group = _group(table, where)
        for node in expand_hostlist(group.nodes):
            if node in owner:
                raise BadInput(f"{where}: node {node} is in group {owner[node]} too; a node has one set of GPUs")
            owner[node] = n
        groups.append(group)
    return Cluster(path, groups, parse_billing(raw.get("accounting", {}), f"cluster description {path}, [accounting]"),
                   tuple(static))


def _group(table: dict, where: str) -> NodeGroup:
    if not isinstance(table, dict):
        raise BadInput(f"{where}: expected a table with {', '.join(GROUP_KEYS)}")
    unknown = sorted(set(table) - set(GROUP_KEYS))
    if unknown:
        raise BadInput(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(GROUP_KEYS)}")
    for key, example in (("nodes", '"gpu[01-20]"'), ("gpus", '"8xH100-80GB"')):
        if key not in table:
            raise BadInput(f"{where}: `{key}` is missing, e.g. {key} = {example}")
        if not isinstance(table[key], str) or not table[key].strip():
            raise BadInput(f"{where}: `{key}` must be a string, e.g. {example}")
    mode = table.get("mode", "dynamic")
    if mode not in MODES:
        raise BadInput(f"{where}: mode {mode!r} cannot be described here; static nodes list their live "
                       "instances, so run `slurm-mig gres-conf --mode static` on each of them and name "
                       "their partitions in static_partitions")
    nodes = table["nodes"].strip()
    if not _HOSTLIST.match(nodes):
        raise BadInput(f"{where}: {nodes!r} is no Slurm hostlist (letters, digits, . _ - and [1-2,5] ranges)")
    extra = table.get("features", [])
    if not isinstance(extra, list) or not all(isinstance(f, str) and _NAME.match(f) for f in extra):
        raise BadInput(f"{where}: `features` must be a list of names (letters, digits, . _ -), not {extra!r}")
    try:
        if not expand_hostlist(nodes):
            raise BadInput(f"no nodes in {nodes!r}")
        return NodeGroup(nodes, from_spec(table["gpus"]), tuple(extra))
    except BadInput as e:
        raise BadInput(f"{where}: {e}") from None
