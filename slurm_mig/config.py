"""Settings: defaults < config file < environment < command line.

Hooks run with the environment slurmd gives them, so the config file
(default /etc/slurm-mig/config.toml) is how a site configures them.
"""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

from .errors import BadInput

DEFAULT_CONFIG = "/etc/slurm-mig/config.toml"
ENV_TWINS = {"backend": "SLURM_MIG_BACKEND", "state_dir": "SLURM_MIG_STATE_DIR",
             "run_dir": "SLURM_MIG_RUN_DIR"}


class Config(NamedTuple):
    backend: str = "nvml"
    state_dir: str = "/var/lib/slurm-mig"     # ledger + lock, root only
    run_dir: str = "/run/slurm-mig"           # per-job env files read by the TaskProlog
    mode: str = "dynamic"                     # dynamic | static
    hooks_dir: str = "/etc/slurm-mig/hooks.d"  # site hooks around MIG mode changes
    gres_conf: str = "/etc/slurm/gres.conf"   # static mode: the generated gres.conf (IDX order)
    proc_root: str = "/proc"                  # where driver/nvidia-caps/mig-minors is read
    dev_root: str = "/dev"                    # where nvidiaN and nvidia-caps/ are
    policy: str = "most-room"                 # placement policy, see core.policies
    wait_for_room: float = 30.0               # prolog: seconds to wait for an epilog to free room
    lock_timeout: float = 120.0               # seconds to wait for the node lock
    epilog_retries: int = 5                   # destroy attempts while a process holds an instance
    epilog_retry_delay: float = 1.0
    gpu_fallback: bool = False                # dynamic: place on another GPU when Slurm's cannot
    job_source: str = "scontrol"              # how the prolog reads the job: scontrol | squeue
    dcgm_job_mapping_dir: str = ""            # dcgm-exporter --hpc-job-mapping-dir; "" = off


def _coerce(name: str, value, source: str):
    kind = type(Config._field_defaults[name]).__name__      # every setting has a default
    try:
        if kind == "bool":
            ok = isinstance(value, bool) or str(value).lower() in ("true", "false", "1", "0")
            value = value if isinstance(value, bool) else str(value).lower() in ("true", "1")
        elif kind == "float":
            value = float(value)
            ok = value >= 0
        elif kind == "int":
            value = int(value)
            ok = value >= 0
        else:
            value = str(value)
            ok = bool(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BadInput(f"{source}: bad value {value!r} for {name}")
    if name == "policy":
        from .core.policies import POLICIES
        if value not in POLICIES:
            raise BadInput(f"{source}: policy must be one of {', '.join(POLICIES)}, not {value!r}")
    if name == "job_source" and value not in ("scontrol", "squeue"):
        raise BadInput(f"{source}: job_source must be 'scontrol' or 'squeue', not {value!r}")
    if name == "dcgm_job_mapping_dir" and not os.path.isabs(value):
        raise BadInput(f"{source}: dcgm_job_mapping_dir must be an absolute path, not {value!r}")
    if name == "mode" and value not in ("dynamic", "static"):
        raise BadInput(f"{source}: mode must be 'dynamic' or 'static', not {value!r}")
    return value


def sim_root(state_path: str) -> str:
    """Where a simulated node keeps its /dev and /proc: `<state without .json>.root`."""
    base = os.path.abspath(state_path)
    return (base[:-5] if base.endswith(".json") else base) + ".root"


def with_sim_roots(values: dict) -> dict:
    """A sim backend reads dev_root/proc_root under its own root unless set."""
    backend = str(values.get("backend", ""))
    if backend.startswith("sim:"):
        root = sim_root(backend[4:])
        values.setdefault("dev_root", os.path.join(root, "dev"))
        values.setdefault("proc_root", os.path.join(root, "proc"))
    return values


def load(path: Optional[str] = None, **overrides) -> Config:
    """`path` None means SLURM_MIG_CONFIG or the default; a missing default is fine,
    a missing file named explicitly is an error."""
    explicit = path or os.environ.get("SLURM_MIG_CONFIG")
    path = explicit or DEFAULT_CONFIG
    values = {}
    if os.path.exists(path):
        values.update(_read_toml(path))
    elif explicit:
        raise BadInput(f"config file {path} does not exist")
    for name, var in ENV_TWINS.items():
        if os.environ.get(var):
            values[name] = os.environ[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = set(Config._fields)
    unknown = sorted(set(values) - known)
    if unknown:
        raise BadInput(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return Config()._replace(**{k: _coerce(k, v, path) for k, v in with_sim_roots(values).items()})


def _read_toml(path: str) -> dict:
    try:
        import tomllib
    except ImportError:      # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"config file {path} is not valid TOML: {e}") from e
