"""Hook work that must not make a job wait runs in a process of its own."""
from __future__ import annotations

import os
from typing import Callable, List, Mapping, Optional

_in_process: List[Callable[[List[str]], int]] = []


def fork_instead(run: Callable[[List[str]], int]) -> None:
    """Spawn by fork from now on, the child running `run([verb])`
    (hooks/main.py's exit_status): this process has every module loaded (a
    child of the hook server, hooks/server.py), so a fork costs less than a
    new interpreter."""
    _in_process[:] = [run]


def spawn_detached(verb: str, job: str, env: Optional[Mapping[str, str]] = None) -> None:
    """`slurm-mig-hook <verb>` in a session of its own, detached from slurmd's
    pipes, so the hook that starts it ends at once: `steer` (slurm/requeue.py)
    outlives the Prolog by the Epilog's run time, `publish` (slurm/room.py)
    sends the node's free slices to Slurm without making a job wait,
    `stuck-hold` (hooks/stuckgpu.py) holds a GPU a stuck instance is on,
    `serve` is the hook server (hooks/server.py)."""
    env = {**os.environ, **(env or {}), "SLURM_JOB_ID": job}
    if _in_process:
        _fork_detached(verb, env, _in_process[0])
        return
    import subprocess
    import sys
    subprocess.Popen([sys.executable, "-m", "slurm_mig.hooks.main", verb], env=env,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True, close_fds=True)


def _fork_detached(verb: str, env: Mapping[str, str], run: Callable[[List[str]], int]) -> None:
    """spawn_detached by a double fork: the grandchild, in a session of its own
    with no descriptor of the hook's, runs the verb; the child ends at once."""
    child = os.fork()
    if child:
        os.waitpid(child, 0)
        return
    status = 1
    try:
        os.setsid()
        if os.fork():
            status = 0
            return
        stdio_to_devnull()
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.environ.clear()
        os.environ.update(env)
        status = run([verb])
    finally:
        os._exit(status)


def stdio_to_devnull() -> None:
    """Standard input, output and error become /dev/null: whoever reads this
    process's output sees it end (the hook server's child, hooks/server.py, once
    its hook has ended) or never had it (a detached grandchild)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
