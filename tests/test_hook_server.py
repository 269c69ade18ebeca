"""The hook server (slurm_mig/hooks/server.py) and its client (client/hook-client.py):
a Prolog or Epilog run through them does what it does alone, and anything
wrong with the server sends the hook back to a process of its own."""
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from slurm_mig.node.jobfiles import task_prolog
from slurm_mig.node.ledger import Ledger

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIENT = os.path.join(REPO, "client", "hook-client.py")


@pytest.fixture
def node(make_node, tmp_path):
    """A simulated node, the environment slurmd gives its hooks, and a stand-in
    for slurm-mig-hook (the hook run alone) that counts its runs."""
    cfg, state = make_node("1xH100-80GB")
    public = tempfile.mkdtemp(prefix="slurm-mig-run-")    # a run_dir any user can reach, as /run/slurm-mig
    os.chmod(public, 0o755)
    cfg = cfg._replace(run_dir=os.path.join(public, "run"))
    config = tmp_path / "config.toml"
    config.write_text(f'backend = "{cfg.backend}"\nstate_dir = "{cfg.state_dir}"\nrun_dir = "{cfg.run_dir}"\n'
                      f'dev_root = "{cfg.dev_root}"\nproc_root = "{cfg.proc_root}"\n'
                      'wait_for_room = 0\nroom_field = ""\n')
    alone = tmp_path / "alone-runs"
    hook = tmp_path / "slurm-mig-hook"
    hook.write_text(f'#!/bin/sh\necho "$1" >> {alone}\necho "$SLURM_MIG_HOOKD" > {alone}.socket\n'
                    f'exec {sys.executable} -m slurm_mig.hooks.main "$@"\n')
    hook.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": REPO, "SLURM_MIG_CONFIG": str(config),
           "SLURM_MIG_RUN_DIR": cfg.run_dir, "SLURMD_NODENAME": "node1"}
    yield cfg, env, str(hook), alone
    for pid in servers(cfg.run_dir):
        os.kill(pid, signal.SIGTERM)
    wait_for(lambda: servers(cfg.run_dir) == [])
    shutil.rmtree(public)


def servers(run_dir):
    """Pids of the hook servers serving sockets under `run_dir` (not their children)."""
    return [pid for pid in _serve_processes() if _socket_env(pid).startswith(run_dir.encode() + b"/")
            and _parent(pid) not in _serve_processes()]


def _serve_processes():
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[-3:-1] == [b"slurm_mig.hooks.main", b"serve"]:
                    found.append(int(pid))
        except OSError:
            continue
    return found


