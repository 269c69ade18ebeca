"""Per-job device isolation, opt-in (`isolate_devices`; docs/facts.md, MIG: isolation;
not yet run on hardware).

CUDA_VISIBLE_DEVICES is only a hint. To use a MIG instance a process must
hold an open fd of its GI and CI capability nodes
(/dev/nvidia-caps/nvidia-cap<minor>), which the driver registers 0444. So:

- setup() (`slurm-mig node-setup`, at boot): every GI/CI cap node of the
  local GPUs exists root:root 0400, so no user opens one;
- give() (Prolog, after creating the instance): its two nodes root-only,
  then no process of another user may hold one open (an fd opened earlier
  stays valid for whatever instance gets that minor later; any fd counts,
  also O_PATH), DeviceFileModify 0 when the module parameter
  ModifyDeviceFiles=0 is not in effect (nvidia-modprobe would otherwise put
  a changed node back to 0444), then owner uid:gid, mode 0400;
- take_back() (Epilog, before destroying): root:root 0400 again.

Root's rules: nothing is reached through a symlink. The caps directory is
opened O_NOFOLLOW and must be root's and writable by nobody else; each node
is opened O_PATH|O_NOFOLLOW in it and must be the char device it claims to
be (nvidia-caps major, its minor); owner and mode are set on that open file
(through /proc/self/fd: fchown refuses O_PATH fds). Every id is checked.
Same-user jobs still reach each other's instances; root always can.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import stat
from typing import TYPE_CHECKING, Dict, Iterator, List, Mapping, NamedTuple, Optional, Set, Tuple

from ..core import caps
from ..errors import NodeProblem
from ..fsutil import os_errors, os_problem, safe_dir
from ..log import JobLog
from .procfs import read_mig_minors

if TYPE_CHECKING:
    from ..core.view import Held
    from .context import NodeContext
    from ..core.lifecycle import Record

ROOT_ONLY = 0o400
MAX_ID = 2 ** 32 - 2            # (uid_t)-1 means "leave unchanged" to chown: never a job's id
PROCESSES = "/proc"             # the host's processes, also for a simulated node
_FD_DIR = "/proc/self/fd"       # where an O_PATH fd can be chowned and chmodded


def _id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise NodeProblem(f"{what} {value!r} is not a valid id")
    return value


def _read(path: str) -> str:
    """A driver text file, not through a symlink."""
    with os_errors(path, "read"):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with open(fd, encoding="ascii", errors="replace") as f:
            return f.read()


def caps_major(proc_root: str) -> int:
    path = os.path.join(proc_root, "devices")
    major = caps.char_major(_read(path))
    if major is None:
        raise NodeProblem(f"{path} lists no {caps.CAPS_DEVICE} driver; is the NVIDIA driver loaded?")
    return major


def modify_device_files(proc_root: str) -> Optional[int]:
    """NVreg_ModifyDeviceFiles in effect (0 or 1), None when the driver does not say."""
    try:
        return caps.field(_read(caps.params_path(proc_root)), "ModifyDeviceFiles")
    except NodeProblem:
        return None


class _Nodes:
    """The caps directory and nodes in it, each opened O_PATH|O_NOFOLLOW and
    checked to be the char device `major:minor`; closed on exit."""

    def __init__(self, dev_root: str, major: int):
        self.dir = os.path.join(dev_root, caps.CAPS_DIR)
        self.major, self.fds = major, {}
        with os_errors(self.dir, "open"):
            self.dir_fd = os.open(self.dir, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        st = os.fstat(self.dir_fd)
        if st.st_uid != 0 and st.st_uid != os.geteuid() or st.st_mode & 0o022:
            self.close()
            raise NodeProblem(f"{self.dir} is owned by uid {st.st_uid} (mode "
                              f"{st.st_mode & 0o7777:04o}): only root may write there")

    def path(self, minor: int) -> str:
        return caps.node_path(os.path.dirname(self.dir), minor)

    def open(self, minor: int) -> os.stat_result:
        """Open and check the node of `minor`; its stat (FileNotFoundError if missing)."""
        fd = os.open(f"nvidia-cap{minor}", os.O_PATH | os.O_NOFOLLOW, dir_fd=self.dir_fd)
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(self.major, minor):
            os.close(fd)
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else (
                f"char device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
                if stat.S_ISCHR(st.st_mode) else "not a char device")
            raise NodeProblem(f"{self.path(minor)} is {what}, not the nvidia-caps device "
                              f"{self.major}:{minor}: remove it and run `slurm-mig node-setup`")
        self.fds[minor] = fd
        return st

    def create(self, minor: int, mode: int) -> None:
        with os_errors(self.path(minor), "create"):
            os.mknod(f"nvidia-cap{minor}", stat.S_IFCHR | mode, os.makedev(self.major, minor),
                     dir_fd=self.dir_fd)

    def set(self, minor: int, uid: int, gid: int, mode: int = ROOT_ONLY) -> None:
        """Mode first (drop any group/other bits), then owner: never a moment
        where both the old and the new owner could open it."""
        target = f"{_FD_DIR}/{self.fds[minor]}"
        with os_errors(self.path(minor), "set the owner of"):
            os.chmod(target, mode)
            os.chown(target, uid, gid)

    def close(self) -> None:
        for fd in [self.dir_fd, *self.fds.values()]:
            os.close(fd)
        self.fds = {}


@contextlib.contextmanager
def _opened(cfg, minors: List[int]) -> Iterator[_Nodes]:
    nodes = _Nodes(cfg.dev_root, caps_major(cfg.proc_root))
    try:
        for m in minors:
            try:
                nodes.open(m)
            except FileNotFoundError:
                raise NodeProblem(f"{nodes.path(m)} is missing: run `slurm-mig node-setup`") from None
            except OSError as e:
                raise os_problem(nodes.path(m), e, "open") from e
        yield nodes
    finally:
        nodes.close()


def holders(rdevs: Set[int], allowed: Set[int], proc: str = PROCESSES) -> List[Tuple[int, int, int]]:
    """(pid, uid, rdev): processes with a uid outside `allowed` holding one of
    these char devices open. An fd's target is stat()ed through its magic link
    (nothing is opened); pipes, sockets and other non-paths are skipped."""
    found = []
    for pid in filter(str.isdigit, os.listdir(proc)):
        try:
            fds = os.listdir(f"{proc}/{pid}/fd")
        except (FileNotFoundError, ProcessLookupError):
            continue                                     # exited meanwhile
        except PermissionError as e:
            raise NodeProblem(f"cannot read {proc}/{pid}/fd: the holder check needs root") from e
        hit = None
        for fd in fds:
            try:
                if not os.readlink(f"{proc}/{pid}/fd/{fd}").startswith("/"):
                    continue
                st = os.stat(f"{proc}/{pid}/fd/{fd}")
            except OSError:
                continue                                 # closed meanwhile
            if stat.S_ISCHR(st.st_mode) and st.st_rdev in rdevs:
                hit = st.st_rdev
                break
        if hit is not None:
            uids = _uids(f"{proc}/{pid}/status")
            if uids - allowed:
                found.append((int(pid), min(uids - allowed), hit))
    return found


def _uids(status_path: str) -> Set[int]:
    """Real, effective, saved and filesystem uids of a process."""
    try:
        for line in _read(status_path).splitlines():
            if line.startswith("Uid:"):
                return {int(u) for u in line.split()[1:]}
    except NodeProblem:
        pass                        # exited after its fd was seen: it holds nothing now
    return set()


def job_gid(uid: int, env: Mapping[str, str] = os.environ) -> int:
    """The job's gid: SLURM_JOB_GID from slurmd (when SLURM_JOB_UID is this
    uid), else the uid's primary group."""
    gid = env.get("SLURM_JOB_GID", "")
    if env.get("SLURM_JOB_UID") == str(uid) and gid.isdigit():
        return _id(int(gid), "SLURM_JOB_GID")
    try:
        return _id(pwd.getpwuid(uid).pw_gid, "primary gid")
    except KeyError:
        raise NodeProblem(f"uid {uid} has no passwd entry and slurmd gave no SLURM_JOB_GID") from None


