"""The hook server: one root process per node and install that keeps slurm-mig's
modules loaded, so that a Prolog or Epilog costs a fork instead of an
interpreter start and the imports of some 60 modules (docs/performance.md).

The Prolog and Epilog scripts run the client (share/slurm-mig/client/
hook-client.py) with `python -I -S`; it connects to this server's Unix socket,
`<SLURM_MIG_RUN_DIR or /run/slurm-mig>/hookd/<dev>-<inode of the client>.sock`,
and a child forked for the connection runs the hook as `slurm-mig-hook VERB`
would, in the client's environment, working directory and umask, on the
client's standard streams. One connection per hook run:

    client -> "LEN\\n" and LEN bytes: NUL-joined PROTOCOL, verb, cwd, umask (octal),
              then NAME=VALUE of every environment variable; fds 0, 1, 2 (SCM_RIGHTS)
    child  -> "+"        it has the hook
    client -> "+"        run it (a client that gave up closes instead: it runs
                         the hook itself, so nothing runs twice)
    child  -> the hook's exit status in decimal, then it closes

Trust: only root's processes connect (the directory is root's, 0700) and the
child checks that the peer is uid 0; the client checks that the server is.
The child takes the client's place: it is killed (its process group) when the
client goes, as slurmd kills a hook that outlives PrologEpilogTimeout.

A spare child, forked ahead, waits on the socket, so no hook waits for a fork.

Lifetime: a hook that found no server starts one (the client names the socket in
SLURM_MIG_HOOKD; `hook_server = false` stops that). It ends after IDLE_EXIT
seconds without a hook, when its socket is removed or replaced, when
slurm-mig is reinstalled or upgraded under it (the new client has another name,
so its hooks start a new server), on SIGTERM, or when a hook it ran reads
`hook_server = false`. Without it, every hook runs as a process of its own.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import sys
import time
from typing import Callable, List

from ..errors import BadInput, NodeProblem

PROTOCOL = b"slurm-mig-hookd 1"
SERVED = ("prolog", "epilog")   # the verbs a client may hand over
SOCKET_ENV = "SLURM_MIG_HOOKD"
IDLE_EXIT = 600.0        # s without a hook, then the server ends
TICK = 5.0               # s between checks that it should go on
TAKE_TIMEOUT = 10.0      # s a child waits for the client's request and its go-ahead
MAX_REQUEST = 1 << 20    # bytes: an environment is a few kB
_SOCKET_NAME = re.compile(r"[0-9a-f]{1,16}-[0-9a-f]{1,16}\.sock")
_CRED = struct.Struct("3i")      # SO_PEERCRED: pid, uid, gid


def check_socket_path(path: str) -> str:
    """A socket path as the client names it, or BadInput."""
    if not (os.path.isabs(path) and os.path.basename(os.path.dirname(path)) == "hookd"
            and _SOCKET_NAME.fullmatch(os.path.basename(path)) and os.path.normpath(path) == path):
        raise BadInput(f"not a hook server socket path: {path!r}")
    return path


def preload() -> None:
    """Import what any hook may import, so that a child imports nothing."""
    import importlib
    import pkgutil
    from .. import __path__ as package_path
    for mod in pkgutil.walk_packages(package_path, "slurm_mig."):
        if not mod.name.startswith(("slurm_mig.cli", "slurm_mig.__main__")):
            importlib.import_module(mod.name)
    for name in ("json", "subprocess", "syslog", "fcntl", "ClusterShell.NodeSet", "fractions",
                 "tomllib" if sys.version_info >= (3, 11) else "tomli"):
        importlib.import_module(name)
    import gc
    gc.collect()
    gc.freeze()           # a child's collections skip (and so do not copy) what is loaded


def installed_stamp():
    """What changes when slurm-mig is upgraded or reinstalled under the server."""
    from .. import __file__ as package_init
    return tuple((st.st_ino, st.st_mtime_ns) for st in (os.stat(package_init), os.stat(__file__)))


def serve(path: str, run: Callable[[List[str]], int], idle_exit: float = IDLE_EXIT) -> str:
    """Run hooks for clients of `path` until it should end, each by `run([verb])`
    (hooks/main.py's exit_status), which returns its exit status; returns why it ended.
    A spare child waits on the socket, so a hook does not wait for a fork:
    when it takes a connection it says so, and the server forks the next spare."""
    import fcntl
    import select
    from ..fsutil import safe_dir
    if os.geteuid() != 0:
        raise NodeProblem("the hook server runs hooks as root: start it as root")
    path = check_socket_path(path)
    safe_dir(os.path.dirname(path), 0o700, "the hook server's directory")
    lock = os.open(path[:-len(".sock")] + ".lock", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)       # one server per socket
    except OSError:
        os.close(lock)
        return "another server serves it"
    os.chdir("/")                        # pin no directory of the hook that started it
    preload()
    stamp = installed_stamp()
    taken_r, taken_w = os.pipe()         # a spare took a connection
    alive_r, alive_w = os.pipe()         # closed when the server ends: so does a waiting spare
    # SIGTERM only marks the end and wakes the loop (the wakeup fd): an exception raised
    # from the handler could land in a Python at-fork callback (logging has some), which
    # swallows it, and the server would go on.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    inode = None
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    old_wakeup = signal.set_wakeup_fd(wake_w)        # from here on, an end removes the socket
    fds = (lock, taken_r, alive_w, wake_r, wake_w)   # the children close them
    last = time.monotonic()
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(umask)
        inode = os.lstat(path).st_ino
        listener.listen(128)
        listener.setblocking(False)
        _fork_spare(listener, fds, taken_w, alive_r, run)
        while True:
            ready, _, _ = select.select([taken_r, wake_r], [], [], TICK)
            if wake_r in ready:
                os.read(wake_r, 512)
            if stopping:
                return "stopped"
            _reap()
            if taken_r in ready:
                os.read(taken_r, 64)
                last = time.monotonic()
                _fork_spare(listener, fds, taken_w, alive_r, run)
            why = ("its socket is gone" if _inode(path) != inode else
                   "slurm-mig's files changed" if installed_stamp() != stamp else
                   "idle" if time.monotonic() - last > idle_exit else "")
            if why:
                return why
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(old_wakeup)
        listener.close()
        if inode is not None and _inode(path) == inode:
            os.unlink(path)
        for fd in (alive_w, alive_r, taken_r, taken_w, lock, wake_r, wake_w):
            os.close(fd)


def _fork_spare(listener: socket.socket, servers_fds, taken_w: int, alive_r: int, run) -> None:
    """A child that waits for one connection, tells the server it took it, runs that hook and ends."""
    import select
    if os.fork():
        return
    status = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)         # before its fd closes: a signal must not write to a reused number
        for fd in servers_fds:
            os.close(fd)
        while True:
            ready, _, _ = select.select([listener, alive_r], [], [])
            if alive_r in ready:
                status = 0
                return
            try:
                conn, _ = listener.accept()
                break
            except BlockingIOError:
                continue
        os.write(taken_w, b"+")
        listener.close()
        os.close(taken_w)
        os.close(alive_r)
        conn.setblocking(True)
        status = _child(conn, run)
    finally:
        os._exit(status)


def _inode(path: str):
    try:
        return os.lstat(path).st_ino
    except OSError:
        return None


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _child(conn: socket.socket, run) -> int:
    """One hook run, in a child of the server; returns the child's exit status.
    Its setup overlaps the client's go-ahead, which it waits for last."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.setpgid(0, 0)
    conn.settimeout(TAKE_TIMEOUT)
    try:
        _, uid, _ = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
        if uid != 0:
            return 1
        verb, cwd, umask, env, fds = _read_request(conn)
        conn.sendall(b"+")
    except (OSError, ValueError):
        return 1
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        if fd > 2:
            os.close(fd)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")
    os.umask(umask)
    _set_environment(env)
    sys.argv = ["slurm-mig-hook", verb]
    from . import detached
    detached.fork_instead(run)
    try:
        if conn.recv(1) != b"+":
            return 0                     # the client runs it itself
    except OSError:
        return 0
    conn.settimeout(None)
    watch = _watch(conn)
    try:
        status = run([verb])
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:            # what would have ended the hook's own process
        import traceback
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    watch["finished"] = True
    detached.stdio_to_devnull()      # whoever reads the hook's output sees it end with the hook
    conn.sendall(b"%d" % status)
    conn.close()
    _stop_if_turned_off()
    return 0


def _set_environment(env) -> None:
    """os.environ becomes `env`, changing only what differs (the server's own
    came from slurmd as well)."""
    for name in [name for name in os.environb if name not in env]:
        del os.environb[name]
    for name, value in env.items():
        if os.environb.get(name) != value:
            os.environb[name] = value


def _read_request(conn: socket.socket):
    """(verb, cwd, umask, environment, [fd 0, 1, 2]) the client sent; ValueError if malformed."""
    data, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
    fds = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("the client did not send its standard streams")
    head, _, body = data.partition(b"\n")
    length = int(head) if head.isdigit() else -1
    if not 0 < length <= MAX_REQUEST:
        raise ValueError("malformed request")
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ValueError("truncated request")
        body += chunk
    fields = body.split(b"\0")
    if len(fields) < 4 or fields[0] != PROTOCOL or fields[1].decode("ascii", "replace") not in SERVED \
            or not re.fullmatch(rb"[0-7]{1,4}", fields[3]):
        raise ValueError("not a request of this protocol")
    env = {}
    for item in fields[4:]:
        name, eq, value = item.partition(b"=")
        if not eq or not name:
            raise ValueError("malformed environment")
        env[name] = value
    return fields[1].decode("ascii"), fields[2], int(fields[3], 8), env, fds


def _watch(conn: socket.socket) -> dict:
    """When the client goes before the hook ends (slurmd killed it: a timeout),
    the hook goes too, with whatever it started in its process group. The
    socket signals (SIGIO) when it turns readable: the client sends nothing
    more, so that is its end. Set "finished" once the hook has ended."""
    import fcntl
    state = {"finished": False}

    def client_gone(signum, frame):
        if state["finished"]:
            return
        try:
            if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return
        except BlockingIOError:
            return                       # still there
        except OSError:
            pass
        os.killpg(0, signal.SIGKILL)
    signal.signal(signal.SIGIO, client_gone)
    fd = conn.fileno()
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    client_gone(None, None)              # it may have gone before the signal was asked for
    return state


def _stop_if_turned_off() -> None:
    """`hook_server = false` in the config the hook read: the server ends."""
    from .. import config
    with contextlib.suppress(Exception):
        if not config.load().hook_server:
            os.kill(os.getppid(), signal.SIGTERM)
