"""Run a slurm-mig hook in the node's hook server, or else as a process of its own.

The Prolog and Epilog scripts run this with the install's python and `-I -S`:
no site directories, no environment-chosen modules, built-in modules only, so it
starts in a few milliseconds. It hands the hook to the hook server
(`slurm-mig-hook serve`, slurm_mig/hooks/server.py, which keeps slurm-mig's
modules loaded): a child of the server runs it with this process's environment,
working directory, umask and standard streams, and this exits with its status.
Without a server to take it (none yet, one that is not root's, a busy or gone
one) it execs the hook itself, telling it where a server would listen so that
it starts one. Protocol: slurm_mig/hooks/server.py.

usage: python3 -I -S hook-client.py HOOK VERB   (HOOK: the slurm-mig-hook to exec instead)
"""
import _socket
import os
import sys

PROTOCOL = b"slurm-mig-hookd 1"
TAKE_TIMEOUT = 5.0           # s for the server to take the hook; then the hook runs here
SOCKET_ENV = "SLURM_MIG_HOOKD"


def socket_path():
    """One server per node and install: the socket is named after this file
    (a new install, a new file); the directory is the run_dir slurmd's
    environment names, else the default one."""
    st = os.stat(__file__)
    run_dir = os.environ.get("SLURM_MIG_RUN_DIR") or "/run/slurm-mig"
    return f"{run_dir}/hookd/{st.st_dev:x}-{st.st_ino:x}.sock"


def handed_over(sock, path, verb):
    """Whether the server at `path` took the hook (then it runs there, and only there)."""
    sock.settimeout(TAKE_TIMEOUT)
    sock.connect(path)
    pid_uid_gid = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    if int.from_bytes(pid_uid_gid[4:8], sys.byteorder) != 0:
        return False                     # only root's server runs root's hooks
    umask = os.umask(0o077)
    os.umask(umask)
    fields = [PROTOCOL, verb.encode(), os.getcwdb(), b"%o" % umask]
    body = b"\0".join(fields + [k + b"=" + v for k, v in os.environb.items()])
    message = b"%d\n" % len(body) + body
    fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
    sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
    sock.sendall(message[sent:])
    if sock.recv(1) != b"+":
        return False
    sock.sendall(b"+")                   # the server runs it only once it has this
    return True


def status_from(sock):
    """The hook's exit status, sent when it ends."""
    sock.settimeout(None)
    reply = b""
    try:
        while True:
            chunk = sock.recv(16)
            if not chunk:
                break
            reply += chunk
    except OSError:
        pass
    if reply.isdigit():
        return int(reply)
    sys.stderr.write("slurm-mig: error: the hook server's child ended without a status\n")
    return 1


def main():
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__.rsplit("\n\n", 1)[1] + "\n")
        return 1
    hook, verb = sys.argv[1:]
    path = socket_path()
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        taken = handed_over(sock, path, verb)
    except OSError:
        taken = False
    if taken:
        return status_from(sock)
    sock.close()
    os.environ[SOCKET_ENV] = path
    os.execvp(hook, [hook, verb])


if __name__ == "__main__":
    sys.exit(main())
