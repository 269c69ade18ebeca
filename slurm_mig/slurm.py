"""Reading a job's MIG request and allocation from Slurm.

Default: `scontrol show job -d -o ID` (works on 22.05 and later; pyslurm has
no build for 22.05). What the prolog needs: the `mig:` items of the request
and, when the job holds shards or a gpu, the GPU index Slurm allocated.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from typing import List, NamedTuple, Optional

from .errors import BadInput, NodeProblem
from .request import check_job_id

_ALLOC = re.compile(r"(?:^|,)(?:gres[:/])?([^,():]+)[^,()]*\((IDX|CNT):([^)]*)\)")


class JobRequest(NamedTuple):
    spec: str                 # the mig: items, e.g. "mig:3g.40gb:1"
    gpu: Optional[int]        # GPU index from the shard/gpu allocation, if any
    mig_idx: List[int]        # static mode: IDX numbers of the allocated mig records


def parse_scontrol(text: str, job: str) -> JobRequest:
    """Parse `scontrol show job -d -o` output (one line of KEY=VALUE tokens)."""
    fields = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key not in fields:
            fields[key] = value
    if fields.get("JobId") != job:
        raise BadInput(f"scontrol output does not describe job {job} (field JobId)")
    request = fields.get("JOB_GRES") or fields.get("TresPerNode") or ""
    if request in ("", "(null)", "N/A"):
        request = ""
    mig = ",".join(item for item in request.split(",")
                   if re.match(r"^(gres[:/])?mig:", item))
    from .static import parse_idx
    gpu, mig_idx = None, []
    for m in _ALLOC.finditer(fields.get("GRES", "")):
        name, kind, value = m.groups()
        if kind != "IDX":
            continue
        if name in ("shard", "gpu") and gpu is None:
            gpu = parse_idx(value)[0]
        elif name == "mig":
            mig_idx.extend(parse_idx(value))
    return JobRequest(spec=mig, gpu=gpu, mig_idx=sorted(mig_idx))


def read_job(job: str, timeout: float = 10.0) -> JobRequest:
    job = check_job_id(job)
    exe = shutil.which("scontrol")
    if exe is None:
        raise NodeProblem("scontrol not found in PATH; give --request instead")
    try:
        out = subprocess.run([exe, "show", "job", "-d", "-o", job], capture_output=True,
                             text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NodeProblem(f"scontrol show job {job} timed out after {timeout:g}s") from None
    if out.returncode != 0:
        raise BadInput(f"scontrol show job {job} failed: {out.stderr.strip() or out.returncode}")
    return parse_scontrol(out.stdout, job)