def cap_minors(ctx: "NodeContext", entries: List["Held"]) -> Dict["Held", Dict[int, str]]:
    """Cap minor -> mig-minors key of the GI and CI of each entry that names a
    live instance. Cap nodes follow instances: an entry whose instance is gone
    has nothing of its own any more (its GI id may be another job's by now)."""
    minors = read_mig_minors(ctx.cfg.proc_root)
    gpus = {g.index: g for g in ctx.devices.driver.gpus()}
    out = {}
    for e in entries:
        g = gpus.get(e.gpu)
        inst = g and next((i for i in g.instances if e.names(i)), None)
        if inst is None:
            continue
        keys = [caps.cap_key(g.minor, inst.gi_id)] + (
            [caps.cap_key(g.minor, inst.gi_id, inst.ci_id)] if inst.ci_id is not None else [])
        missing = [k for k in keys if k not in minors]
        if missing:
            raise NodeProblem(f"mig-minors has no entry for {missing[0]}")
        out[e] = {minors[k]: k for k in keys}
    return out


def give(ctx: "NodeContext", rec: "Record") -> List[str]:
    """Hand the record's cap nodes to its job (see the module doc); returns
    their paths. Raises NodeProblem naming what stands in the way."""
    if rec.uid is None:
        raise NodeProblem("isolate_devices needs the job's uid (SLURM_JOB_UID)")
    uid = _id(rec.uid, "the job's uid")
    gid = job_gid(uid)
    keys = {m: k for per_entry in cap_minors(ctx, rec.instances).values() for m, k in per_entry.items()}
    with _opened(ctx.cfg, sorted(keys)) as nodes:
        for m in keys:
            nodes.set(m, 0, 0)              # from here on nobody new can open them
        rdevs = {os.makedev(nodes.major, m): m for m in keys}
        foreign = holders(set(rdevs), {0, uid})
        if foreign:
            pid, who, rdev = foreign[0]
            raise NodeProblem(f"pid {pid} (uid {who}) holds {nodes.path(rdevs[rdev])} open "
                              f"({len(foreign)} foreign holder(s)); not handed over")
        if modify_device_files(ctx.cfg.proc_root) != 0:
            for key in keys.values():
                _no_modify(caps.proc_path(ctx.cfg.proc_root, key))
        for m in keys:
            nodes.set(m, uid, gid)
        return [nodes.path(m) for m in sorted(keys)]


