"""Durable file writes and the node lock: the only file primitives the project uses."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from typing import Any, Iterator, Optional

from .errors import NodeProblem, StateCorrupt


_HINTS = {errno.ENOSPC: "free space on that file system",
          errno.EROFS: "the file system is read-only: remount it read-write or point the "
                       "setting at a writable local directory",
          errno.ENOTDIR: "a component of the path is not a directory: fix the setting or "
                         "move that file away",
          errno.EACCES: "run as root (the hooks and the writing verbs need it)",
          errno.EPERM: "run as root (the hooks and the writing verbs need it)",
          errno.ELOOP: "it is a symbolic link; slurm-mig follows none: remove it"}


def os_problem(path: str, e: OSError, doing: str) -> NodeProblem:
    """An OSError as one line naming the path, the cause and what to do."""
    code = errno.errorcode.get(e.errno or 0, "")
    hint = _HINTS.get(e.errno or 0)
    return NodeProblem(f"cannot {doing} {path}: {e.strerror or e} ({code})"
                       + (f"; {hint}" if hint else ""))


@contextlib.contextmanager
def os_errors(path: str, doing: str) -> Iterator[None]:
    """Turn an OSError inside into os_problem(path, ...)."""
    try:
        yield
    except OSError as e:
        raise os_problem(e.filename or path, e, doing) from e


def safe_dir(path: str, mode: int, setting: str) -> None:
    """Create `path` (owned by us, `mode`), or accept an existing one only if it
    is a real directory owned by root (or by us, when not root) that neither
    group nor others can write; anything else is refused with the fix."""
    with os_errors(path, f"create {setting}"):
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o755, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, mode)
        st = os.lstat(path)
    why = unsafe_dir(st)
    if why:
        raise NodeProblem(f"{setting} {path} is {why}; {dir_fix(path, mode)}")
    if st.st_mode & 0o777 != mode:
        with os_errors(path, f"chmod {setting}"):
            os.chmod(path, mode)


def unsafe_dir(st: os.stat_result) -> str:
    """Why a directory root writes into is unsafe ("" when it is not): a
    symlink, not a directory, owned by another user, or writable by group or
    others."""
    return ("a symbolic link" if stat.S_ISLNK(st.st_mode) else
            "not a directory" if not stat.S_ISDIR(st.st_mode) else
            f"owned by uid {st.st_uid}" if st.st_uid not in (0, os.geteuid()) else
            f"writable by group or others (mode {st.st_mode & 0o7777:04o})" if st.st_mode & 0o022
            else "")


def dir_fix(path: str, mode: int) -> str:
    return (f"slurm-mig writes there as root: remove it (slurm-mig then creates it) or run "
            f"`chown root:root {path} && chmod {mode:o} {path}` on a real directory")


def read_text(path: str) -> Optional[str]:
    """The file's text, or None when it cannot be read (missing, say)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


def atomic_write(path: str, data: bytes, mode: int = 0o600, uid: Optional[int] = None,
                 gid: Optional[int] = None, durable: bool = True) -> None:
    """Write via temp file (+ fsync) + rename, so readers see old or new, never
    half. `durable` also fsyncs file and directory, to survive a power cut.
    An OSError becomes one line naming the path and the cause."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise os_problem(path, FileNotFoundError(errno.ENOENT, f"directory {directory} does not exist"), "write")
    with os_errors(path, "write"):
        _atomic_write(path, data, mode, uid, gid, durable)


def _atomic_write(path: str, data: bytes, mode: int, uid: Optional[int], gid: Optional[int],
                  durable: bool) -> None:
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
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
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
        with os_errors(path, f"read {what}"):
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise StateCorrupt(f"{what} {path} is corrupt ({e})" + (f"; {hint}" if hint else "")) from e


@contextlib.contextmanager
def locked(path: str, timeout: float = 60.0) -> Iterator[None]:
    """flock `path` (created 0600), giving up after `timeout` seconds with a clear error."""
    with os_errors(path, "open the lock file"):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
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
