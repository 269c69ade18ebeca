"""Which Prolog a job gets: static mode binds Slurm's IDX records; dynamic
mode creates MIG instances for `mig:` requests or hands over whole GPUs for
`gpu:` ones; a job with neither is left alone. A batch job whose instances
do not fit goes back to the queue (slurm/requeue.py) rather than failing; an
srun/salloc job, which cannot, waits up to `interactive_wait` for room.

What the caller does not give is read from Slurm (slurm/jobinfo.py), for this
node only, in one one-job request. In dynamic mode a job holding no GPU or
shard here (slurmd sets no SLURM_JOB_GPUS) returns at once, without asking
Slurm or loading the node modules (every CPU-only job pays for this path).
When Slurm cannot be read, or its answer is unusable, the job fails alone
with the reason: a hook never drains the node for it.
"""
from __future__ import annotations

import contextlib
import os
from typing import List, Mapping, Optional

from ..config import Config
from ..core.syntax import MigRequest, parse_idx
from ..errors import BadInput, SlurmUnavailable
from . import detached


def run_prolog(cfg: Config, job: str, spec: Optional[str] = None, gpu: Optional[int] = None,
               uid: Optional[int] = None, idx: Optional[str] = None,
               whole_gpus: Optional[List[int]] = None,
               env: Mapping[str, str] = os.environ) -> None:
    """`spec`, `gpu`, `idx`, `whole_gpus`: what an admin or SLURM_MIG_REQUEST
    gives in place of Slurm's answer (outside Slurm)."""
    if cfg.mode == "static":
        types = None
        if idx is None:
            req = _read_job(cfg, job, uid, env, static=True)
            if req is None or not req.mig_idx:
                return
            indices, types = req.mig_idx, req.idx_types
        else:
            indices = parse_idx(idx)
        from .static import prolog as static_prolog
        from ..node import counters
        from ..node.ledger import this_node
        counters.bump(cfg.state_dir, "prologs")
        static_prolog(_context(cfg), job, indices, uid, this_node(env), types)
        return
    request: Optional[MigRequest] = None
    if spec is None and whole_gpus is None:
        job_gpus = env.get("SLURM_JOB_GPUS", "")
        if not job_gpus:
            return              # no GPU and no shard on this node
        if uid == 0:            # a stuck-GPU hold (only root's jobs can be one) touches nothing
            from .stuckgpu import started
            if started(cfg, job, uid, job_gpus):
                return
        req = _read_job(cfg, job, uid, env)
        if req is None:
            return
        request, gpu = req.request, gpu if gpu is not None else req.gpu
        whole_gpus = req.whole_gpus if request is None else None
        send_back, user, evict = _send_back(cfg, job, req), None, None
        requeueable = _requeueable(cfg, req)
        if not req.batch:       # srun/salloc cannot go back to the queue: it waits for room instead
            cfg = cfg._replace(wait_for_room=cfg.interactive_wait)
            user = _interactive(cfg, job, env)
            evict = _evict(cfg, job, env) if cfg.interactive_evict_age > 0 else None
    else:
        send_back, user, evict, requeueable = None, None, None, False
        if spec is not None:
            try:
                request = MigRequest.parse(spec)
            except BadInput as e:
                _fail(cfg, job, uid, str(e))
                return
    if not (whole_gpus or request):
        return
    from ..node import counters
    counters.bump(cfg.state_dir, "prologs")
    if whole_gpus:
        from .wholegpu import prolog as whole_gpu_prolog
        whole_gpu_prolog(_context(cfg), job, whole_gpus, uid, cfg.wait_for_room, send_back, user)
    else:
        from .dynamic import prolog as mig_prolog
        mig_prolog(cfg, job, request, gpu, uid, send_back, user, requeueable, evict)


def _interactive(cfg: Config, job: str, env: Mapping[str, str]):
    """What an srun or salloc user is told while its Prolog waits for room (slurm/notice.py)."""
    from ..node.ledger import this_node
    from ..slurm import notice
    from .admission import Interactive
    node = this_node(env)

    def waiting(reason: str) -> None:
        notice.tell(job, f"slurm-mig: job {job} waits for room on {node}: {reason}; it starts when "
                         f"running jobs end, or gives up after {_duration(cfg.interactive_wait)}",
                    cfg.slurm_bin_dir)
    return Interactive(waiting, lambda text: notice.revoke(job, text, cfg.slurm_bin_dir))


