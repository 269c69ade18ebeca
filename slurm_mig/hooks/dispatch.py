"""Which Prolog a job gets: static mode binds Slurm's IDX records; dynamic
mode creates MIG instances for `mig:` requests or hands over whole GPUs for
`gpu:` ones; a job with neither is left alone. What the caller does not give
is read from Slurm."""
from __future__ import annotations

from typing import List, Optional

from ..config import Config
from ..core.syntax import parse_idx
from ..node.context import NodeContext


def run_prolog(cfg: Config, job: str, spec: Optional[str] = None, gpu: Optional[int] = None,
               uid: Optional[int] = None, idx: Optional[str] = None,
               whole_gpus: Optional[List[int]] = None) -> None:
    if cfg.mode == "static":
        from .static import prolog as static_prolog
        if idx is None:
            from ..slurm.jobinfo import read_job
            indices = read_job(job, cfg.job_source).mig_idx
            if not indices:
                return
        else:
            indices = parse_idx(idx)
        static_prolog(NodeContext(cfg), job, indices, uid)
        return
    if spec is None and whole_gpus is None:
        from ..slurm.jobinfo import read_job
        req = read_job(job, cfg.job_source)
        spec, gpu = req.spec or None, gpu if gpu is not None else req.gpu
        whole_gpus = req.whole_gpus if not spec else None
    if whole_gpus:
        from .wholegpu import prolog as whole_gpu_prolog
        whole_gpu_prolog(NodeContext(cfg), job, whole_gpus, uid)
    elif spec:
        from .dynamic import prolog as mig_prolog
        mig_prolog(cfg, job, spec, gpu, uid)
