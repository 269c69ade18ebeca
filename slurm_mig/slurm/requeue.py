"""Sending a job back to the queue from the Prolog (docs/facts.md, Slurm: requeue from the Prolog).

Slurm's shard count admits a job its GPU cannot hold when the free memory
slots are split by running instances (or held by a process no job owns).
Such a batch job is not failed: the Prolog requeues it and it is marked in
AdminComment (only root can set it, so the mark is Slurm's and not the
user's; the user sees why in `scontrol show job`).

Steering: left alone, Slurm would send the job straight back to the GPU that
turned it away (the lowest-index one whose count shows room), and only after
cred_expire + 1 seconds (121 by default), a delay it needs because slurmd
skips the Prolog of a job id it ran within cred_expire (its credential cache):
a job started sooner on the same node would run without its instances. So the
Prolog leaves a small process (`slurm-mig-hook steer`, started by
hooks/dispatch.py with `steer_request`) that waits for the job's Epilog on
this node (it removes the marker file the Prolog left), then in one job update
keeps it off the nodes it just ran on (ExcNodeList, named in the mark) and sets
StartTime=now: the controller applies ExcNodeList before StartTime and stops at
the first field it refuses, so the job cannot come back early to a node whose
cache holds it. If that process fails, the job keeps Slurm's own delay. Once
every node of its partition with GPUs has turned it away, the nodes are given
back; a job with --nodelist or --constraint is never steered (which nodes could
run it is not known here), and with steer = false the steerer only marks the
job. Any of these may come back to this node, so the steerer sets its start
`steer_return` after the Epilog here: Slurm's own delay (in whole seconds) can
restart it here within 2 s of its cache entry expiring, and slurmd drops an
expired entry only in a scan, at most every 2 s (docs/facts.md).

Giving a node back: a node turns a job away because of the one GPU Slurm
picked there (the lowest-index one whose count shows room); another of its
GPUs may hold the job now or once an instance ends. Kept off until every
other node had turned it away too, such a job waited while room it could use
sat idle (bench/cluster_sim.py measures it). So the steerer stays
`steer_return` seconds after the job's Epilog here (125: cred_expire + 5, so
that this node's credential cache no longer holds the job) and then, if the
job still pends kept off this node, takes this node out of its ExcNodeList.

Slurm commands per requeue: the Prolog's `scontrol requeue`, the steerer's
one update; where squeue cannot print ExcNodes in the Prolog's read (before
24.11), one one-job read of it; the partition's GPU nodes (sinfo) are cached
for PARTITION_CACHE_TTL; `steer_return` later, one one-job read and, if the
job still pends kept off this node, one update.
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import stat
import time
from typing import Iterable, List, NamedTuple, Optional, Tuple

from ..core.syntax import check_job_id
from ..errors import BadInput, SlurmUnavailable
from ..fsutil import atomic_write
from .jobinfo import NodeConstraints, check_node_name, expand_hostlist, run_slurm, slurm_command

MARK = "slurm-mig: requeued"
MAX_REASON_TEXT = 200
_KEPT_OFF = re.compile(r"^slurm-mig: requeued \d+/\d+, kept off (\S+):")
_PARTITION = re.compile(r"[A-Za-z0-9._-]{1,255}")
STEER_ENV = "SLURM_MIG_STEER"
STEER_TIMEOUT = 100.0     # s the steerer waits for the job to finish completing, then leaves it to Slurm
PARTITION_CACHE_TTL = 600.0   # s a partition's GPU node list is reused


class Steering(NamedTuple):
    """The requeued job's ExcNodeList, and the part of it slurm-mig added."""
    exclude: List[str]
    kept_off: List[str]
    soon: bool          # StartTime=now: no node that just ran it can take it


def kept_off_before(admin_comment: str) -> List[str]:
    """The nodes an earlier requeue kept the job off, from its mark."""
    m = _KEPT_OFF.match(admin_comment or "")
    if not m:
        return []
    try:
        return [check_node_name(n) for n in expand_hostlist(m.group(1))]
    except BadInput:
        return []