def _no_modify(path: str) -> None:
    """DeviceFileModify 0 for one capability, as NVIDIA documents it (u+w on
    its /proc file, then write), checked by reading it back."""
    with os_errors(path, "write DeviceFileModify to"):
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NodeProblem(f"{path} is not the driver's capability file")
            os.chmod(f"{_FD_DIR}/{fd}", stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
            wfd = os.open(f"{_FD_DIR}/{fd}", os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(wfd, b"DeviceFileModify: 0\n")
            finally:
                os.close(wfd)
        finally:
            os.close(fd)
    if caps.field(_read(path), "DeviceFileModify") != 0:
        raise NodeProblem(f"{path} still says DeviceFileModify 1 after writing 0")


def take_back(ctx: "NodeContext", rec: "Record") -> List["Held"]:
    """With isolate_devices, the cap nodes of the record's live instances back
    to root:root 0400; returns the entries whose nodes could not be: those
    must not be destroyed (the next instance with that minor would be open to
    the job's user), they stay the record's for reconcile to retry."""
    if not ctx.cfg.isolate_devices:
        return []
    jl = JobLog(rec.job)
    try:
        per_entry = cap_minors(ctx, rec.instances)
    except NodeProblem as e:
        jl.error("cannot find the cap nodes to take back: %s", e)
        return list(rec.instances)
    blocked = []
    for entry, keys in per_entry.items():
        try:
            with _opened(ctx.cfg, sorted(keys)) as nodes:
                for m in keys:
                    nodes.set(m, 0, 0)
        except NodeProblem as e:
            jl.error("cannot take back the cap nodes of GPU %d GI %s: %s", entry.gpu, entry.gi_id, e)
            blocked.append(entry)
    return blocked


def hand_over(ctx: "NodeContext", rec: "Record") -> bool:
    """With isolate_devices, give() the job its cap nodes, or fail the job
    alone: its record turns 'releasing', so its Epilog (or reconcile) takes
    the nodes back and destroys the instances. False when the job failed."""
    if not ctx.cfg.isolate_devices:
        return True
    try:
        paths = give(ctx, rec)
    except NodeProblem as e:
        from ..core.lifecycle import State
        ctx.ledger.put(rec.move(State.RELEASING, f"device isolation: {e}"))
        ctx.fail(rec.job, rec.uid, rec.reason, keep_record=True)
        return False
    JobLog(rec.job).info("cap nodes %s given to uid %s", ",".join(paths), rec.uid)
    return True


class Setup(NamedTuple):
    """What node-setup found and did."""
    nodes: int                      # capability nodes of the local GPUs and node-wide ones
    created: List[str]
    fixed: Dict[str, List[str]]     # owner or mode put back: what it was ("uid:gid mode") -> paths
    jobs: Dict[str, List[str]]      # left as they are: given to these running jobs
    problems: List[str]
    modify: Optional[int]           # ModifyDeviceFiles in effect, None: unknown


def setup(ctx: "NodeContext", fix: bool = True) -> Setup:
    """Every GI/CI cap node of the local GPUs root:root 0400 (config 0400,
    monitor 0444), created where missing; nodes given to running jobs stay
    theirs. With fix False only report. Under the node lock."""
    cfg = ctx.cfg
    minors = read_mig_minors(cfg.proc_root)
    local = {g.minor for g in ctx.devices.driver.gpus(False)}
    want = {m: caps.NODE_WIDE.get(k, ROOT_ONLY) for k, m in minors.items()
            if k in caps.NODE_WIDE or caps.key_gpu(k) in local}
    given: Dict[int, str] = {}
    for r in ctx.ledger.live() if cfg.isolate_devices else []:
        given.update({m: r.job for keys in cap_minors(ctx, r.instances).values() for m in keys})
    problems = [f"{p} is missing (NVreg_ModifyDeviceFiles=0 makes nvidia-modprobe create no "
                "device files: a boot script must)" for p in
                [os.path.join(cfg.dev_root, f"nvidia{m}") for m in sorted(local)]
                + [os.path.join(cfg.dev_root, "nvidiactl")] if not os.path.exists(p)]
    if fix:
        safe_dir(os.path.join(cfg.dev_root, caps.CAPS_DIR), 0o755, "dev_root/nvidia-caps")
    result = Setup(len(want), [], {}, {}, problems, modify_device_files(cfg.proc_root))
    with _opened(cfg, []) as nodes:
        for m, mode in sorted(want.items()):
            path = nodes.path(m)
            try:
                st = nodes.open(m)
            except FileNotFoundError:
                result.created.append(path)
                if fix:
                    nodes.create(m, mode)
                    st = nodes.open(m)
                else:
                    continue
            except NodeProblem as e:
                problems.append(str(e))
                continue
            if m in given:
                result.jobs.setdefault(given[m], []).append(path)
            elif (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (0, 0, mode):
                if path not in result.created:
                    was = f"{st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):04o}"
                    result.fixed.setdefault(was, []).append(path)
                if fix:
                    nodes.set(m, 0, 0, mode)
    return result