def _requeueable(cfg: Config, req) -> bool:
    """Whether an srun/salloc job may send this one back while it is young
    (interactive_evict_age): a batch job Slurm may requeue, with a requeue
    left after that one for its own Prolog (max_requeues)."""
    return req.batch and req.requeue and req.restarts + 1 < cfg.max_requeues


def _evict(cfg: Config, job: str, env: Mapping[str, str]):
    """Requeues young batch jobs to make room for srun/salloc `job` (interactive_evict_age)."""
    def evict(victims: List[str]) -> None:
        from ..node.ledger import this_node
        from ..slurm import requeue
        requeue.make_room(victims, job, this_node(env), cfg.slurm_bin_dir)
    return evict


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g} {unit}"
    return f"{seconds:g} s"


def _send_back(cfg: Config, job: str, req):
    """For a job whose instances do not fit: a callable that requeues it and
    returns None, or says why it cannot (the job then waits, then fails)."""
    def cannot(why: str):
        return lambda reason: why
    if not req.batch:
        return cannot("interactive jobs (srun, salloc) cannot be requeued")
    if not req.requeue:
        return cannot("the job may not be requeued (--no-requeue, or JobRequeue=0)")
    if req.restarts >= cfg.max_requeues:
        return cannot(f"it was requeued {req.restarts} times already (max_requeues = {cfg.max_requeues})")

    def send_back(reason: str) -> Optional[str]:
        from ..fsutil import atomic_write, safe_dir
        from ..node.jobfiles import REQUEUED, STEERED, job_file
        from ..slurm import requeue
        attempt = req.restarts + 1
        steering = req.constraints is not None    # the steerer also sets the start (steer = false: only that)
        marker = job_file(cfg.run_dir, job, REQUEUED)
        if steering:       # before the requeue: the Epilog that removes it may run right after
            safe_dir(cfg.run_dir, 0o755, "run_dir")
            atomic_write(marker, b"", mode=0o644)
            atomic_write(job_file(cfg.run_dir, job, STEERED), str(attempt).encode(), mode=0o644)
        try:
            requeue.send_back(job, reason, attempt, cfg.max_requeues, cfg.slurm_bin_dir, marked=not steering)
        except SlurmUnavailable as e:
            _remove(marker)
            return f"Slurm refused to requeue it ({e})"
        if steering:
            try:
                detached.spawn_detached("steer", job, {requeue.STEER_ENV: requeue.steer_request(
                    req.constraints, attempt, cfg.max_requeues, reason, keep_off=cfg.steer)})
            except OSError as e:
                from ..log import JobLog
                JobLog(job).warning("requeued, but not steered (%s): Slurm's own delay applies", e)
                _remove(marker)
                requeue.mark_job(job, requeue.mark(attempt, cfg.max_requeues, reason), cfg.slurm_bin_dir)
        return None
    return send_back


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _read_job(cfg: Config, job: str, uid: Optional[int], env: Mapping[str, str], static: bool = False):
    """This node's allocation, or None after failing the job with the reason."""
    from ..node.ledger import this_node
    from ..slurm import jobinfo
    try:
        if static:
            return jobinfo.read_static_job(job, this_node(env), cfg.job_source, cfg.slurm_bin_dir)
        return jobinfo.read_job(job, this_node(env), env.get("SLURM_JOB_GPUS", ""), cfg.slurm_bin_dir)
    except (SlurmUnavailable, BadInput) as e:
        _fail(cfg, job, uid, f"cannot read the job's allocation from Slurm: {e}")
        return None


def _fail(cfg: Config, job: str, uid: Optional[int], reason: str) -> None:
    ctx = _context(cfg)
    with ctx.ledger.lock():
        ctx.fail(job, uid, reason)


def _context(cfg: Config):
    """The node context, imported only by jobs that need it."""
    from ..node.context import NodeContext
    return NodeContext(cfg)