def steer(constraints: NodeConstraints, gpu_nodes: Optional[Iterable[str]]) -> Optional[Steering]:
    """Where the requeued job may go next; None: leave its nodes alone (it has
    --nodelist or --constraint, the partition's GPU nodes are unknown, or every
    one turned it away and slurm-mig excluded none of them)."""
    gpu_nodes = set(gpu_nodes or ())
    if constraints.required or constraints.features or not gpu_nodes:
        return None
    excluded = set(constraints.excluded)
    ours = set(kept_off_before(constraints.admin_comment)) & excluded
    users = excluded - ours
    after = (ours | set(constraints.nodes)) - users
    if not gpu_nodes - users - after:          # all turned it away: give ours back
        return Steering(sorted(users), [], False) if ours else None
    return Steering(sorted(users | after), sorted(after), True)


def partition_gpu_nodes(partition: str, bin_dir: str = "", cache_dir: str = "") -> List[str]:
    """Nodes of `partition` that have shards (GPUs in dynamic mode), from sinfo
    (node names and GRES are the admin's configuration, not a user's text),
    or from what an earlier steerer on this node read less than
    PARTITION_CACHE_TTL ago (in root's `cache_dir`)."""
    if not _PARTITION.fullmatch(partition or ""):
        raise BadInput(f"invalid partition name {partition!r}")
    cache = os.path.join(cache_dir, f"partition-gpu-nodes.{partition}") if cache_dir else ""
    if cache:
        try:
            st = os.lstat(cache)
            if stat.S_ISREG(st.st_mode) and st.st_uid == 0 and time.time() - st.st_mtime < PARTITION_CACHE_TTL:
                with open(cache, encoding="utf-8") as f:
                    return [check_node_name(n) for n in f.read().split()]
        except (OSError, BadInput):
            pass
    nodes = _read_partition_gpu_nodes(partition, bin_dir)
    if cache:
        try:
            atomic_write(cache, "".join(n + "\n" for n in nodes).encode(), mode=0o644)
        except OSError:
            pass
    return nodes


def _read_partition_gpu_nodes(partition: str, bin_dir: str) -> List[str]:
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


def mark(attempt: int, limit: int, reason: str, kept_off: Iterable[str] = ()) -> str:
    """The AdminComment of a requeued job: the node list is never cut (the
    next requeue reads it back), the reason may be."""
    kept = f", kept off {folded(kept_off)}" if kept_off else ""
    return f"{MARK} {attempt}/{limit}{kept}: " + " ".join(reason.split())[:MAX_REASON_TEXT]


def send_back(job: str, reason: str, attempt: int, limit: int, bin_dir: str = "",
              marked: bool = True) -> None:
    """Requeue `job`, then mark it (unless not `marked`: a steerer will).
    SlurmUnavailable when Slurm refuses the requeue (--no-requeue,
    JobRequeue=0, not a batch job) or cannot be reached; a mark that fails
    afterwards is only logged: the job is back in the queue with Slurm's own delay."""
    job = check_job_id(job)
    scontrol = slurm_command("scontrol", bin_dir)
    run_slurm([scontrol, "requeue", job], attempts=1)
    if marked:
        mark_job(job, mark(attempt, limit, reason), bin_dir)


