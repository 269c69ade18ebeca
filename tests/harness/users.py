"""Acting as another user in a test: what a job's unprivileged processes see."""
import os


def run_as(uid: int, gid: int, action) -> int:
    """errno of action() in a child running as uid/gid, no supplementary
    groups (0: it worked)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            action()
        except OSError as e:
            code = e.errno
        os.write(w, str(code).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        return int(f.read())


def open_as(uid: int, gid: int, path: str) -> int:
    """errno of opening `path` read-only as uid/gid (0: opened)."""
    return run_as(uid, gid, lambda: os.close(os.open(path, os.O_RDONLY)))
