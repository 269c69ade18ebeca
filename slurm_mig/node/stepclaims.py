"""Which of a job's MIG instances a step that asked for its own gets.

Slurm counts a job's `mig:<profile>` GRES per step (two concurrent steps never
hold more than the job has) but gives count-only GRES no identity, so which
instances a step holds is decided here: the first task of a step claims, under
a lock, instances of the profiles the step asked for that no live step of the
job holds; the step's other tasks find its claim. A claim is live while one of
the tasks that made or found it runs (its pid with the same start time), so
nothing needs releasing when a step ends, however it ends.

Runs as the job's user, in the TaskProlog, in `<run_dir>/<job>.steps/`: a
directory the Prolog made for the job, owned by its user, mode 0700. Only the
job's own devices are at stake: claims decide among them and nothing else.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from typing import Callable, Dict, List, Optional, Tuple

CLAIMS = "claims.json"


def step_devices(steps_dir: str, uid: int, step: str, devices, ask: Callable[[], Dict[str, int]]
                 ) -> Tuple[List[str], Optional[str]]:
    """(UUIDs this step gets, a note to print or None). `devices`: the job's
    (jobfiles.Device); `ask()`: the step's request {profile: count}, from Slurm.
    Anything that stops the choice leaves the step all the job's devices, said."""
    everything = [d.uuid for d in devices]
    try:
        fd = _open_dir(steps_dir, uid)
    except OSError as e:
        return everything, f"slurm-mig: step {step} sees all the job's devices ({steps_dir}: {e.strerror})"
    try:
        with _locked(fd):
            claims = _live(_load(fd))
            mine = [u for u, c in claims.items() if c["step"] == step]
            if not mine:
                try:
                    request = ask()
                except Exception as e:        # Slurm unreachable, odd answer: the step still runs
                    return everything, f"slurm-mig: step {step} sees all the job's devices ({e})"
                mine, short = _choose(devices, request, {u for u in claims})
                if not mine:
                    return everything, None   # asked for no MIG device: the job's, as any step
                if short:
                    return mine, (f"slurm-mig: step {step}: no free instance of {', '.join(short)} "
                                  "left by the job's other steps; sharing theirs")
            me = _me()
            for u in mine:
                claim = claims.setdefault(u, {"step": step, "tasks": []})
                if me not in claim["tasks"]:
                    claim["tasks"].append(me)
            _save(fd, claims)
            return mine, None
    finally:
        os.close(fd)


def _choose(devices, request: Dict[str, int], taken: set) -> Tuple[List[str], List[str]]:
    """Instances of the requested profiles, unclaimed first; and the profiles
    that had to share one (only if claims outlived their steps)."""
    chosen, short = [], []
    for profile, count in sorted(request.items()):
        ours = [d.uuid for d in devices if d.kind == profile]
        free = [u for u in ours if u not in taken] + [u for u in ours if u in taken]
        chosen += free[:count]
        if any(u in taken for u in free[:count]):
            short.append(profile)
    return chosen, short


def _open_dir(path: str, uid: int) -> int:
    """The claims directory: a real directory of the job's user that no one
    else may write (else it was not the Prolog's)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if st.st_uid != uid or st.st_mode & 0o022:
        os.close(fd)
        raise OSError(0, "not the job's own directory")
    return fd


@contextlib.contextmanager
def _locked(dir_fd: int):
    fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _load(dir_fd: int) -> dict:
    try:
        fd = os.open(CLAIMS, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return {}
    with open(fd, encoding="utf-8") as f:
        try:
            raw = json.load(f) if stat.S_ISREG(os.fstat(fd).st_mode) else {}
        except ValueError:
            return {}
    return {u: c for u, c in raw.items() if isinstance(c, dict) and isinstance(c.get("step"), str)
            and isinstance(c.get("tasks"), list)} if isinstance(raw, dict) else {}


def _save(dir_fd: int, claims: dict) -> None:
    tmp = f".{CLAIMS}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(claims, f)
    os.replace(tmp, CLAIMS, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def _me() -> List[int]:
    """This task: the TaskProlog's parent (slurmstepd's child that becomes the
    task) and its start time, which a reused pid does not share."""
    pid = os.getppid()
    return [pid, _start_time(pid)]


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return -1


def _live(claims: dict) -> dict:
    return {u: c for u, c in claims.items()
            if any(isinstance(t, list) and len(t) == 2 and isinstance(t[0], int) and t[0] > 0
                   and _start_time(t[0]) == t[1] != -1 for t in c["tasks"])}