def make_room(victims: Iterable[str], job: str, node: str, bin_dir: str = "") -> None:
    """Requeue each of `victims` (young batch jobs, core/eviction.py) for
    srun/salloc `job` on `node`, if it still runs (Slurm also requeues a
    finished batch job, which would then run again): a one-job read and a
    requeue each. Their AdminComment is left as it is (it may hold a steering
    mark the next requeue reads back); the node's log says why. Anything
    that goes wrong is only logged: `job` then waits for room as before."""
    from ..errors import SlurmMigError
    from ..log import JobLog
    for victim in victims:
        try:
            victim = check_job_id(victim)
            state, _ = job_state(victim, bin_dir)
            if state != "RUNNING":
                JobLog(victim).info("not requeued for srun/salloc job %s: it is %s", job, state or "gone")
                continue
            run_slurm([slurm_command("scontrol", bin_dir), "requeue", victim], attempts=1)
            JobLog(victim).info("requeued to make room on %s for srun/salloc job %s (interactive_evict_age)",
                                node, job)
        except SlurmMigError as e:
            JobLog(victim).warning("not requeued for srun/salloc job %s: %s", job, e)


def mark_job(job: str, text: str, bin_dir: str = "") -> None:
    """Set the job's mark; a failure is only logged."""
    from ..log import JobLog
    try:
        run_slurm([slurm_command("scontrol", bin_dir), "update", f"JobId={job}", f"AdminComment={text}"],
                  attempts=2)
    except SlurmUnavailable as e:
        JobLog(job).warning("requeued, but marking it failed: %s", e)


def steer_request(constraints: NodeConstraints, attempt: int, limit: int, reason: str,
                  keep_off: bool = True) -> str:
    """What the Prolog hands the steerer (in STEER_ENV): read by steer_when_pending.
    Not `keep_off` (steer = false): the steerer only marks the job and sets its start."""
    import json
    return json.dumps({"constraints": constraints._asdict(), "attempt": attempt, "limit": limit,
                       "reason": reason, "keep_off": keep_off})


def job_state(job: str, bin_dir: str = "") -> Tuple[str, List[str]]:
    """(state, excluded nodes) of the job, from a one-job read: the state as
    squeue prints it (COMPLETING while it still completes, then PENDING),
    ExcNodeList as names; ('', []) when Slurm no longer lists it."""
    out = run_slurm([slurm_command("squeue", bin_dir), "-h", "-j", check_job_id(job), "-t", "all",
                     "-o", "%T|%x"], attempts=2)
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    if len(lines) != 1:
        return "", []
    state, _, excluded = lines[0].partition("|")
    names = [check_node_name(n) for n in expand_hostlist("" if excluded == "(null)" else excluded)]
    return state, names


def _read_request(text: str):
    """What the Prolog handed the steerer, checked: (NodeConstraints, attempt, limit, reason, keep_off)."""
    import json
    try:
        raw = json.loads(text)
        p = raw["constraints"]
        excluded = None if p["excluded"] is None else [check_node_name(n) for n in p["excluded"]]
        constraints = NodeConstraints(
            [check_node_name(n) for n in p["nodes"]], str(p["partition"]), excluded,
            str(p["required"]), str(p["features"]), str(p["admin_comment"]))
        attempt, limit, reason = int(raw["attempt"]), int(raw["limit"]), str(raw["reason"])
        keep_off = raw["keep_off"]
        if not isinstance(keep_off, bool):
            raise TypeError("keep_off is not true or false")
    except (ValueError, KeyError, TypeError) as e:
        raise BadInput(f"unreadable steering request ({e})") from None
    return constraints, attempt, limit, reason, keep_off


