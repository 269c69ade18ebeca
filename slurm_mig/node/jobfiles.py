"""The per-job files the Prolog leaves for the TaskProlog, and reading them.

Kept apart from the hooks so the TaskProlog path (every task of every step)
imports almost nothing. The shell script prolog/slurm-mig-task-prolog does
the same as task_prolog() without Python at all; tests/test_binding.py runs
both on the same inputs.

`<job>.env` lists the job's devices, a line each: `UUID GPU KIND` (MIG-... for
MIG instances, GPU-... for whole GPUs; GPU the index Slurm counts it under;
KIND its MIG profile, or `gpu` for a whole GPU), or the UUID alone (static
mode, and files of an older version); a file of a still older version (a line
`export CUDA_VISIBLE_DEVICES=...`) is printed as it is. Which of them a step gets:

- A whole-GPU step: the GPUs of SLURM_STEP_GPUS (Slurm splits a `--gres=gpu`
  job's GPUs between `srun --exact` steps); every GPU of the job without it.
- A MIG step with a GPU request of its own (`srun --gres=mig:...`: Slurm gives
  such a step no shards, so SLURM_SHARDS_ON_NODE is unset, and shows its
  request nowhere in the environment): the instances of the profiles it asked
  for, read once from Slurm, not held by a concurrent step of the job
  (node/stepclaims.py). Every other step: all of the job's devices.

Which of those a task gets:

- SLURM_MIG_BIND=all: every device of the job.
- SLURM_MIG_BIND=task: the single device `SLURM_LOCALID mod n`.
- unset (auto): `task` for MIG devices when the step runs several tasks on this
  node, else `all` (the batch script, `srun -n1`, whole GPUs).

How many of the step's tasks run on this node: the items of SLURM_GTIDS (the
step's global task ids on this node, seen by the TaskProlog on 22.05), else
this node's entry of SLURM_STEP_TASKS_PER_NODE (`2(x3),1`, at SLURM_NODEID),
else 1 (the batch step has no SLURM_STEP_*).
"""
from __future__ import annotations

import os
import re
import stat
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from ..core.syntax import check_job_id

ENV, FAIL, STEPS = ".env", ".fail", ".steps"
REQUEUED = ".requeued"      # left by a Prolog that requeued the job; its Epilog here removes it
STEERED = ".steered"        # the last requeue here (its attempt): the steerer gives the node back only for it
BIND_VALUES = ("task", "all")
WHOLE_GPU = "gpu"
_DEVICE = re.compile(r"(MIG|GPU)-[A-Za-z0-9/-]+")
_KIND = re.compile(r"[0-9a-z.+]+")


class Device(NamedTuple):
    """One line of `<job>.env`; gpu and kind are None in a UUID-only line."""
    uuid: str
    gpu: Optional[int] = None
    kind: Optional[str] = None
_TPN_ITEM = re.compile(r"(\d+)(?:\(x(\d+)\))?")


def job_file(run_dir: str, job: str, suffix: str) -> str:
    return os.path.join(run_dir, check_job_id(job) + suffix)


def devices_text(devices: List[Device]) -> str:
    lines = []
    for d in devices:
        if not _DEVICE.fullmatch(d.uuid) or (d.kind is not None and not _KIND.fullmatch(d.kind)):
            raise ValueError(f"not a device: {d!r}")
        lines.append(d.uuid if d.kind is None else f"{d.uuid} {int(d.gpu)} {d.kind}")
    return "".join(line + "\n" for line in lines)


def parse_devices(text: str) -> List[Device]:
    """The well-formed lines of `<job>.env` (others are skipped, as the script does)."""
    devices = []
    for line in text.splitlines():
        words = line.split()
        if not words or not _DEVICE.fullmatch(words[0]):
            continue
        if len(words) == 3 and words[1].isdigit() and _KIND.fullmatch(words[2]):
            devices.append(Device(words[0], int(words[1]), words[2]))
        elif len(words) == 1:
            devices.append(Device(words[0]))
    return devices


def step_gpus(devices: List[Device], env: Mapping[str, str]) -> List[Device]:
    """A whole-GPU job's devices for this step: those of SLURM_STEP_GPUS."""
    wanted = env.get("SLURM_STEP_GPUS", "")
    if not wanted or not devices or any(d.kind != WHOLE_GPU for d in devices):
        return devices
    indices = set(wanted.split(","))
    return [d for d in devices if str(d.gpu) in indices] or devices


def own_mig_request(devices: List[Device], env: Mapping[str, str]) -> Optional[str]:
    """The step id when this is a step that asked for MIG devices of its own
    (see above) and the job has more than one to choose from, else None."""
    step = env.get("SLURM_STEP_ID", "")
    if (step.isdigit() and len(step) < 10 and len(devices) > 1 and not env.get("SLURM_SHARDS_ON_NODE")
            and all(d.kind not in (None, WHOLE_GPU) for d in devices)):
        return step
    return None


