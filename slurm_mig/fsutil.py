"""Durable file writes and the node lock: the only file primitives the project uses."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from typing import Any, Iterator, Optional

from .errors import NodeProblem, StateCorrupt


def atomic_write(path: str, data: bytes, mode: int = 0o600, uid: Optional[int] = None,
                 gid: Optional[int] = None, durable: bool = True) -> None:
    """Write via temp file (+ fsync) + rename, so readers see old or new, never
    half. `durable` also fsyncs file and directory, to survive a power cut."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: str, obj: Any, mode: int = 0o600, durable: bool = True) -> None:
    atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode(), mode,
                 durable=durable)


def read_json(path: str, what: str, hint: str = "move it aside and run `slurm-mig reconcile`") -> Any:
    """Parse a JSON file; a corrupt one is reported by name, not as a traceback."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateCorrupt(f"{what} {path} is corrupt ({e}); {hint}") from e


@contextlib.contextmanager
def locked(path: str, timeout: float = 60.0) -> Iterator[None]:
    """flock `path` (created 0600), giving up after `timeout` seconds with a clear error."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        op = fcntl.LOCK_EX | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, op)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise NodeProblem(f"could not lock {path} within {timeout:g}s; "
                                      "another slurm-mig process holds it") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)