def steer_when_pending(job: str, request: str, bin_dir: str = "", marker: str = "", cache_dir: str = "",
                       timeout: float = STEER_TIMEOUT, poll: float = 0.2, return_after: float = 0.0,
                       round_file: str = "") -> str:
    """The steerer: wait until this node's Epilog of the requeued job has run
    (it removes `marker`), then in one update mark the job and keep it off
    the nodes that ran it and start it at once, or give the nodes back, or
    only mark it. Where the Prolog's read could not tell the job's
    ExcNodeList, one one-job read gives it (and says whether the job is
    pending yet). Every Slurm query waits until then: node information read
    while the job still held the node is what 22.05's sinfo keeps showing
    ("mixed" on an idle node). `return_after` (seconds, steer_return; 0: not
    set) is when the job may come back to this node, counted from its Epilog
    here: a job given its nodes back or only marked starts then, and a job
    kept off is given this node back then (give_back), unless `round_file`
    (the Prolog's, root's) names a later requeue here by then: that round's
    steerer decides. Returns what was done, for the log."""
    job = check_job_id(job)
    constraints, attempt, limit, reason, keep_off = _read_request(request)
    deadline = time.monotonic() + timeout
    while marker and os.path.lexists(marker):
        if time.monotonic() > deadline:
            mark_job(job, mark(attempt, limit, reason), bin_dir)
            return "left alone: its Epilog had not run by the timeout"
        time.sleep(poll)
    back_here = time.monotonic() + return_after

    def until_back_here() -> float:
        return max(0.0, back_here - time.monotonic())
    while keep_off and constraints.excluded is None:
        state, excluded = job_state(job, bin_dir)
        if state == "PENDING":
            constraints = constraints._replace(excluded=excluded)
        elif state not in ("COMPLETING", "REQUEUED"):      # REQUEUED: a flag shown until it completes
            return f"left alone: the job is {state or 'gone'}"
        elif time.monotonic() > deadline:
            mark_job(job, mark(attempt, limit, reason), bin_dir)
            return "left alone: still completing after the timeout"
        else:
            time.sleep(poll)
    steering = steer(constraints, partition_gpu_nodes(constraints.partition, bin_dir, cache_dir)) if keep_off else None
    fields = [f"AdminComment={mark(attempt, limit, reason, steering.kept_off if steering else ())}"]
    if steering is not None:
        fields.insert(0, f"ExcNodeList={folded(steering.exclude)}")
    if steering is not None and steering.soon:
        fields.append("StartTime=now")
    elif return_after > 0:          # it may come back here: not while this node's credential cache holds it
        fields.append(f"StartTime=now+{math.ceil(until_back_here())}")
    # Other nodes' Epilogs may still run: "not pending" is retried (run_slurm's attempts).
    run_slurm([slurm_command("scontrol", bin_dir), "update", f"JobId={job}"] + fields, attempts=4)
    if steering is None:
        return "left to Slurm"
    if not steering.soon:
        return f"given its nodes back (ExcNodeList={folded(steering.exclude)})"
    done = f"kept off {folded(steering.kept_off)}, started at once"
    if return_after <= 0:
        return done
    time.sleep(until_back_here())
    if not _last_round_here(round_file, attempt):
        return f"{done}; requeued here again since: left to that round"
    try:
        return f"{done}; {give_back(job, constraints.nodes, bin_dir)}"
    finally:
        if _last_round_here(round_file, attempt):
            with contextlib.suppress(OSError):
                os.unlink(round_file)


def _last_round_here(round_file: str, attempt: int) -> bool:
    """Whether the last requeue on this node was `attempt`: `round_file`
    holds its number, written by root's Prolog (anything else: no)."""
    from ..node.jobfiles import read_regular
    found = read_regular(round_file) if round_file else None
    return found is not None and found[1] == 0 and found[0].strip() == str(attempt)


def give_back(job: str, nodes: Iterable[str], bin_dir: str = "") -> str:
    """Take `nodes` (the ones that just turned the job away) out of the job's
    ExcNodeList if it still pends there: one one-job read and at most one
    update. The job's other exclusions (the user's, other nodes') are kept as
    read; the update applies only to a pending job. Returns what was done."""
    state, excluded = job_state(job, bin_dir)
    if state != "PENDING":
        return f"left alone after: the job is {state or 'gone'}"
    back = set(nodes) & set(excluded)
    if not back:
        return "nothing to give back"
    rest = [n for n in excluded if n not in back]
    run_slurm([slurm_command("scontrol", bin_dir), "update", f"JobId={job}", f"ExcNodeList={folded(rest)}"],
              attempts=2)
    return f"gave {folded(sorted(back))} back"