def local_tasks(env: Mapping[str, str]) -> int:
    """How many tasks of this step run on this node (1 when it cannot tell)."""
    gtids = env.get("SLURM_GTIDS", "")
    if gtids:
        return gtids.count(",") + 1
    tpn, node = env.get("SLURM_STEP_TASKS_PER_NODE", ""), env.get("SLURM_NODEID", "0")
    if not tpn or not node.isdigit():
        return 1
    node_id = int(node)
    for item in tpn.split(","):
        m = _TPN_ITEM.fullmatch(item)
        if not m:
            return 1
        count, repeat = int(m.group(1)), int(m.group(2) or 1)
        if node_id < repeat:
            return count
        node_id -= repeat
    return 1


def select(uuids: List[str], env: Mapping[str, str]) -> Tuple[list, Optional[str]]:
    """The devices one task gets, and a warning to print (bad SLURM_MIG_BIND)."""
    bind, warning = env.get("SLURM_MIG_BIND", ""), None
    if bind and bind not in BIND_VALUES:
        warning = f"slurm-mig: SLURM_MIG_BIND must be task or all, not {bind}; using the default"
        bind = ""
    if not bind:
        mig = all(u.startswith("MIG-") for u in uuids)
        bind = "task" if mig and local_tasks(env) > 1 else "all"
    localid = env.get("SLURM_LOCALID", "")
    if bind == "task" and localid.isdigit() and uuids:
        return [uuids[int(localid) % len(uuids)]], warning
    return list(uuids), warning


StepRequest = Callable[[str, str], Dict[str, int]]


def task_prolog(run_dir: str, job: str, env: Optional[Mapping[str, str]] = None,
                uid: Optional[int] = None, step_request: Optional[StepRequest] = None) -> Tuple[str, int]:
    """What the TaskProlog prints, and its exit status. Only a regular file
    owned by root or by the job's user (`uid`; default SLURM_JOB_UID, else our
    own uid) is printed, never one reached through a symlink: anything else
    in run_dir was planted by someone else. A job holding shards with no
    devices bound fails: Slurm's GPU index would reach others' instances.
    `step_request(job, step)`: the MIG profiles a step asked for, from Slurm;
    without it (the shell script's case) such a step gets all the job's devices."""
    env = os.environ if env is None else env
    if uid is None:
        env_uid = env.get("SLURM_JOB_UID", "")
        uid = int(env_uid) if env_uid.isdigit() else os.getuid()
    job = het_component(run_dir, job, env, uid)
    text = _read_trusted(job_file(run_dir, job, FAIL), uid)
    if text is not None:
        return "".join(f"print {line}" for line in text.splitlines(keepends=True)), 1
    text = _read_trusted(job_file(run_dir, job, ENV), uid)
    if text is None:
        if env.get("SLURM_SHARDS_ON_NODE", "") in ("", "0"):
            return "", 0
        return (f"print slurm-mig: job {job} holds MIG shards here but no MIG instances were bound "
                "to it (its Prolog did not run, or shard: was asked for instead of mig:)\n"), 1
    if text.startswith("export "):          # written by an older version, job still running
        return text, 0
    devices = step_gpus(parse_devices(text), env)
    if not devices:
        return "", 0
    uuids, notes = [d.uuid for d in devices], []
    step = own_mig_request(devices, env)
    if step is not None and step_request is not None:
        from .stepclaims import step_devices
        uuids, note = step_devices(job_file(run_dir, job, STEPS), uid, step, devices,
                                   lambda: step_request(job, step))
        notes += [note] if note else []
    chosen, warning = select(uuids, env)
    notes += [warning] if warning else []
    return "".join(f"print {n}\n" for n in notes) + f"export CUDA_VISIBLE_DEVICES={','.join(chosen)}\n", 0


def het_component(run_dir: str, job: str, env: Mapping[str, str], uid: int) -> str:
    """The job id this task's devices were bound under. A heterogeneous job's
    components are jobs of their own, each bound by its own id
    (SLURM_JOB_ID_HET_GROUP_<n>), while every task sees the leader's
    SLURM_JOB_ID: on a node with no files of `job`, the first component with
    files here is this task's (components that share a node are told apart
    only by the leader's)."""
    size = env.get("SLURM_HET_SIZE", "")
    if not size.isdigit() or _bound_here(run_dir, job, uid):
        return job
    for n in range(min(int(size), 128)):
        component = env.get(f"SLURM_JOB_ID_HET_GROUP_{n}", "")
        if component.isdigit() and len(component) <= 10 and _bound_here(run_dir, component, uid):
            return component
    return job


def _bound_here(run_dir: str, job: str, uid: int) -> bool:
    return any(_read_trusted(job_file(run_dir, job, kind), uid) is not None for kind in (ENV, FAIL))


def _read_trusted(path: str, uid: int) -> Optional[str]:
    """The file's text if root or the job's user owns it (anything else in
    run_dir was planted by someone else)."""
    found = read_regular(path)
    return found[0] if found is not None and found[1] in (0, uid) else None


def read_regular(path: str) -> Optional[Tuple[str, int]]:
    """(text, owner uid) of a regular file, opened without following a symlink;
    None when it is missing, a link, not a regular file or unreadable. Here and
    not in fsutil: the TaskProlog path imports only this module."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):          # before wrapping: open() refuses a directory fd
        os.close(fd)
        return None
    with open(fd, encoding="utf-8", errors="replace") as f:
        return f.read(), st.st_uid
