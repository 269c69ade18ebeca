"""Test harness, never installed: a throwaway Slurm (Debian's slurm-wlm + munge)
of one or more nodes on this host, each a simulated MIG node behind the
slurm-mig hooks: what the demo and the end-to-end tests run.

Everything lives in one temporary directory: config, state, logs, munge
socket and key, each node's simulated GPUs (with their own /dev tree) and
slurm-mig settings. slurm-mig is what an admin installs: this checkout's
wheel in a venv of the cluster root's Python (harness/install.py), whose
hook scripts slurmd runs. Ports are picked free; another Slurm on the
machine is left alone. Root only (slurmd runs jobs
and hooks as root). The Slurm is the host's own or a newer one in a chroot
(harness/slurms.py); commands for the cluster run inside its root.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Tuple, Union

from . import install, slurms
from .accounting import Accounting

HERE = os.path.dirname(os.path.abspath(__file__))
Layout = Tuple[str, str]          # (mig-parted file, config name)


class ClusterError(RuntimeError):
    pass


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def _setting_lines(settings: Dict[str, object]) -> List[str]:
    """slurm-mig.toml lines for `settings` (None: left out)."""
    return [f"{k} = {json.dumps(v)}" for k, v in settings.items() if v is not None]


def _write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def _per_node(value, count: int) -> list:
    """One value for every node, or one per node."""
    values = list(value) if isinstance(value, list) else [value] * count
    if len(values) != count:
        raise ClusterError(f"{len(values)} values for {count} nodes")
    return values


def node_lines(path: str) -> Tuple[str, Dict[str, str]]:
    """(GresTypes= line, {node: its 'Gres=... Features=...'}) of a generated
    slurm.conf.node (NodeName= hostlists expanded)."""
    from ClusterShell.NodeSet import NodeSet
    with open(path, encoding="utf-8") as f:
        text = f.read()
    items = {node: m.group(2) for m in re.finditer(r"^NodeName=(\S+) (Gres=\S+ Features=\S+)$", text, re.M)
             for node in NodeSet(m.group(1))}
    return re.search(r"^GresTypes=\S+$", text, re.M).group(0), items


def node_line(path: str) -> Tuple[str, str]:
    """(GresTypes= line, 'Gres=... Features=...') of a one-node slurm.conf.node."""
    types, items = node_lines(path)
    (item,) = items.values()
    return types, item


class DevCluster:
    def __init__(self, gpus: Union[str, List[str]] = "2xH100-80GB", cpus: int = 16,
                 wait_for_room: float = 5.0, workdir: Optional[str] = None, keep: bool = False,
                 mode: Union[str, List[str]] = "dynamic", layout: Union[None, Layout, List[Layout]] = None,
                 slurm: Optional[slurms.Slurm] = None, nodes: int = 1,
                 constrain_devices: bool = False, accounting: bool = False, conf_edit=None,
                 settings: Optional[Dict[str, object]] = None):
        """gpus, mode and layout: one for all nodes or a list, one per node.
        Mode 'static' needs `layout`, applied on each node before Slurm
        starts. Static nodes among dynamic ones form partition `fixed` (the
        cluster description's static_partitions), the dynamic ones `debug`.
        Nodes are named migsim (one) or migsim1, migsim2, ... on 127.0.0.1,
        127.0.0.2, ... (Slurm's verified recipe for several slurmd on one host).
        constrain_devices: task/cgroup with ConstrainDevices (cgroup v1, host
        Slurm), and a node name of its own (Slurm's cgroup paths carry it).
        accounting: slurmdbd and MariaDB (harness/accounting.py), with the
        generated AccountingStorageTRES and TRESBillingWeights.
        conf_edit: slurm.conf text -> text, to start a deliberately broken cluster.
        settings: more slurm-mig settings for every node, in place before the
        files are generated (what gres-conf reads, job_submit.lua's among them)."""
        try:
            self.slurm = slurm or slurms.host()
        except slurms.Unavailable as e:
            raise ClusterError(str(e)) from None
        base = f"migcg{os.getpid()}" if constrain_devices else "migsim"
        self.nodes = [base] if nodes == 1 else [f"{base}{i}" for i in range(1, nodes + 1)]
        self.constrain_devices = constrain_devices
        self.node = self.nodes[0]
        self.gpus = dict(zip(self.nodes, _per_node(gpus, nodes)))
        self.layouts = dict(zip(self.nodes, _per_node(layout, nodes)))
        self.modes = dict(zip(self.nodes, _per_node(mode, nodes)))
        if any(m == "static" and self.layouts[n] is None for n, m in self.modes.items()):
            raise ClusterError("static mode needs a layout (file, config name)")
        # the cluster's mode: dynamic (job_submit.lua) when any node is
        self.mode = "dynamic" if "dynamic" in self.modes.values() else "static"
        # nodes whose files come from the cluster description, the others' from their own gres-conf
        self.described = [n for n in self.nodes if self.modes[n] == "dynamic" and not constrain_devices]
        self.cpus, self.wait_for_room, self.keep = cpus, wait_for_room, keep
        # a chroot sees the cluster directory at the same path (harness/slurms.RootView)
        self.dir = workdir or tempfile.mkdtemp(prefix="slurm-mig-cluster-",
                                               dir=None if self.slurm.host else "/tmp")
        self.hostname = socket.gethostname().split(".")[0]
        self.procs: Dict[str, subprocess.Popen] = {}
        self.view: Optional[slurms.RootView] = None
        self.root = self.slurm.root
        self.installed = self._install()
        self.conf = os.path.join(self.dir, "etc", "slurm.conf")
        self.bin = self.installed.bin("slurm-mig")
        self.slurm_calls = os.path.join(self.dir, "slurm-calls.log")
        self.accounting = None
        if accounting:
            try:
                self.accounting = Accounting(self.dir, self.slurm, self.hostname, self.munge_socket, _free_port)
            except slurms.Unavailable as e:
                raise ClusterError(str(e)) from None
        self.conf_edit = conf_edit or (lambda text: text)
        self.settings = dict(settings or {})

    def _install(self) -> install.Installed:
        """This checkout's wheel, installed for the cluster's Slurm root."""
        return install.for_slurm(self.slurm)

    def node_dir(self, *parts: str, node: Optional[str] = None) -> str:
        """A node's own files: slurm-mig.toml, gpus.json (+ gpus.root/), mig-state, mig-run."""
        return os.path.join(self.dir, "nodes", node or self.node, *parts)

    @property
    def munge_socket(self) -> str:
        return os.path.join(self.dir, "munge", "munge.sock")

    @property
    def state(self) -> str:
        return self.node_dir("gpus.json")

    # -- environment for commands run against this cluster ------------------
    def env_for(self, node: Optional[str] = None) -> Dict[str, str]:
        # No SLURMD_NODENAME: admin commands run as from a shell on the node,
        # where the host name differs from the node's Slurm name.
        return {**os.environ, "SLURM_CONF": self.conf,
                "SLURM_MIG_CONFIG": self.node_dir("slurm-mig.toml", node=node)}

    @property
    def env(self) -> Dict[str, str]:
        return self.env_for()

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            node: Optional[str] = None) -> subprocess.CompletedProcess:
        """A command in the cluster's root (its Slurm clients, slurm-mig as node `node`)."""
        p = subprocess.run(["chroot", self.root, *args], capture_output=True, text=True,
                           env=self.env_for(node), timeout=timeout)
        if check and p.returncode != 0:
            raise ClusterError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def slurm_mig(self, *args: str, check: bool = True, node: Optional[str] = None) -> subprocess.CompletedProcess:
        return self.run(self.bin, *args, check=check, node=node)

    def set_config(self, **settings) -> None:
        """Add (value not None) or drop settings in every node's slurm-mig.toml;
        the hooks read it at every run, so this takes effect for the next job."""
        for node in self.nodes:
            path = self.node_dir("slurm-mig.toml", node=node)
            with open(path, encoding="utf-8") as f:
                lines = [ln for ln in f.read().splitlines() if ln.split(" = ")[0] not in settings]
            lines += _setting_lines(settings)
            _write(path, "\n".join(lines) + "\n")

    # -- set-up -------------------------------------------------------------
    def start(self, daemons: bool = True) -> "DevCluster":
        """Lay the cluster out and start munged, slurmctld and the slurmd;
        daemons=False starts munged only (a configuration Slurm refuses)."""
        try:
            self.view = self._view()
            if self.view is not None:
                self.root = self.view.mount()
            self._layout()
            self._start_munge()
            if daemons:
                self._start_slurm()
        except BaseException:
            self.stop()
            raise
        return self

    def _view(self) -> Optional[slurms.RootView]:
        """A chroot Slurm's view of its root, with the install prefix."""
        return None if self.slurm.host else slurms.RootView(self.slurm.root, self.dir, [self.installed.prefix])

    def _folders(self) -> None:
        for d in ("etc", "state", "log", "hooks", "jobs", "slurm-bin"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        for node in self.nodes:
            os.makedirs(os.path.join(self.dir, "spool", node), exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(os.path.join(self.dir, "jobs"), 0o1777)      # jobs of other users write output here

    def _layout(self) -> None:
        self._folders()
        # The hooks reach Slurm through wrappers that log who asked (tests check
        # which jobs' hooks called Slurm at all).
        for tool in ("squeue", "scontrol", "sinfo", "sbatch", "scancel"):
            _write(os.path.join(self.dir, "slurm-bin", tool),
                   f'#!/bin/sh\necho "$SLURM_JOB_ID {tool} $*" >> {self.slurm_calls}\n'
                   f'exec /usr/bin/{tool} "$@"\n', 0o755)
        for node in self.nodes:
            self._node_layout(node)
        # Static nodes list their live instances, and device isolation needs
        # each node's own /dev: their files come from each node's gres-conf;
        # the others' from one cluster description, as an admin makes them.
        lines = {node: self._node_files(node) for node in self.nodes if node not in self.described}
        parts = [self.node_dir("conf", "gres.conf", node=node) for node in lines]
        if self.described:
            lines.update(self._cluster_files())
            parts.insert(0, self.generated("gres.conf"))
        with open(os.path.join(self.dir, "etc", "gres.conf"), "w", encoding="utf-8") as out:
            for part in parts:                         # one cluster-wide file, NodeName= records
                with open(part, encoding="utf-8") as f:
                    out.write(f.read())
        self._hooks()
        self._write_slurm_conf([lines[node] for node in self.nodes], self._hook_lines())

    def generated(self, name: str) -> str:
        """Where `slurm-mig gres-conf` wrote the file `name`: from the cluster
        description, else the first node's own."""
        return os.path.join(self.dir, "etc", "gen", name) if self.described else self.node_dir("conf", name)

    @property
    def static_partition(self) -> Optional[str]:
        """The partition of the static nodes of a cluster that has dynamic ones too."""
        return "fixed" if len(set(self.modes.values())) > 1 else None

    def _cluster_files(self) -> Dict[str, Tuple[str, str]]:
        """gres.conf, job_submit.lua and the node lines of the described
        nodes from a cluster description grouping alike nodes
        (etc/cluster.toml); File= paths in a /dev of the cluster's own, alike
        on every node as on a real cluster."""
        from ClusterShell.NodeSet import NodeSet
        alike: Dict[str, List[str]] = {}
        for node in self.described:
            alike.setdefault(self.gpus[node], []).append(node)
        description = os.path.join(self.dir, "etc", "cluster.toml")
        static = f'static_partitions = ["{self.static_partition}"]\n\n' if self.static_partition else ""
        _write(description, static + "".join(f'[[group]]\nnodes = "{NodeSet.fromlist(nodes)}"\ngpus = "{gpus}"\n\n'
                                             for gpus, nodes in alike.items()))
        dev = os.path.join(self.dir, "dev")
        os.makedirs(dev, exist_ok=True)
        for minor in range(max(sum(int(part.split("x")[0]) for part in g.split(",")) for g in alike)):
            os.mknod(os.path.join(dev, f"nvidia{minor}"), 0o666 | stat.S_IFCHR, os.makedev(195, minor))
        gen = os.path.dirname(self.generated("gres.conf"))
        self.slurm_mig("gres-conf", "--cluster", description, "--dev-root", dev, "--output", gen)
        for name in ("gres.conf", "job_submit.lua"):
            shutil.copy(os.path.join(gen, name), os.path.join(self.dir, "etc"))
        types, items = node_lines(self.generated("slurm.conf.node"))
        return {node: (types, items[node]) for node in self.described}

    def _write_slurm_conf(self, node_lines: List[Tuple[str, str]], hooks: str) -> None:
        """slurm.conf (and cgroup.conf) for the nodes' (GresTypes= line, Gres= item)."""
        addrs = [f"127.0.0.{i}" for i in range(1, len(self.nodes) + 1)]
        import jinja2
        with open(os.path.join(HERE, "slurm.conf.j2"), encoding="utf-8") as f:
            template = jinja2.Template(f.read(), keep_trailing_newline=True, trim_blocks=True)
        _write(self.conf, self.conf_edit(template.render(
            hostname=self.hostname, dir=self.dir, cpus=self.cpus, ctld_port=_free_port("127.0.0.1"),
            nodes=[{"name": n, "addr": a, "port": _free_port(a), "gres": gres}
                   for n, a, (_, gres) in zip(self.nodes, addrs, node_lines)],
            gres_types_line=max((types for types, _ in node_lines), key=len),     # gpu,shard,mig over mig
            partitions=self._partitions(), munge_socket=self.munge_socket,
            hooks=hooks.strip(), cgroup=self.constrain_devices, **self._accounting_lines())))
        if self.constrain_devices:
            _write(os.path.join(self.dir, "etc", "cgroup.conf"),
                   "CgroupPlugin=cgroup/v1\nConstrainDevices=yes\n")
        elif self.slurm.major >= 23:     # no cgroup tree in a chroot; 22.05 has no "disabled"
            _write(os.path.join(self.dir, "etc", "cgroup.conf"), "CgroupPlugin=disabled\n")

    def _partitions(self) -> Dict[str, List[str]]:
        """Partition -> nodes: `debug` (the default) and, with static nodes
        among dynamic ones, `fixed` for the static ones."""
        if self.static_partition is None:
            return {"debug": self.nodes}
        return {"debug": [n for n in self.nodes if self.modes[n] == "dynamic"],
                self.static_partition: [n for n in self.nodes if self.modes[n] == "static"]}

    def _accounting_lines(self) -> Dict[str, str]:
        """slurm.conf's accounting lines and the partition's extra options:
        with accounting, what `gres-conf` generated (slurm.conf.accounting)."""
        if self.accounting is None:
            return {"accounting": "AccountingStorageType=accounting_storage/none", "partition_extra": ""}
        with open(self.generated("slurm.conf.accounting"), encoding="utf-8") as f:
            text = f.read()
        tres = re.search(r"^AccountingStorageTRES=\S+$", text, re.M).group(0)
        return {"accounting": self.accounting.slurm_conf() + tres,
                "partition_extra": " " + re.search(r"^TRESBillingWeights=\S+$", text, re.M).group(0)}

    def _node_layout(self, node: str) -> None:
        """A node's simulated GPUs (with its static layout) and settings."""
        for d in ("mig-state", "mig-run", "conf"):
            os.makedirs(self.node_dir(d, node=node), exist_ok=True)
        state = self.node_dir("gpus.json", node=node)
        base = {"backend": f"sim:{state}", "state_dir": self.node_dir("mig-state", node=node),
                "run_dir": self.node_dir("mig-run", node=node), "wait_for_room": self.wait_for_room,
                "interactive_wait": self.wait_for_room, "room_interval": 0,
                "steer_return": 25,         # cred_expire (slurm.conf.j2) + 5, as slurm-mig doctor advises
                "mode": self.modes[node], "gres_conf": f"{self.dir}/etc/gres.conf",
                "slurm_bin_dir": f"{self.dir}/slurm-bin", "epilog_retries": 2, "epilog_retry_delay": 0.5}
        _write(self.node_dir("slurm-mig.toml", node=node),
               "".join(line + "\n" for line in _setting_lines({**base, **self.settings})))
        # the simulated node's own /dev and /proc (gpus.root/): distinct char devices
        self.slurm_mig("sim", "init", state, "--gpus", self.gpus[node], node=node)
        if self.modes[node] == "static":   # a copy: a chroot sees only the cluster directory
            layout = shutil.copy(self.layouts[node][0], self.node_dir("layout.yaml", node=node))
            self.slurm_mig("apply", "-f", layout, "-c", self.layouts[node][1], node=node)

    def _node_files(self, node: str) -> Tuple[str, str]:
        """A node's own generated Slurm config: (its GresTypes= line, its
        'Gres=... Features=...')."""
        self.slurm_mig("gres-conf", "--mode", self.modes[node], "--output", self.node_dir("conf", node=node),
                       "--node-name", node, node=node)
        if self.modes[node] == "dynamic":             # every node has the same GPU models here
            shutil.copy(self.node_dir("conf", "job_submit.lua", node=node), os.path.join(self.dir, "etc"))
        return node_line(self.node_dir("conf", "slurm.conf.node", node=node))

    def _hooks(self) -> None:
        """Prolog, TaskProlog and Epilog wrappers: slurmd's SLURMD_NODENAME picks
        the node's own settings (all slurmd share one slurm.conf), then the
        installed script runs as slurmd would run it, finding its
        slurm-mig-hook beside it."""
        known = "|".join(self.nodes)
        for name, script in (("prolog", "prolog/slurm-mig-prolog"),
                             ("task-prolog", "prolog/slurm-mig-task-prolog"),
                             ("epilog", "epilog/slurm-mig-epilog")):
            _write(os.path.join(self.dir, "hooks", name),
                   "#!/bin/sh\n"
                   f"case $SLURMD_NODENAME in {known}) ;; *) echo \"no node '$SLURMD_NODENAME'\" >&2; exit 1 ;; esac\n"
                   f"node={self.dir}/nodes/$SLURMD_NODENAME\n"
                   "export SLURM_MIG_CONFIG=$node/slurm-mig.toml SLURM_MIG_RUN_DIR=$node/mig-run\n"
                   f"exec {self.installed.hook_script(script)}\n", 0o755)

    def _hook_lines(self) -> str:
        """slurm.conf's hook lines: the wrappers, then the rest of the
        generated slurm.conf.hooks (JobSubmitPlugins, timeouts, PrologFlags)."""
        with open(self.generated("slurm.conf.hooks"), encoding="utf-8") as f:
            generated = [ln for ln in f.read().splitlines()
                         if ln.split("=")[0] not in ("Prolog", "TaskProlog", "Epilog")]
        return "".join(f"{param}={self.dir}/hooks/{name}\n"
                       for param, name in (("Prolog", "prolog"), ("TaskProlog", "task-prolog"),
                                           ("Epilog", "epilog"))) + "\n".join(generated)

    def _start_munge(self) -> None:
        """munged of this cluster only: its own key, socket, pid, log and seed."""
        munge_dir = os.path.join(self.dir, "munge")
        os.makedirs(munge_dir, exist_ok=True)
        uid, gid = self._munge_ids()
        key = os.path.join(munge_dir, "munge.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "wb") as f:
            f.write(os.urandom(1024))
        for path in (munge_dir, key):
            os.chown(path, uid, gid)
        os.chmod(munge_dir, 0o700)
        self._spawn("munged", ["chroot", "--userspec=munge:munge", self.root, "/usr/sbin/munged", "-F",
                               "--force", f"--socket={munge_dir}/munge.sock",
                               f"--pid-file={munge_dir}/munged.pid", f"--log-file={munge_dir}/munged.log",
                               f"--seed-file={munge_dir}/munged.seed", f"--key-file={key}"])
        self._wait(lambda: os.path.exists(f"{munge_dir}/munge.sock"), 20, "munged socket")

    def _munge_ids(self) -> Tuple[int, int]:
        """The munge user of the cluster's root (a chroot's ids may differ from the host's)."""
        with open(os.path.join(self.root, "etc", "passwd"), encoding="utf-8") as f:
            for line in f:
                fields = line.split(":")
                if fields[0] == "munge":
                    return int(fields[2]), int(fields[3])
        raise ClusterError(f"no munge user in {self.root}/etc/passwd: install munge")

    def _start_slurm(self) -> None:
        if self.accounting is not None:
            self.accounting.start_database(self._spawn, self._wait)
            self.accounting.start_slurmdbd(self.root, os.path.dirname(self.conf), self._spawn, self._wait, self.run)
        self._spawn("slurmctld", ["chroot", self.root, "/usr/sbin/slurmctld", "-D", "-c", "-f", self.conf])
        self._wait(lambda: "UP" in self.run("scontrol", "ping", check=False).stdout, 60, "slurmctld")
        for node in self.nodes:
            self._spawn(f"slurmd-{node}", ["chroot", self.root, "/usr/sbin/slurmd", "-D", "-N", node,
                                           "-f", self.conf])
        for node in self.nodes:
            self._wait(lambda: self.node_state(node) == "idle", 90, f"node {node} idle")

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
    def node_state(self, node: Optional[str] = None) -> str:
        p = self.run("sinfo", "-h", "-N", "-n", node or self.node, "-o", "%T", check=False)
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
                self._wait(lambda: self.epilog_done(job), 60, f"epilog of job {job}")
                return state
            time.sleep(0.3)
        raise ClusterError(f"job {job} still {self.job_state(job)} after {timeout:g}s")

    def epilog_done(self, job: str) -> bool:
        return not any(os.path.exists(self.node_dir("mig-run", f"{job}.env", node=n)) for n in self.nodes) and \
            "COMPLETING" not in self.run("scontrol", "show", "job", "-o", job, check=False).stdout

    def output(self, job: str) -> str:
        with open(os.path.join(self.dir, "jobs", f"{job}.out"), encoding="utf-8") as f:
            return f.read()

    # -- tear-down ------------------------------------------------------------
    def stop(self) -> None:
        for name in [f"slurmd-{n}" for n in self.nodes] + ["slurmctld", "slurmdbd", "mariadbd", "munged"]:
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
        if self.view is not None:
            self.view.unmount()
            self.view = None
        if not self.keep and not slurms.mounts_under(self.dir):
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
