"""Static mode on the node: Slurm allocates `mig` records by IDX (numbered as
slurm/gresconf.py reads them); the prolog maps those to live instances and
binds their UUIDs. Instances are never created or destroyed per job here."""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

from ..core.view import Held
from ..errors import NodeProblem
from ..log import JobLog
from ..node.context import NodeContext
from ..core.lifecycle import Record, State
from ..node.procfs import read_mig_minors
from ..slurm.gresconf import node_records

_CI_KEY = re.compile(r"gpu(\d+)/gi(\d+)/ci(\d+)/access")


def idx_table(gres_conf: str, proc_root: str, node_name: str) -> List[Tuple[str, int, int, int]]:
    """(profile, gpu minor, gi id, ci id) for each `mig` record of this node, in IDX order."""
    by_minor = {minor: key for key, minor in read_mig_minors(proc_root).items()}
    table = []
    for fields in node_records(gres_conf, node_name, "mig"):
        if "multiplefiles" not in fields:
            raise NodeProblem(f"{gres_conf}: a mig record of {node_name} has no MultipleFiles=; "
                              "static mode lists one per instance (`slurm-mig gres-conf --mode static`)")
        caps = [int(m) for m in re.findall(r"nvidia-cap(\d+)", fields["multiplefiles"])]
        keys = [by_minor.get(c, "") for c in caps]
        ci = next((_CI_KEY.fullmatch(k) for k in keys if _CI_KEY.fullmatch(k)), None)
        if ci is None:
            raise NodeProblem(f"{gres_conf}: record {fields} names no CI capability in mig-minors")
        table.append((fields.get("type", ""), int(ci.group(1)), int(ci.group(2)), int(ci.group(3))))
    return table


def prolog(node: NodeContext, job: str, idx: List[int], uid: Optional[int], node_name: str,
           idx_types: Optional[Dict[int, str]] = None) -> None:
    """Bind the instances behind Slurm's IDX numbers, after checking they exist,
    are of the type Slurm allocated (idx_types, when read from Slurm) and
    nobody else holds them. Per-job problems fail the job, not the node."""
    cfg = node.cfg
    refused = Record(job=job, state=State.FAILED, static_idx=idx, uid=uid)
    table = idx_table(cfg.gres_conf, cfg.proc_root, node_name)
    with node.ledger.lock():
        rec = node.claim(job, uid, static_idx=idx)
        if rec is not None and rec.state is State.PREPARE_COMPLETED:
            node.rebind(rec, uid)
            return
        bad = [i for i in idx if not 0 <= i < len(table)]
        if bad or not idx:
            node.fail(job, uid, f"Slurm allocated mig IDX {bad or idx}, but {cfg.gres_conf} "
                      f"lists {len(table)} instances for node {node_name}; regenerate it with "
                      "`slurm-mig gres-conf`, or check that this node's Slurm name is "
                      f"{node_name} (SLURMD_NODENAME)", refused)
            return
        gpus = {g.minor: g for g in node.devices.driver.gpus()}
        taken = {u: r.job for r in node.ledger.live() for u in r.uuids}
        bound = []
        for i in idx:
            profile, minor, gi_id, ci_id = table[i]
            told = (idx_types or {}).get(i)
            if told is not None and told.lower() != profile.lower():
                node.fail(job, uid, f"Slurm allocated IDX {i} as mig:{told}, but {cfg.gres_conf} numbers "
                          f"a {profile} record {i}: list the types in slurm.conf's Gres= in the order "
                          "gres.conf first names them (`slurm-mig gres-conf` writes both)", refused)
                return
            gpu = gpus.get(minor)
            inst = gpu and next((x for x in gpu.instances if x.gi_id == gi_id and x.ci_id == ci_id), None)
            if inst is None or inst.profile != profile:
                node.fail(job, uid, f"IDX {i} ({profile} GPU minor {minor} GI {gi_id} CI {ci_id}) "
                          "is not on the GPU; re-apply the layout (`slurm-mig apply`)", refused)
                return
            holder = taken.get(inst.uuid)
            pids = node.devices.driver.busy_pids(inst.uuid)
            if holder or pids:
                node.fail(job, uid, f"IDX {i} ({inst.uuid}) is still in use by "
                          + (f"job {holder}" if holder else f"pids {pids}"), refused)
                return
            bound.append(inst)
        rec = Record(job=job, state=State.PREPARE_COMPLETED, static_idx=idx, uid=uid, static=True,
                     instances=[Held.of(b) for b in bound],
                     gpu_uuids=sorted({gpus[table[i][1]].uuid for i in idx}))
        node.ledger.put(rec)
        node.handout.bind(job, uid, rec.uuids, rec)
        JobLog(job).info("bound static %s", ",".join(rec.uuids))
