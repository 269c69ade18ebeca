"""Test harness, never installed: a throwaway one-node Slurm (Debian's slurm-wlm + munge) with a simulated
MIG node behind the slurm-mig hooks: what the demo and the end-to-end tests run.

Everything lives in one temporary directory: config, state, logs, munge
socket, fake /dev/nvidiaN nodes. Ports are picked free; another Slurm on the
machine is left alone. Root only (slurmd runs jobs and hooks as root).
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))


class ClusterError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


class DevCluster:
    def __init__(self, gpus: str = "2xH100-80GB", cpus: int = 16, wait_for_room: float = 5.0,
                 workdir: Optional[str] = None, keep: bool = False, mode: str = "dynamic",
                 layout: Optional[Tuple[str, str]] = None, constrain_devices: bool = False):
        """mode 'static' needs `layout`: (mig-parted file, config name), applied first.
        constrain_devices: task/cgroup with ConstrainDevices (cgroup v1), and a
        node name of its own (Slurm's cgroup paths carry it)."""
        if mode == "static" and layout is None:
            raise ClusterError("static mode needs a layout (file, config name)")
        self.gpus, self.cpus, self.wait_for_room, self.keep = gpus, cpus, wait_for_room, keep
        self.mode, self.layout, self.constrain_devices = mode, layout, constrain_devices
        self.dir = workdir or tempfile.mkdtemp(prefix="slurm-mig-cluster-")
        self.node = f"migcg{os.getpid()}" if constrain_devices else "migsim"
        self.hostname = socket.gethostname().split(".")[0]
        self.procs: Dict[str, subprocess.Popen] = {}
        self.state = os.path.join(self.dir, "gpus.json")
        self.conf = os.path.join(self.dir, "etc", "slurm.conf")

    # -- environment for commands run against this cluster ------------------
    @property
    def env(self) -> Dict[str, str]:
        # No SLURMD_NODENAME: admin commands run as from a shell on the node,
        # where the host name differs from the node's Slurm name.
        return {**os.environ, "SLURM_CONF": self.conf,
                "SLURM_MIG_CONFIG": os.path.join(self.dir, "etc", "slurm-mig.toml")}

    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        p = subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def slurm_mig(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.bin, *args, check=check)

    def set_config(self, **settings) -> None:
        """Add (value not None) or drop settings in the cluster's slurm-mig.toml;
        the hooks read it at every run, so this takes effect for the next job."""
        import json
        path = os.path.join(self.dir, "etc", "slurm-mig.toml")
        with open(path, encoding="utf-8") as f:
            lines = [ln for ln in f.read().splitlines() if ln.split(" = ")[0] not in settings]
        lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items() if v is not None]
        _write(path, "\n".join(lines) + "\n")

    # -- set-up -------------------------------------------------------------
    def start(self) -> "DevCluster":
        if os.geteuid() != 0:
            raise ClusterError("the dev cluster runs slurmd and munged, so it needs root")
        for tool in ("slurmctld", "slurmd", "munged", "sbatch"):
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
                raise ClusterError(f"{tool} not found: install Debian's slurm-wlm and munge")
        try:
            self._layout()
            self._start_munge()
            self._start_slurm()
        except BaseException:
            self.stop()
            raise
        return self

    def _layout(self) -> None:
        for d in ("etc", "state", "spool", "log", "hooks", "bin", "jobs", "mig-state",
                  "mig-run"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(os.path.join(self.dir, "jobs"), 0o1777)      # jobs of other users write output here
        package_root = REPO
        self.bin = os.path.join(self.dir, "bin", "slurm-mig")
        self.hook_bin = os.path.join(self.dir, "bin", "slurm-mig-hook")
        for path, module in ((self.bin, "slurm_mig"), (self.hook_bin, "slurm_mig.hooks.main")):
            _write(path, f"#!/bin/sh\nPYTHONPATH={package_root}${{PYTHONPATH:+:$PYTHONPATH}} "
                         f"exec {sys.executable} -m {module} \"$@\"\n", 0o755)
        _write(os.path.join(self.dir, "etc", "slurm-mig.toml"),
               f'backend = "sim:{self.state}"\nstate_dir = "{self.dir}/mig-state"\n'
               f'run_dir = "{self.dir}/mig-run"\nwait_for_room = {self.wait_for_room}\n'
               f'mode = "{self.mode}"\ngres_conf = "{self.dir}/etc/gres.conf"\n'
               f'slurm_bin_dir = "{self.dir}/slurm-bin"\n'
               'epilog_retries = 2\nepilog_retry_delay = 0.5\n')
        # The hooks reach Slurm through wrappers that log who asked (tests check
        # which jobs' hooks called Slurm at all).
        self.slurm_calls = os.path.join(self.dir, "slurm-calls.log")
        os.makedirs(os.path.join(self.dir, "slurm-bin"), exist_ok=True)
        for tool in ("squeue", "scontrol"):
            real = shutil.which(tool) or f"/usr/bin/{tool}"
            _write(os.path.join(self.dir, "slurm-bin", tool),
                   f'#!/bin/sh\necho "$SLURM_JOB_ID {tool} $*" >> {self.slurm_calls}\n'
                   f'exec {real} "$@"\n', 0o755)
        # the simulated node's own /dev and /proc (gpus.root/): distinct char devices
        self.slurm_mig("sim", "init", self.state, "--gpus", self.gpus)
        hooks = {"prolog": ("prolog", "slurm-mig-prolog"),
                 "task-prolog": ("prolog", "slurm-mig-task-prolog"),
                 "epilog": ("epilog", "slurm-mig-epilog")}
        for name, (folder, script) in hooks.items():
            _write(os.path.join(self.dir, "hooks", name),
                   "#!/bin/sh\n"
                   f"export SLURM_MIG_CONFIG={self.dir}/etc/slurm-mig.toml SLURM_MIG_HOOK={self.hook_bin} "
                   f"SLURM_MIG_RUN_DIR={self.dir}/mig-run\n"
                   f"exec {os.path.join(REPO, folder, script)}\n", 0o755)
        if self.mode == "static":
            self._static_layout()
        self.slurm_mig("gres-conf", "--mode", self.mode, "--output", os.path.join(self.dir, "etc"),
                       "--node-name", self.node)
        with open(os.path.join(self.dir, "etc", "slurm.conf.node"), encoding="utf-8") as f:
            node_lines = f.read()
        gres_types = re.search(r"^GresTypes=\S+$", node_lines, re.M).group(0)
        gres = re.search(r"^NodeName=\S+ (Gres=\S+)$", node_lines, re.M).group(1)
        import jinja2
        with open(os.path.join(HERE, "slurm.conf.j2"), encoding="utf-8") as f:
            template = jinja2.Template(f.read(), keep_trailing_newline=True, trim_blocks=True)
        _write(self.conf, template.render(
            hostname=self.hostname, node=self.node, dir=self.dir, cpus=self.cpus,
            ctld_port=_free_port(), slurmd_port=_free_port(), gres=gres,
            gres_types_line=gres_types, munge_socket=os.path.join(self.dir, "munge", "munge.sock"),
            job_submit=self.mode == "dynamic", cgroup=self.constrain_devices))
        if self.constrain_devices:
            _write(os.path.join(self.dir, "etc", "cgroup.conf"),
                   "CgroupPlugin=cgroup/v1\nConstrainDevices=yes\n")

    def _static_layout(self) -> None:
        self.slurm_mig("apply", "-f", self.layout[0], "-c", self.layout[1])

    def _start_munge(self) -> None:
        munge_dir = os.path.join(self.dir, "munge")
        os.makedirs(munge_dir, exist_ok=True)
        pw = pwd.getpwnam("munge")
        os.chown(munge_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(munge_dir, 0o700)
        munged = shutil.which("munged") or "/usr/sbin/munged"
        self._spawn("munged", ["runuser", "-u", "munge", "--", munged, "-F", "--force",
                               f"--socket={munge_dir}/munge.sock",
                               f"--pid-file={munge_dir}/munged.pid",
                               f"--log-file={munge_dir}/munged.log",
                               f"--seed-file={munge_dir}/munged.seed",
                               "--key-file=/etc/munge/munge.key"])
        self._wait(lambda: os.path.exists(f"{munge_dir}/munge.sock"), 20, "munged socket")

    def _start_slurm(self) -> None:
        ctld = shutil.which("slurmctld") or "/usr/sbin/slurmctld"
        slurmd = shutil.which("slurmd") or "/usr/sbin/slurmd"
        self._spawn("slurmctld", [ctld, "-D", "-c", "-f", self.conf])
        self._wait(lambda: self.run("scontrol", "ping", check=False).returncode == 0
                   and "UP" in self.run("scontrol", "ping", check=False).stdout, 60, "slurmctld")
        self._spawn("slurmd", [slurmd, "-D", "-N", self.node, "-f", self.conf])
        self._wait(lambda: self.node_state() == "idle", 90, "node idle")

    def _spawn(self, name: str, argv: List[str]) -> None:
        log = open(os.path.join(self.dir, "log", f"{name}.out"), "ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)
        log.close()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise ClusterError(f"{name} exited ({p.returncode}) while waiting for {what}; "
                                       f"see {self.dir}/log")
            if ready():
                return
            time.sleep(0.3)
        raise ClusterError(f"timed out after {timeout:g}s waiting for {what}; see {self.dir}/log")

    # -- jobs -----------------------------------------------------------------
    def node_state(self) -> str:
        p = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False)
        return p.stdout.strip()

    def sbatch(self, *args: str, script: str) -> str:
        path = os.path.join(self.dir, "jobs", f"job-{time.monotonic_ns()}.sh")
        _write(path, "#!/bin/sh\n" + script + "\n", 0o755)
        p = self.run("sbatch", "--parsable", "-o", os.path.join(self.dir, "jobs", "%j.out"),
                     *args, path, check=False)
        if p.returncode != 0:
            raise ClusterError(p.stderr.strip())
        return p.stdout.strip().split(";")[0]

    def job_state(self, job: str) -> str:
        p = self.run("scontrol", "show", "job", "-o", job, check=False)
        m = re.search(r"JobState=(\S+)", p.stdout)
        return m.group(1) if m else "GONE"

    def wait_job(self, job: str, timeout: float = 120) -> str:
        done = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "GONE")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.job_state(job)
            if state in done:
                # The epilog runs after the job is marked done; wait for it too.
                self._wait(lambda: self.node_state() in ("idle", "mixed", "allocated", "drained",
                                                         "draining", "down") and
                           self.epilog_done(job), 60, f"epilog of job {job}")
                return state
            time.sleep(0.3)
        raise ClusterError(f"job {job} still {self.job_state(job)} after {timeout:g}s")

    def epilog_done(self, job: str) -> bool:
        return not os.path.exists(os.path.join(self.dir, "mig-run", f"{job}.env")) and \
            "COMPLETING" not in self.run("scontrol", "show", "job", "-o", job, check=False).stdout

    def output(self, job: str) -> str:
        with open(os.path.join(self.dir, "jobs", f"{job}.out"), encoding="utf-8") as f:
            return f.read()

    # -- tear-down ------------------------------------------------------------
    def stop(self) -> None:
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=15)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                with __import__("contextlib").suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "DevCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def slurm_calls_of(cluster: "DevCluster", job: str) -> List[str]:
    """The Slurm client calls the hooks made for `job`."""
    if not os.path.exists(cluster.slurm_calls):
        return []
    with open(cluster.slurm_calls, encoding="utf-8") as f:
        return [line.split(" ", 1)[1].strip() for line in f if line.split(" ", 1)[0] == job]
