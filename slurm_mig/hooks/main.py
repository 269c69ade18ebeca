"""`slurm-mig-hook prolog|epilog|task-prolog`: what the scripts Slurm runs exec
(and `steer`, which a Prolog that requeued its job leaves running: slurm/requeue.py).

Everything comes from the environment slurmd provides (SLURM_JOB_ID,
SLURM_JOB_UID) and the config file, so this skips the click CLI and its
imports: it runs at every job start and end. Outside Slurm, SLURM_MIG_REQUEST
(and SLURM_MIG_GPU) stand in for what the prolog reads from Slurm.

The hook contract's error mapping lives here: a Prolog or Epilog exits 0 or
1, never 2 (Slurm drains a node for any non-zero exit, so only node problems
may surface at all; per-job problems were turned into a failed job below).
"""
from __future__ import annotations

import os
import sys

from ..errors import SlurmMigError

VERBS = ("prolog", "epilog", "task-prolog", "steer", "publish", "stuck-hold", "stuck-wait", "serve")
NODE_PROBLEM = 1


USAGE = f"""usage: slurm-mig-hook {'|'.join(VERBS)}

What the scripts slurm.conf's Prolog=, Epilog= and TaskProlog= name run under
slurmd; everything comes from slurmd's environment (SLURM_JOB_ID, SLURM_JOB_UID,
SLURM_JOB_GPUS, SLURMD_NODENAME) and the config file (SLURM_MIG_CONFIG, default
/etc/slurm-mig/config.toml). `steer` is what a Prolog that requeued its job leaves
running; `publish` what a GPU job's Prolog and Epilog leave to send the node's free
slices to Slurm (room_field); `stuck-hold` what a Prolog leaves to hold a GPU that a
busy instance no job owns is stuck on, `stuck-wait` that hold's batch script
(hooks/stuckgpu.py); `serve` the hook server a Prolog or Epilog starts when it
finds none (hooks/server.py: later hooks run in a fork of it, on socket
SLURM_MIG_HOOKD). For use by hand, see `slurm-mig --help`."""


def main(argv) -> int:
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(argv) != 1 or argv[0] not in VERBS:
        print(USAGE, file=sys.stderr)
        return NODE_PROBLEM
    verb = argv[0]
    if verb == "serve":
        return serve()
    from .. import config
    from ..core.syntax import check_job_id
    cfg = _task_config() if verb == "task-prolog" else config.load()
    if not os.environ.get("SLURM_JOB_ID"):
        print(f"slurm-mig-hook {verb}: SLURM_JOB_ID is not set: it runs under slurmd "
              "(outside Slurm, use `slurm-mig prolog|epilog|task-prolog --job N`)", file=sys.stderr)
        return NODE_PROBLEM
    job = check_job_id(os.environ["SLURM_JOB_ID"])
    if verb == "task-prolog":
        text, code = task_prolog(cfg, job)
        sys.stdout.write(text)
        return code
    from ..log import setup_logging
    setup_logging()
    start_server = os.environ.pop("SLURM_MIG_HOOKD", "")   # the client found no server there
    if start_server and cfg.hook_server and verb in ("prolog", "epilog"):
        from . import detached
        try:
            detached.spawn_detached("serve", job, {"SLURM_MIG_HOOKD": start_server})
        except OSError as e:                   # the next hook tries again
            from ..log import JobLog
            JobLog(job).warning("hook server not started: %s", e)
    if verb == "steer":         # left by a Prolog that requeued the job (slurm/requeue.py)
        from ..log import JobLog
        from ..slurm import requeue
        try:
            from ..node.jobfiles import REQUEUED, STEERED, job_file
            done = requeue.steer_when_pending(job, os.environ.get(requeue.STEER_ENV, ""), cfg.slurm_bin_dir,
                                              job_file(cfg.run_dir, job, REQUEUED), cfg.run_dir,
                                              return_after=cfg.steer_return,
                                              round_file=job_file(cfg.run_dir, job, STEERED))
        except SlurmMigError as e:
            done = f"not steered: {e}"
        JobLog(job).info("requeued job %s", done)
        return 0
    if verb == "publish":       # left by a GPU job's Prolog or Epilog (slurm/room.py)
        from ..log import JobLog
        from ..slurm import room
        from ..node.ledger import this_node
        try:
            done = room.publish(cfg, this_node())
        except SlurmMigError as e:
            done = f"not published: {e}"
        JobLog(job).info("free slices %s", done)
        return 0
    if verb in ("stuck-hold", "stuck-wait"):
        from . import stuckgpu
        try:
            done = stuckgpu.submit(cfg) if verb == "stuck-hold" else stuckgpu.wait(cfg, job)
        except SlurmMigError as e:
            done = f"failed: {e}"
        from ..log import JobLog
        JobLog(job).info("stuck-GPU hold: %s", done)
        return 0
    if verb == "epilog":
        from .epilog import epilog
        epilog(cfg, job, os.environ)
    else:
        from .dispatch import run_prolog
        uid = os.environ.get("SLURM_JOB_UID", "")
        gpu = os.environ.get("SLURM_MIG_GPU", "")
        run_prolog(cfg, job, os.environ.get("SLURM_MIG_REQUEST") or None,
                   int(gpu) if gpu.isdigit() else None, int(uid) if uid.isdigit() else None)
    if cfg.mode == "dynamic" and cfg.room_field and os.environ.get("SLURM_JOB_GPUS"):
        from . import detached
        try:
            detached.spawn_detached("publish", job)     # the node's room changed (or may have)
        except OSError as e:                   # the view goes stale; the job and node are fine
            from ..log import JobLog
            JobLog(job).warning("free slices not published: %s", e)
    return 0


