"""What Slurm gave a job on this node, read only from fields a user cannot shape.

Dynamic mode asks the controller one cheap question per job and node, the
same on every version from 22.05: `squeue -h -j ID -O <fields>` (a one-job
lookup, a few hundred bytes whatever the queue holds), printing only fields
no user text reaches: numbers, flags, Slurm-checked names and GRES, and
AdminComment (root only) last. The job name, comment, work dir and other
free text are never printed, so nothing a user writes can pose as a field.
The request is `tres_per_node` as job_submit.lua left it (a per-node
request, so every node of the job holds the same MIG counts); the GPU is
SLURM_JOB_GPUS, which slurmd sets itself: the GPU the shards came from, or
the GPUs handed over whole.

Static mode needs Slurm's per-node IDX numbers of the `mig` records, which
only the JSON holds (`gres_detail`, one entry per node): `scontrol --json
show job ID` from 23.02 (one job), `squeue --json` on 22.05 (every job in the
queue: 22.05 ignores -j there). The job name and the other free text are
JSON strings there; the `scontrol show job -d -o` text is never parsed (it
prints them unquoted).

Formats read (docs/facts.md, Slurm: GRES as the Prolog sees it): `shard:4(IDX:0)` (22.05 to
23.11.1) and `shard:4(4/8,0/8)` (23.11.2 on: per-GPU alloc/avail in index
order), `gpu:TYPE:2(IDX:0-1)`, count-only `mig:3g.40gb(CNT:1)`, static-mode
`mig:3g.40gb:1(IDX:7)`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Dict, List, NamedTuple, Optional

from ..core.syntax import MigRequest, check_job_id, parse_idx
from ..errors import BadInput, SlurmUnavailable

SEARCH_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/slurm/bin")
RETRY_DELAY = 1.0      # seconds, times the attempt number, between tries
# The Prolog's read: a slow controller makes the job wait longer, not fail
# (slurm.conf's PrologEpilogTimeout leaves room for all of it: confgen).
READ_ATTEMPTS, READ_TIMEOUT = 4, 15.0
_ITEM = re.compile(r"^(?:gres[:/])?([A-Za-z0-9_]+)(?::([^:()]+))?(?::(\d+))?\((.*)\)$")
_NODE_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


class NodeConstraints(NamedTuple):
    """Where Slurm may run the job: its allocation's nodes and the job's node
    constraints, as Slurm holds them, for steering a requeue (none of it is text the
    user can make pose as another field: it comes from Slurm's JSON)."""
    nodes: List[str]          # the nodes of this allocation
    partition: str            # the partition it runs in
    excluded: Optional[List[str]]   # ExcNodeList (the user's, plus any slurm-mig added);
                                    # None: not known (squeue before 24.11 cannot print it)
    required: str = ""        # ReqNodeList (--nodelist), as Slurm prints it
    features: str = ""        # --constraint
    admin_comment: str = ""   # only root and SlurmUser can set it


class JobRequest(NamedTuple):
    """What the job holds on this node."""
    request: Optional[MigRequest]   # the MIG profiles and counts on this node; None: no mig
    gpu: Optional[int]        # GPU index the job's shards came from, if any
    mig_idx: List[int]        # static mode: IDX numbers of the allocated mig records
    whole_gpus: List[int] = []   # GPU indices allocated whole (--gres=gpu:N)
    batch: bool = False          # a batch job (sbatch): only those can be requeued
    requeue: bool = False        # Slurm may requeue it (not --no-requeue, JobRequeue on)
    restarts: int = 0            # times Slurm has requeued it so far
    idx_types: Dict[int, str] = {}   # static mode: the mig type Slurm allocated at each IDX
    constraints: Optional[NodeConstraints] = None   # where Slurm may run it (steering a requeue)


def split_items(text: str) -> List[str]:
    """'a(IDX:0,2),b(1/8,0/8)' -> ['a(IDX:0,2)', 'b(1/8,0/8)']: commas inside
    parentheses belong to the item."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise BadInput(f"unbalanced parentheses in GRES allocation {text!r}")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth:
        raise BadInput(f"unbalanced parentheses in GRES allocation {text!r}")
    items.append(text[start:])
    return [s.strip() for s in items if s.strip()]


def _shard_gpus(detail: str) -> List[int]:
    """GPU indices of a shard allocation: 'IDX:0' or, from 23.11.2, '4/8,0/8'."""
    if detail.startswith("IDX:"):
        return parse_idx(detail[4:])
    gpus = []
    for index, pair in enumerate(detail.split(",")):
        m = re.fullmatch(r"(\d+)/(\d+)", pair.strip())
        if not m:
            raise BadInput(f"unknown shard allocation format ({detail})")
        if int(m.group(1)):
            gpus.append(index)
    return gpus


def parse_allocation(text: str) -> JobRequest:
    """One node's allocation, as in gres_detail or `GRES=` of a node group."""
    counts: Dict[str, int] = {}
    shard_gpus: List[int] = []
    idx_types: Dict[int, str] = {}
    whole: List[int] = []
    for item in split_items(text or ""):
        m = _ITEM.match(item)
        if not m:
            raise BadInput(f"unknown GRES allocation item {item!r}")
        name, gtype, count, detail = m.groups()
        if detail in ("IDX:N/A", "CNT:0"):
            continue
        if name == "shard":
            shard_gpus.extend(_shard_gpus(detail))
        elif name == "gpu":
            whole.extend(parse_idx(detail[4:]) if detail.startswith("IDX:") else [])
        elif name == "mig" and gtype:
            if detail.startswith("CNT:") and detail[4:].isdigit():
                counts[gtype] = counts.get(gtype, 0) + int(detail[4:])
            elif detail.startswith("IDX:"):
                for i in parse_idx(detail[4:]):
                    if idx_types.setdefault(i, gtype) != gtype:
                        raise BadInput(f"mig IDX {i} allocated as {idx_types[i]} and {gtype}")
            else:
                raise BadInput(f"unknown mig allocation {item!r}")
    if len(set(shard_gpus)) > 1:
        raise BadInput(f"the job's shards on this node come from GPUs {sorted(set(shard_gpus))}; "
                       "a MIG job's instances must come from one GPU")
    return JobRequest(request=MigRequest(counts) if counts else None,
                      gpu=shard_gpus[0] if shard_gpus else None,
                      mig_idx=sorted(idx_types), whole_gpus=sorted(whole), idx_types=idx_types)


# One job, only fields no user text reaches; AdminComment last (it may hold the delimiter).
FIELDS = ("JobID", "BatchFlag", "Requeue", "RestartCnt", "tres-per-node", "NodeList", "Partition",
          "ReqNodes", "Feature", "ExcNodes", "admin_comment")     # admin_comment last: it may hold a |
NO_EXC_NODES = "Invalid job format specification: ExcNodes"      # squeue before 24.11, which prints it empty
_GRES = re.compile(r"gres[:/]([A-Za-z0-9_]+)(?::([^:,]+))?(?::(\d+))?")
_PROFILE = re.compile(r"[0-9a-z.+]+")


def job_query(job: str) -> List[str]:
    """squeue's arguments for the one-job read (after the command)."""
    return ["-h", "-j", check_job_id(job), "-O", ",".join(f + ":|" for f in FIELDS)]


def _gres_items(tres: str, what: str):
    """(name, type or None, count) of each item of a tres-per-node text."""
    for item in filter(None, tres.split(",")):
        m = _GRES.fullmatch(item)
        if not m:
            raise BadInput(f"unknown GRES request item {item!r} of {what}")
        yield m.group(1), m.group(2), int(m.group(3) or 1)


def parse_job_line(text: str, job: str, node: str, job_gpus: str, exc_nodes_known: bool = True) -> JobRequest:
    """This node's share of `job` from the one-job read and SLURM_JOB_GPUS
    (`exc_nodes_known`: the squeue could print ExcNodes)."""
    # A heterogeneous job's leader id lists every component: each is a job of its own.
    lines = [ln for ln in text.splitlines() if ln.startswith(f"{job}|")]
    if len(lines) != 1:
        raise BadInput(f"squeue printed {len(lines)} lines for job {job}, not its own one")
    values = lines[0].split("|", len(FIELDS) - 1)
    if len(values) != len(FIELDS):
        raise BadInput(f"squeue printed {len(values)} fields for job {job}, not {len(FIELDS)}")
    values[-1] = values[-1][:-1] if values[-1].endswith("|") else values[-1]   # kept whole: no strip
    row = {k: "" if v == "(null)" else v if k == "admin_comment" else v.strip() for k, v in zip(FIELDS, values)}
    names = expand_hostlist(row["NodeList"])
    if node not in names:
        raise BadInput(f"Slurm says job {job} runs on {row['NodeList'] or 'no node'}, not on {node}")
    counts: Dict[str, int] = {}
    shards = False
    for name, gtype, count in _gres_items(row["tres-per-node"], f"job {job}"):
        if name == "mig" and gtype:
            counts[gtype.lower()] = counts.get(gtype.lower(), 0) + count
        shards = shards or name == "shard"
    try:
        gpus = sorted(set(parse_idx(job_gpus))) if job_gpus else []
    except BadInput:
        raise BadInput(f"SLURM_JOB_GPUS={job_gpus!r} is not a GPU index list") from None
    if shards and len(gpus) != 1:
        raise BadInput(f"the job's shards on this node come from GPUs {gpus or 'none'} "
                       "(SLURM_JOB_GPUS); a MIG job's instances must come from one GPU")
    restarts = row["RestartCnt"]
    return JobRequest(request=MigRequest(counts) if counts else None, gpu=gpus[0] if shards else None,
                      mig_idx=[], whole_gpus=[] if shards else gpus,
                      batch=row["BatchFlag"] == "1", requeue=row["Requeue"] == "1",
                      restarts=int(restarts) if restarts.isdigit() else 0,
                      constraints=NodeConstraints(names, row["Partition"],
                                                  _exc_nodes(row["ExcNodes"], exc_nodes_known),
                                                  row["ReqNodes"], row["Feature"], row["admin_comment"]))


def _exc_nodes(text: str, known: bool) -> Optional[List[str]]:
    if not known:
        return None
    return [check_node_name(n) for n in expand_hostlist("" if text == "(null)" else text)]


def step_query(job: str) -> List[str]:
    """squeue's arguments for the GRES requests of one job's steps."""
    return ["-h", "-s", "-j", check_job_id(job), "-o", "%i|%b"]


def parse_step_request(text: str, job: str, step: str) -> Dict[str, int]:
    """{profile: count} a step of `job` asked for (`srun --gres=mig:...`)."""
    lines = [ln for ln in text.splitlines() if ln.startswith(f"{job}.{step}|")]
    if len(lines) != 1:
        raise BadInput(f"squeue printed {len(lines)} lines for step {job}.{step}, not its own one")
    counts: Dict[str, int] = {}
    tres = lines[0].split("|", 1)[1].strip()
    for name, gtype, count in _gres_items("" if tres == "(null)" else tres, f"step {job}.{step}"):
        if name == "mig":
            if not _PROFILE.fullmatch(gtype or ""):
                raise BadInput(f"unknown GRES request item gres:mig:{gtype} of step {job}.{step}")
            counts[gtype] = counts.get(gtype, 0) + count
    return counts


def read_step_request(job: str, step: str, bin_dir: str = "") -> Dict[str, int]:
    """The MIG profiles a running step asked for: one short read of one job."""
    if not (step.isdigit() and len(step) < 10):
        raise BadInput(f"invalid step id {step!r}")
    out = run_slurm([slurm_command("squeue", bin_dir)] + step_query(job), attempts=2, timeout=10.0)
    return parse_step_request(out, job, step)


def expand_hostlist(hostlist: str) -> List[str]:
    """Slurm's hostlist ('n[1-2,5],gpu01') as names, by ClusterShell's NodeSet."""
    if not any(c in hostlist for c in "[],"):
        return [hostlist] if hostlist else []
    from ClusterShell.NodeSet import NodeSet, NodeSetParseError
    try:
        return list(NodeSet(hostlist))
    except NodeSetParseError as e:
        raise BadInput(f"cannot read Slurm's node list {hostlist!r}: {e}") from None


def job_entries(text: str, job: str) -> List[dict]:
    """The entries of `job` in Slurm's JSON job list (`squeue --json`,
    `scontrol --json show job`)."""
    import json
    try:
        jobs = json.loads(text)["jobs"]
        if not isinstance(jobs, list):
            raise TypeError("jobs is not a list")
    except (ValueError, KeyError, TypeError) as e:
        raise BadInput(f"Slurm's JSON has no `jobs` list ({e})") from None
    return [j for j in jobs if isinstance(j, dict) and str(j.get("job_id")) == job]


def parse_jobs_json(text: str, job: str, node: str) -> JobRequest:
    """This node's allocation of `job` from `squeue --json` / `scontrol --json show job`."""
    entries = job_entries(text, job)
    if len(entries) != 1:
        raise BadInput(f"Slurm's JSON lists job {job} {len(entries)} times")
    entry = entries[0]
    nodes, detail = entry.get("nodes"), entry.get("gres_detail")
    if not isinstance(nodes, str) or not isinstance(detail, list) or \
            not all(isinstance(d, str) for d in detail):
        raise BadInput(f"Slurm's JSON for job {job} has no usable nodes/gres_detail")
    names = expand_hostlist(nodes)
    ordered = _allocation_order(entry)
    if ordered is not None:
        if sorted(ordered) != sorted(names):
            raise BadInput(f"Slurm's JSON for job {job}: job_resources names {ordered}, nodes {nodes}")
        names = ordered
    if node not in names:
        raise BadInput(f"Slurm's JSON says job {job} runs on {nodes}, not on {node}")
    if not detail:            # a job without GRES
        return JobRequest(None, None, [])
    if len(detail) != len(names):
        raise BadInput(f"Slurm's JSON for job {job}: {len(detail)} gres_detail entries "
                       f"for {len(names)} nodes")
    restarts = entry.get("restart_cnt")
    return parse_allocation(detail[names.index(node)])._replace(
        batch=entry.get("batch_flag") is True, requeue=entry.get("requeue") is True,
        restarts=restarts if isinstance(restarts, int) and not isinstance(restarts, bool)
        and restarts >= 0 else 0,
        constraints=NodeConstraints(names, _text(entry, "partition"),
                                    expand_hostlist(_text(entry, "excluded_nodes")),
                                    _text(entry, "required_nodes"), _text(entry, "features"),
                                    _text(entry, "admin_comment")))


def _text(entry: dict, key: str) -> str:
    """A string field of the job's JSON; lists (some versions print CSV
    fields as arrays) are joined with commas; absent or null is ''."""
    value = entry.get(key)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    return value if isinstance(value, str) else ""


def _allocation_order(entry: dict) -> Optional[List[str]]:
    """The job's nodes in gres_detail order, where the JSON says it: 22.05's
    job_resources.allocated_nodes[].nodename, 24.11's and later
    job_resources.nodes.allocation[].name (a hostlist sorts names, Slurm orders
    them as slurm.conf does)."""
    res = entry.get("job_resources")
    if not isinstance(res, dict):
        return None
    nodes = res.get("nodes")
    rows = nodes.get("allocation") if isinstance(nodes, dict) else res.get("allocated_nodes")
    if not isinstance(rows, list):
        return None
    names = [r.get("name", r.get("nodename")) for r in rows if isinstance(r, dict)]
    return names if names and all(isinstance(n, str) for n in names) else None


def slurm_command(name: str, bin_dir: str = "") -> str:
    """The Slurm client `name`: in bin_dir when set, else PATH, then the usual
    install prefixes (slurmd runs the Prolog with no PATH)."""
    if bin_dir:
        path = os.path.join(bin_dir, name)
        if not os.access(path, os.X_OK):
            raise SlurmUnavailable(f"{path} is not executable (slurm_bin_dir)")
        return path
    found = shutil.which(name) or next((os.path.join(d, name) for d in SEARCH_DIRS
                                        if os.access(os.path.join(d, name), os.X_OK)), None)
    if found is None:
        raise SlurmUnavailable(f"{name} not found in PATH or {', '.join(SEARCH_DIRS)}; "
                               "set slurm_bin_dir in the config")
    return found


def read_budget(attempts: int = READ_ATTEMPTS, timeout: float = READ_TIMEOUT) -> float:
    """Seconds a read through run_slurm may take at most: every try and the pauses between."""
    return attempts * timeout + RETRY_DELAY * attempts * (attempts - 1) / 2


def run_slurm(argv: List[str], attempts: int = 3, timeout: float = 10.0,
              warnings: Optional[List[str]] = None) -> str:
    """stdout of a Slurm client; retried while the controller is busy or
    restarting. SlurmUnavailable when every attempt failed. `warnings` gets
    the stderr of the run that succeeded."""
    why = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(RETRY_DELAY * attempt)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            why = f"timed out after {timeout:g}s"
            continue
        except OSError as e:
            why = e.strerror or str(e)
            continue
        if p.returncode == 0:
            if warnings is not None:
                warnings.append(p.stderr)
            return p.stdout
        why = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"]
        why = why[0][:300]
    raise SlurmUnavailable(f"{os.path.basename(argv[0])} failed {attempts} times: {why}")


SOURCES = {"squeue": ("squeue", lambda job: ["--json"]),          # every version; lists all jobs
           "scontrol": ("scontrol", lambda job: ["--json", "show", "job", job])}   # 23.02+


def read_job(job: str, node: str, job_gpus: str, bin_dir: str = "", attempts: int = READ_ATTEMPTS,
             timeout: float = READ_TIMEOUT) -> JobRequest:
    """Dynamic mode: this node's share of `job`, from one one-job read."""
    job = check_job_id(job)
    check_node_name(node)
    warnings: List[str] = []
    out = run_slurm([slurm_command("squeue", bin_dir)] + job_query(job), attempts, timeout, warnings)
    return parse_job_line(out, job, node, job_gpus, exc_nodes_known=NO_EXC_NODES not in "".join(warnings))


def read_static_job(job: str, node: str, source: str = "squeue", bin_dir: str = "",
                    attempts: int = 3) -> JobRequest:
    """Static mode: this node's allocation of `job` (IDX numbers), from Slurm's JSON."""
    job = check_job_id(job)
    check_node_name(node)
    tool, args = SOURCES[source]
    return parse_jobs_json(run_slurm([slurm_command(tool, bin_dir)] + args(job), attempts),
                           job, node)


def check_node_name(node: str) -> str:
    if not _NODE_NAME.fullmatch(node or ""):
        raise BadInput(f"invalid node name {node!r}")
    return node


def active_jobs(node: str, bin_dir: str = "", timeout: float = 10.0) -> Optional[set]:
    """Ids of the jobs Slurm still runs (or is starting/ending) on `node`;
    None when Slurm cannot be asked, so callers skip the liveness check."""
    check_node_name(node)
    try:
        out = run_slurm([slurm_command("squeue", bin_dir), "-h", "-w", node,
                         "-t", "R,CF,CG,S", "-o", "%A"], attempts=1, timeout=timeout)
    except SlurmUnavailable:
        return None
    return {line.strip() for line in out.splitlines() if line.strip().isdigit()}
