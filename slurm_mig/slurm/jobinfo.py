"""Reading a job's MIG request and allocation from Slurm.

Default: `scontrol show job -d -o ID`; alternative: `squeue --json` (config
job_source). pyslurm is not used: PyPI has no build for Slurm 22.05. What the
prolog needs: the `mig:` items of the request and, when the job holds shards
or a gpu, the GPU index Slurm allocated (static mode: the mig IDX numbers).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from typing import List, NamedTuple, Optional

from ..core.syntax import check_job_id, parse_idx
from ..errors import BadInput, NodeProblem

_ALLOC = re.compile(r"(?:^|,)(?:gres[:/])?([^,():]+)[^,()]*\((IDX|CNT):([^)]*)\)")


class JobRequest(NamedTuple):
    spec: str                 # the mig: items, e.g. "mig:3g.40gb:1"
    gpu: Optional[int]        # GPU index the job's shards came from, if any
    mig_idx: List[int]        # static mode: IDX numbers of the allocated mig records
    whole_gpus: List[int] = []   # GPU indices allocated whole (--gres=gpu:N)


def _job_request(request: str, allocation: str) -> JobRequest:
    """From the request (JOB_GRES / tres_per_node) and the node's allocation
    (`mig:...(IDX:..),shard:4(IDX:0)`), whatever tool printed them."""
    if request in ("(null)", "N/A"):
        request = ""
    mig = ",".join(item for item in request.split(",") if re.match(r"^(gres[:/])?mig:", item))
    gpu, mig_idx, whole = None, [], []
    for m in _ALLOC.finditer(allocation):
        name, kind, value = m.groups()
        if kind != "IDX":
            continue
        if name == "shard" and gpu is None:
            gpu = parse_idx(value)[0]
        elif name == "gpu":
            whole.extend(parse_idx(value))
        elif name == "mig":
            mig_idx.extend(parse_idx(value))
    return JobRequest(spec=mig, gpu=gpu, mig_idx=sorted(mig_idx), whole_gpus=sorted(whole))


def parse_scontrol(text: str, job: str) -> JobRequest:
    """Parse `scontrol show job -d -o` output (one line of KEY=VALUE tokens)."""
    fields = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    if fields.get("JobId") != job:
        raise BadInput(f"scontrol output does not describe job {job} (field JobId)")
    return _job_request(fields.get("JOB_GRES") or fields.get("TresPerNode") or "",
                        fields.get("GRES", ""))


def parse_squeue_json(text: str, job: str) -> JobRequest:
    """Parse `squeue --json` (which lists every job: the one wanted is picked by job_id)."""
    import json
    try:
        doc = json.loads(text)
        jobs = doc["jobs"]
    except (ValueError, KeyError, TypeError) as e:
        raise BadInput(f"squeue --json output has no `jobs` list ({e})") from None
    entry = next((j for j in jobs if isinstance(j, dict) and str(j.get("job_id")) == job), None)
    if entry is None:
        raise BadInput(f"squeue --json does not list job {job} (field job_id)")
    request = entry.get("tres_per_node") or ""
    detail = entry.get("gres_detail") or []
    if not isinstance(request, str) or not isinstance(detail, list):
        raise BadInput(f"squeue --json: unexpected tres_per_node/gres_detail for job {job}")
    return _job_request(request, ",".join(str(d) for d in detail))


SOURCES = {"scontrol": (["show", "job", "-d", "-o"], parse_scontrol),
           "squeue": (["--json"], parse_squeue_json)}


def read_job(job: str, source: str = "scontrol", timeout: float = 10.0) -> JobRequest:
    """The job's MIG request and allocation, from `scontrol` (default) or `squeue --json`."""
    job = check_job_id(job)
    args, parse = SOURCES[source]
    tool = "scontrol" if source == "scontrol" else "squeue"
    exe = shutil.which(tool)
    if exe is None:
        raise NodeProblem(f"{tool} not found in PATH; give --request instead")
    argv = [exe] + args + ([job] if source == "scontrol" else [])
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NodeProblem(f"{' '.join(argv[:3])} timed out after {timeout:g}s") from None
    if out.returncode != 0:
        raise BadInput(f"{tool} failed for job {job}: {out.stderr.strip() or out.returncode}")
    return parse(out.stdout, job)


def active_jobs(node: str, timeout: float = 10.0) -> Optional[set]:
    """Ids of the jobs Slurm still runs (or is starting/ending) on `node`;
    None when Slurm cannot be asked, so callers skip the liveness check."""
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,255}", node or ""):
        raise BadInput(f"invalid node name {node!r}")
    exe = shutil.which("squeue")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-h", "-w", node, "-t", "R,CF,CG,S", "-o", "%A"],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()}