def _socket_env(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(item.partition(b"=")[::2] for item in f.read().split(b"\0"))
    except OSError:
        return b""
    return env.get(b"SLURM_MIG_HOOKD", b"")


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def children(pid):
    return [p for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if _parent(p) == pid]


def hook(env, hook_path, verb, job, **extra):
    return subprocess.run([sys.executable, "-I", "-S", CLIENT, hook_path, verb],
                          env={**env, "SLURM_JOB_ID": job, **extra}, capture_output=True, text=True, timeout=60)


def alone_runs(alone):
    return alone.read_text().split() if alone.exists() else []


def wait_for(check, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def socket_of(cfg):
    d = os.path.join(cfg.run_dir, "hookd")
    names = [n for n in os.listdir(d) if n.endswith(".sock")] if os.path.isdir(d) else []
    return os.path.join(d, names[0]) if names else None


def started(cfg, env, hook_path, alone):
    """Run one Epilog alone (no server yet): it starts the server."""
    p = hook(env, hook_path, "epilog", "1")
    assert p.returncode == 0, p.stderr
    assert alone_runs(alone) == ["epilog"]
    assert wait_for(lambda: socket_of(cfg) and _connectable(socket_of(cfg))), "no hook server came up"
    return socket_of(cfg)


def _connectable(path):
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def test_the_first_hook_runs_alone_and_starts_the_server_which_runs_the_next(node):
    cfg, env, hook_path, alone = node
    path = started(cfg, env, hook_path, alone)
    st = os.stat(os.path.dirname(path))
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    p = hook(env, hook_path, "prolog", "7", SLURM_MIG_REQUEST="mig:3g.40gb:1,mig:1g.10gb:1")
    assert p.returncode == 0, p.stderr
    q = hook(env, hook_path, "epilog", "7")
    assert q.returncode == 0, q.stderr
    assert alone_runs(alone) == ["epilog"]          # the server ran both
    rec = Ledger(cfg.state_dir).get("7")
    assert rec.state == "released" and len(rec.instances) == 2
    assert task_prolog(cfg.run_dir, "7") == ("", 0)


def test_a_burst_of_hooks_each_runs_once_in_the_server(node):
    """24 Prologs handed over at once (the spare children are forked one after
    another): each job gets its own instance, then each Epilog frees it."""
    cfg, env, hook_path, alone = node
    started(cfg, env, hook_path, alone)
    jobs = [str(j) for j in range(100, 124)]

    def burst(verb):
        procs = [subprocess.Popen([sys.executable, "-I", "-S", CLIENT, hook_path, verb], stderr=subprocess.PIPE,
                                  env={**env, "SLURM_JOB_ID": job, "SLURM_MIG_REQUEST": "mig:1g.10gb:1"})
                 for job in jobs]
        return [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in burst("prolog"))
    bound = [j for j in jobs if task_prolog(cfg.run_dir, j)[1] == 0]
    assert len(bound) == 7            # a 1xH100 node holds 7 x 1g.10gb; the others failed alone
    assert len({open(os.path.join(cfg.run_dir, f"{j}.env")).read() for j in bound}) == 7
    assert all(code == 0 for code, _ in burst("epilog"))
    assert Ledger(cfg.state_dir).live() == []
    assert alone_runs(alone) == ["epilog"]


def test_a_served_hook_has_the_clients_environment_streams_and_status(node):
    cfg, env, hook_path, alone = node
    started(cfg, env, hook_path, alone)
    p = hook(env, hook_path, "prolog", "8", SLURM_MIG_REQUEST="mig:3g.40gb:1")
    assert p.returncode == 0 and "MIG-" in open(os.path.join(cfg.run_dir, "8.env")).read()
    p = subprocess.run([sys.executable, "-I", "-S", CLIENT, hook_path, "prolog"], env=env,
                       capture_output=True, text=True, timeout=60)          # no SLURM_JOB_ID
    assert p.returncode == 1 and "SLURM_JOB_ID is not set" in p.stderr
    p = hook(env, hook_path, "prolog", "9", SLURM_MIG_REQUEST="mig:7g.80gb:1")     # no room: the job fails alone
    assert p.returncode == 0
    assert task_prolog(cfg.run_dir, "9")[1] == 1
    assert alone_runs(alone) == ["epilog"]


def test_only_the_prolog_and_epilog_are_handed_over(node):
    cfg, env, hook_path, alone = node
    started(cfg, env, hook_path, alone)
    assert hook(env, hook_path, "stuck-wait", "5").returncode == 0
    assert alone_runs(alone) == ["epilog", "stuck-wait"]


def test_without_a_server_or_with_one_turned_off_hooks_run_alone(node, tmp_path):
    cfg, env, hook_path, alone = node
    with open(env["SLURM_MIG_CONFIG"], "a") as f:
        f.write("hook_server = false\n")
    for job in ("1", "2"):
        assert hook(env, hook_path, "epilog", job).returncode == 0
    time.sleep(1)
    assert alone_runs(alone) == ["epilog", "epilog"] and socket_of(cfg) is None


def test_a_hook_that_reads_hook_server_false_ends_the_server(node):
    cfg, env, hook_path, alone = node
    path = started(cfg, env, hook_path, alone)
    with open(env["SLURM_MIG_CONFIG"], "a") as f:
        f.write("hook_server = false\n")
    # On a loaded machine a client may give up on the server (its TAKE_TIMEOUT) and run
    # the hook alone, as it should; the server ends only once a hook it ran reads the file.
    for job in ("2", "3", "4"):
        ran_alone = len(alone_runs(alone))
        assert hook(env, hook_path, "epilog", job).returncode == 0
        if len(alone_runs(alone)) == ran_alone:
            break
    else:
        pytest.fail("no hook reached the server")
    assert wait_for(lambda: not os.path.exists(path) and servers(cfg.run_dir) == []), "the server went on"
    ran_alone = len(alone_runs(alone))
    assert hook(env, hook_path, "epilog", "9").returncode == 0
    assert len(alone_runs(alone)) == ran_alone + 1 and servers(cfg.run_dir) == []   # alone, and none started


def test_the_server_ends_when_its_socket_is_removed(node):
    cfg, env, hook_path, alone = node
    path = started(cfg, env, hook_path, alone)
    assert len(servers(cfg.run_dir)) == 1
    os.unlink(path)
    assert wait_for(lambda: servers(cfg.run_dir) == [], timeout=15), "the server outlived its socket"


def test_the_server_ends_when_slurm_mig_is_reinstalled_under_it(node):
    """(Here: the server module's time changes, as a reinstall changes it.)"""
    from slurm_mig.hooks import server
    cfg, env, hook_path, alone = node
    started(cfg, env, hook_path, alone)
    st = os.stat(server.__file__)
    os.utime(server.__file__)
    try:
        assert wait_for(lambda: servers(cfg.run_dir) == [], timeout=15), "the server ran on"
    finally:
        os.utime(server.__file__, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_client_killed_takes_its_hook_with_it(node):
    """slurmd kills a hook past PrologEpilogTimeout: the server's child running
    it goes too, and the server serves the next one."""
    cfg, env, hook_path, alone = node
    started(cfg, env, hook_path, alone)
    with open(env["SLURM_MIG_CONFIG"], "r+") as f:
        text = f.read().replace("wait_for_room = 0", "wait_for_room = 600")
        f.seek(0)
        f.write(text)
    assert hook(env, hook_path, "prolog", "10", SLURM_MIG_REQUEST="mig:7g.80gb:1").returncode == 0
    client = subprocess.Popen([sys.executable, "-I", "-S", CLIENT, hook_path, "prolog"],
                              env={**env, "SLURM_JOB_ID": "11", "SLURM_MIG_REQUEST": "mig:1g.10gb:1"})
    server = servers(cfg.run_dir)[0]
    assert wait_for(lambda: len(children(server)) == 2), "the hook did not start"     # it, and a new spare
    time.sleep(1)
    assert client.poll() is None, "the Prolog did not wait for room"
    client.send_signal(signal.SIGKILL)
    client.wait()
    assert wait_for(lambda: len(children(server)) == 1), "the hook outlived its client"
    assert Ledger(cfg.state_dir).get("11") is None or not Ledger(cfg.state_dir).get("11").instances
    assert hook(env, hook_path, "epilog", "10").returncode == 0
    assert alone_runs(alone) == ["epilog"]


PROBE = """
import importlib.util, socket, sys
spec = importlib.util.spec_from_file_location("client", sys.argv[1])
client = importlib.util.module_from_spec(spec)
spec.loader.exec_module(client)
s = socket.socket(socket.AF_UNIX)
try:
    taken = client.handed_over(s, sys.argv[2], sys.argv[3])
except OSError:          # as the client: not taken
    taken = False
if taken and sys.argv[4] == "go":
    print("ran", client.status_from(s))
else:
    print("taken" if taken else "refused")
"""


@pytest.fixture
def public_client():
    """The client where any user can read it (the checkout may be root's alone)."""
    d = tempfile.mkdtemp(prefix="slurm-mig-client-")
    os.chmod(d, 0o755)
    shutil.copy(CLIENT, d)
    yield os.path.join(d, os.path.basename(CLIENT))
    shutil.rmtree(d)


def probe(client, path, verb, job, env, go="go", user=None):
    """The client's own request, from a process of `user` (the system python:
    anyone can run it); `go`: anything else gives up once the server took it."""
    p = subprocess.run(["/usr/bin/python3", "-c", PROBE, client, path, verb, go], user=user,
                       env={**env, "SLURM_JOB_ID": job, "SLURM_MIG_REQUEST": "mig:1g.10gb:1"},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_only_roots_clients_are_served(node, public_client):
    """Even with the directory and socket opened to all, the server's child
    runs nothing for a peer that is not root."""
    cfg, env, hook_path, alone = node
    path = started(cfg, env, hook_path, alone)
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o777)
    assert probe(public_client, path, "prolog", "12", env, user="nobody") == "refused"
    assert Ledger(cfg.state_dir).get("12") is None
    assert probe(public_client, path, "prolog", "12", env) == "ran 0"
    assert Ledger(cfg.state_dir).get("12").state == "bound"


def test_a_client_that_gives_up_runs_the_hook_itself_and_the_server_does_not(node, public_client):
    cfg, env, hook_path, alone = node
    path = started(cfg, env, hook_path, alone)
    assert probe(public_client, path, "prolog", "13", env, go="no") == "taken"
    time.sleep(1)
    assert Ledger(cfg.state_dir).get("13") is None
    assert hook(env, hook_path, "prolog", "14", SLURM_MIG_REQUEST="mig:1g.10gb:1").returncode == 0
    assert Ledger(cfg.state_dir).get("14").state == "bound"       # and it serves the next


def test_a_socket_that_is_not_roots_is_not_used(node):
    """A server of another user gets no hook: the client runs it alone (and the
    server it asks for refuses a directory others can write)."""
    cfg, env, hook_path, alone = node
    with open(env["SLURM_MIG_CONFIG"], "a") as f:
        f.write("hook_server = false\n")
    assert hook(env, hook_path, "epilog", "1").returncode == 0      # alone: where a server would listen
    path = open(f"{alone}.socket").read().strip()
    with open(env["SLURM_MIG_CONFIG"], "r+") as f:
        text = f.read().replace("hook_server = false\n", "")
        f.seek(0)
        f.truncate()
        f.write(text)
    os.makedirs(os.path.dirname(path))
    os.chmod(os.path.dirname(path), 0o777)
    fake = subprocess.Popen(["/usr/bin/python3", "-c",
                             "import socket,sys,os; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]);"
                             "os.chmod(sys.argv[1], 0o777); s.listen(); c,_=s.accept(); c.recv(65536);"
                             "c.sendall(b'+'); c.recv(1); c.sendall(b'0')", path], user="nobody")
    try:
        assert wait_for(lambda: os.path.exists(path))
        assert hook(env, hook_path, "epilog", "2").returncode == 0
        assert alone_runs(alone) == ["epilog", "epilog"]       # run alone, not "served" by nobody
        time.sleep(1)
        assert servers(cfg.run_dir) == []
    finally:
        fake.kill()
        fake.wait()
