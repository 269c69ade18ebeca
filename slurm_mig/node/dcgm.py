"""dcgm-exporter's HPC job mapping (docs/facts.md): one file per device
in `dcgm_job_mapping_dir`, named `<gpu>` for a whole GPU or `<gpu>.<gi_id>`
for a MIG instance, holding the job id; the exporter then labels that
device's series `hpc_job="<id>"`. Files are written atomically and deleted
(never truncated: an empty file hides a GPU's metrics on exporters before
4.3.1-4.4.0) when the job ends. Telemetry never fails a job: problems are
logged."""
from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, List

from ..core.syntax import check_job_id
from ..errors import NodeProblem
from ..fsutil import atomic_write, safe_dir
from ..log import JobLog
from .jobfiles import read_regular

if TYPE_CHECKING:
    from ..core.lifecycle import Record

NAME = re.compile(r"\d+(\.\d+)?")      # what the exporter reads; it skips other names


def mapping_names(rec: "Record") -> List[str]:
    """`<gpu>.<gi_id>` per MIG instance of the job, `<gpu>` per GPU it holds whole."""
    names = [f"{h.gpu}.{h.gi_id}" for h in rec.instances if h.gi_id is not None]
    with_instances = {h.gpu for h in rec.instances}
    return names + [str(g) for g in rec.whole_gpus if g not in with_instances]


def _usable(directory: str, jl: JobLog) -> bool:
    """The directory passes the rule every directory slurm-mig writes as root
    follows (fsutil.safe_dir; 0755 so the exporter can read it), else the
    reason is logged and the job goes on unlabelled."""
    try:
        safe_dir(directory, 0o755, "dcgm_job_mapping_dir")
    except NodeProblem as e:
        jl.error("%s; no job labels", e)
        return False
    return True


def write(directory: str, job: str, names: List[str]) -> None:
    job, jl = check_job_id(job), JobLog(job)
    bad = [n for n in names if not NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"not a DCGM mapping name: {bad[0]!r}")
    if not names or not _usable(directory, jl):
        return
    for name in names:
        try:
            atomic_write(os.path.join(directory, name), f"{job}\n".encode(), mode=0o644)
        except NodeProblem as e:           # atomic_write's one-line OSError
            jl.error("DCGM job mapping not written: %s", e)
    jl.info("DCGM job mapping: %s", ",".join(names))


def remove(directory: str, job: str) -> List[str]:
    """Delete the mapping files that name `job` (found by content, so a job whose
    record is gone is cleaned too); returns their names."""
    job, removed = check_job_id(job), []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        if not NAME.fullmatch(name):
            continue
        path = os.path.join(directory, name)
        found = read_regular(path)
        if found is None or found[0].split() != [job]:
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            removed.append(name)
    if removed:
        JobLog(job).info("DCGM job mapping removed: %s", ",".join(sorted(removed)))
    return removed