def _task_config():
    """The TaskProlog runs as the job's user, who may not read the config
    (it may be root's alone): then the defaults and SLURM_MIG_RUN_DIR, as the
    script uses, rather than a failed task."""
    from .. import config
    try:
        return config.load()
    except (SlurmMigError, OSError):
        return config.Config()._replace(run_dir=os.environ.get("SLURM_MIG_RUN_DIR") or config.Config().run_dir)


def task_prolog(cfg, job: str):
    """(text, exit status) of the TaskProlog; a step with a GPU request of its
    own has it read from Slurm (the script execs this only for such a step)."""
    from ..node.jobfiles import task_prolog as from_job_files

    def step_request(job_id: str, step: str):
        from ..slurm.jobinfo import read_step_request
        return read_step_request(job_id, step, cfg.slurm_bin_dir)
    return from_job_files(cfg.run_dir, job, step_request=step_request)


def serve() -> int:
    """The hook server, until it ends (hooks/server.py); its start and end go to syslog."""
    from ..log import log, setup_logging
    from . import server
    setup_logging()
    path = os.environ.get(server.SOCKET_ENV, "")
    log.info("hook server on %s: starting", path)
    try:
        why = server.serve(path, exit_status)
    except SlurmMigError as e:          # hooks go on running alone
        log.error("hook server on %s: not started: %s", path, e)
        return NODE_PROBLEM
    log.info("hook server on %s: ended: %s", path, why)
    return 0


def exit_status(argv) -> int:
    """main()'s status, with what ends a hook turned into one line and status 1
    (a node problem); what the server's children run."""
    try:
        return main(argv)
    except SlurmMigError as e:
        print(f"slurm-mig: error: {e}", file=sys.stderr)
        return NODE_PROBLEM
    except OSError as e:         # a node problem: one line naming the path and the cause
        from ..fsutil import os_problem
        print(f"slurm-mig: error: {os_problem(e.filename or '?', e, 'use')}", file=sys.stderr)
        return NODE_PROBLEM
    except Exception as e:       # an NVML failure the hooks did not absorb: a node problem
        from ..nvml.errors import NVMLError, describe
        if not isinstance(e, NVMLError):
            raise
        print(f"slurm-mig: error: NVML: {describe(e)}", file=sys.stderr)
        return NODE_PROBLEM


def run() -> None:
    sys.exit(exit_status(sys.argv[1:]))


if __name__ == "__main__":
    run()
