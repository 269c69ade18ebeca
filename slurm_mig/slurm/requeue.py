"""Sending a job back to the queue from the Prolog (slurm-facts section 8).

Slurm's shard count admits a job its GPU cannot hold when the free memory
slots are split by running instances (or held by a process no job owns).
Such a batch job is not failed: the Prolog requeues it and marks it in
AdminComment (only root can set it, so the mark is Slurm's and not the
user's; the user sees why in `scontrol show job`).

Steering: left alone, Slurm would send the job straight back to the GPU that
turned it away (the lowest-index one whose count shows room), and only after
cred_expire + 1 seconds (121 by default), a delay it needs because slurmd
skips the Prolog of a job id it ran within cred_expire (its credential cache):
a job started sooner on the same node would run without its instances. So the
Prolog keeps the job off the nodes it just ran on (ExcNodeList, named in the
mark), and only then lets it start again soon (StartTime=now+steer_delay, set
after the exclusion took): it cannot come back to a node whose cache holds it.
Once every node of its partition with GPUs has turned it away, the nodes are
given back and Slurm's own delay applies. A job with --nodelist or
--constraint is never steered: which nodes could run it is not known here.
"""
from __future__ import annotations

import re
from typing import Iterable, List, NamedTuple, Optional

from ..core.syntax import check_job_id
from ..errors import BadInput, SlurmUnavailable
from .jobinfo import Placement, check_node_name, expand_hostlist, run_slurm, slurm_command

MARK = "slurm-mig: requeued"
MAX_REASON_TEXT = 200      # the node list before it is never cut: the next requeue reads it
_KEPT_OFF = re.compile(r"^slurm-mig: requeued \d+/\d+, kept off (\S+):")
_PARTITION = re.compile(r"[A-Za-z0-9._-]{1,255}")


class Steering(NamedTuple):
    """The requeued job's ExcNodeList, and the part of it slurm-mig added."""
    exclude: List[str]
    kept_off: List[str]
    soon: bool          # set StartTime=now+delay: no node that just ran it can take it


def kept_off_before(admin_comment: str) -> List[str]:
    """The nodes an earlier requeue kept the job off, from its mark."""
    m = _KEPT_OFF.match(admin_comment or "")
    if not m:
        return []
    try:
        return [check_node_name(n) for n in expand_hostlist(m.group(1))]
    except BadInput:
        return []


def steer(placement: Placement, gpu_nodes: Optional[Iterable[str]]) -> Optional[Steering]:
    """Where the requeued job may go next; None: leave its nodes alone (it has
    --nodelist or --constraint, or the partition's GPU nodes are unknown)."""
    gpu_nodes = set(gpu_nodes or ())
    if placement.required or placement.features or not gpu_nodes:
        return None
    excluded = set(placement.excluded)
    ours = set(kept_off_before(placement.admin_comment)) & excluded
    users = excluded - ours
    after = (ours | set(placement.nodes)) - users
    if not gpu_nodes - users - after:
        return Steering(sorted(users), [], False)       # all turned it away: give them back
    return Steering(sorted(users | after), sorted(after), True)


def partition_gpu_nodes(partition: str, bin_dir: str = "") -> List[str]:
    """Nodes of `partition` that have shards (GPUs in dynamic mode), from sinfo
    (node names and GRES are the admin's configuration, not a user's text)."""
    if not _PARTITION.fullmatch(partition or ""):
        raise BadInput(f"invalid partition name {partition!r}")
    out = run_slurm([slurm_command("sinfo", bin_dir), "-h", "-N", "-p", partition, "-o", "%N %G"],
                    attempts=2)
    nodes = []
    for line in out.splitlines():
        name, _, gres = line.strip().partition(" ")
        if re.search(r"(^|[,:/])shard[:(]", gres):
            nodes.append(check_node_name(name))
    return nodes


def folded(nodes: Iterable[str]) -> str:
    """A hostlist as Slurm writes it ('n[1-3]'), by ClusterShell's NodeSet."""
    from ClusterShell.NodeSet import NodeSet
    return str(NodeSet.fromlist(list(nodes))) if nodes else ""


def send_back(job: str, reason: str, attempt: int, limit: int, bin_dir: str = "",
              steering: Optional[Steering] = None, delay: int = 0) -> None:
    """Requeue `job`, then mark it (and steer it, see the module docstring).
    SlurmUnavailable when Slurm refuses the requeue (--no-requeue,
    JobRequeue=0, not a batch job) or cannot be reached; what fails afterwards
    is only logged: the job is back in the queue with Slurm's own delay."""
    from ..log import JobLog
    job = check_job_id(job)
    scontrol = slurm_command("scontrol", bin_dir)
    run_slurm([scontrol, "requeue", job], attempts=1)
    kept = f", kept off {folded(steering.kept_off)}" if steering and steering.kept_off else ""
    note = f"{MARK} {attempt}/{limit}{kept}: " + " ".join(reason.split())[:MAX_REASON_TEXT]
    update = [scontrol, "update", f"JobId={job}", f"AdminComment={note}"]
    if steering:
        update.append(f"ExcNodeList={folded(steering.exclude)}")
    try:
        run_slurm(update, attempts=2)
    except SlurmUnavailable as e:
        JobLog(job).warning("requeued, but marking it failed: %s", e)
        return
    if steering and steering.soon and delay:
        try:
            run_slurm([scontrol, "update", f"JobId={job}", f"StartTime=now+{int(delay)}"], attempts=2)
        except SlurmUnavailable as e:
            JobLog(job).warning("requeued and kept off %s, but its start time stays Slurm's: %s",
                                folded(steering.kept_off), e)
