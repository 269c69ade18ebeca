"""Settings: defaults < config file < environment < command line.

Hooks run with the environment slurmd gives them, so the config file
(default /etc/slurm-mig/config.toml) is how a site configures them.
"""
from __future__ import annotations

import math
import os
from typing import Dict, NamedTuple, Optional, Tuple

from .errors import BadInput

DEFAULT_CONFIG = "/etc/slurm-mig/config.toml"
FILE_SOURCE = "config file"
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
    interactive_wait: float = 28800.0         # prolog of an srun/salloc job (no requeue): the same, longer
    interactive_charge: float = 0.1           # job_submit.lua: share of the way to guarantee units (core/guarantee.py)
    interactive_charge_one_start: float = 1.0  # the same for a request with a one-start profile (4g.40gb)
    interactive_evict_age: float = 0.0        # dynamic: an srun/salloc with no start requeues batch jobs this young (s; 0: never)
    lock_timeout: float = 120.0               # seconds to wait for the node lock
    epilog_retries: int = 5                   # destroy attempts while a process holds an instance
    epilog_retry_delay: float = 1.0
    gpu_fallback: bool = False                # dynamic: place on another GPU when Slurm's cannot
    max_requeues: int = 100                   # dynamic: batch jobs sent back to the queue at most this often
    guarantee_after: int = 50                 # job_submit.lua: a batch job requeued this often is charged the guarantee (0: never)
    steer: bool = True                        # dynamic: keep a requeued job off the nodes that ran it, start it at once
    steer_return: float = 125.0               # dynamic: s after its Epilog before it may start there again
    hold_stuck_gpus: bool = True              # dynamic: a root job holds a GPU while an instance no job owns is busy there
    job_source: str = "squeue"                # Slurm's JSON: squeue --json | scontrol --json (23.02+)
    slurm_bin_dir: str = ""                   # Slurm clients; "" = PATH, /usr/bin, /usr/local/bin, /opt/slurm/bin
    dcgm_job_mapping_dir: str = ""            # dcgm-exporter --hpc-job-mapping-dir; "" = off
    isolate_devices: bool = False             # dynamic: hand each job its instances' cap nodes (node/isolation.py)
    room_field: str = "extra"                 # dynamic: node field for the free-slice summary: extra | comment | "" (off)
    room_interval: float = 30.0               # seconds between two summaries a node sends (the controller's cost)
    hook_server: bool = True                  # Prolog/Epilog run in a fork of a resident root process (hooks/server.py)


PATHS = ("state_dir", "run_dir", "hooks_dir", "gres_conf", "proc_root", "dev_root", "slurm_bin_dir",
         "dcgm_job_mapping_dir")
OPTIONAL_PATHS = ("slurm_bin_dir", "dcgm_job_mapping_dir")     # "" = search / off
OPTIONAL = OPTIONAL_PATHS + ("room_field",)
# Inclusive ranges of the numeric settings (seconds, or attempts).
RANGES = {"wait_for_room": (0, 86400), "interactive_wait": (0, 43200), "interactive_charge": (0, 1),
          "interactive_charge_one_start": (0, 1), "interactive_evict_age": (0, 86400),
          "lock_timeout": (0.1, 86400), "epilog_retries": (0, 1000), "epilog_retry_delay": (0, 3600),
          "max_requeues": (0, 1000), "guarantee_after": (0, 1000), "room_interval": (0, 3600), "steer_return": (0, 86400)}


def _coerce(name: str, value, source: str):
    """One setting, strictly: TOML types from a file (a number or a boolean
    written as a string is refused there), the same text forms from the
    environment or the command line (true/false, digits, finite numbers,
    absolute paths). `source` says where the value came from."""
    kind = type(Config._field_defaults[name])      # every setting has a default
    text = value.strip() if isinstance(value, str) else None

    def bad(why: str):
        return BadInput(f"{source}: {name} = {value!r}: {why}")
    if source.startswith(FILE_SOURCE) and kind is not str and isinstance(value, str):
        raise bad(f"must be a TOML {'boolean (true or false)' if kind is bool else 'number'}, "
                  "not a string: drop the quotes")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if text is None or text.lower() not in ("true", "false"):
            raise bad("must be true or false")
        return text.lower() == "true"
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad("must be a number")
        if kind is int and (isinstance(value, float) or text is not None and not text.isdigit()):
            raise bad("must be a whole number")
        try:
            number = kind(text if text is not None else value)
        except ValueError:
            raise bad("must be a number") from None
        low, high = RANGES.get(name, (0, float("inf")))
        if not math.isfinite(number) or not low <= number <= high:
            raise bad(f"must be a finite number from {low:g} to {high:g}")
        return number
    if not isinstance(value, str) or not (value or name in OPTIONAL):
        raise bad("must be a non-empty string")
    if name in PATHS and value and not os.path.isabs(value):
        raise bad("must be an absolute path")
    choices = {"mode": ("dynamic", "static"), "job_source": ("scontrol", "squeue"),
               "room_field": ("extra", "comment", "")}
    if name == "policy":
        from .core.policies import POLICIES
        choices["policy"] = tuple(POLICIES)
    if name in choices and value not in choices[name]:
        raise bad("must be one of " + ", ".join(f'"{c}"' for c in choices[name]))
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


def config_path(path: Optional[str] = None) -> str:
    """The config file `load` reads: `path`, else SLURM_MIG_CONFIG, else the default."""
    return path or os.environ.get("SLURM_MIG_CONFIG") or DEFAULT_CONFIG


def load(path: Optional[str] = None, **overrides) -> Config:
    """`path` None means SLURM_MIG_CONFIG or the default; a missing default is fine,
    a missing file named explicitly is an error. `overrides` come from the
    command line; each value is checked the same way wherever it came from."""
    explicit = path or os.environ.get("SLURM_MIG_CONFIG")
    path = config_path(path)
    values: Dict[str, Tuple[object, str]] = {}
    if os.path.exists(path):
        raw = read_toml(path, "config file")
        unknown = sorted(set(raw) - set(Config._fields))
        if unknown:
            raise BadInput(f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
                           f"known: {', '.join(Config._fields)}")
        values.update({k: (v, f"{FILE_SOURCE} {path}") for k, v in raw.items()})
    elif explicit:
        raise BadInput(f"config file {path} does not exist")
    for name, var in ENV_TWINS.items():
        if os.environ.get(var):
            values[name] = (os.environ[var], f"environment variable {var}")
    backend = str(overrides.get("backend") or values.get("backend", ("",))[0])
    for k, v in with_sim_roots({"backend": backend}).items():
        if k != "backend" and k not in values and overrides.get(k) is None:
            values[k] = (v, f"the simulated node's root ({backend})")
    return override(Config()._replace(**{k: _coerce(k, v, src) for k, (v, src) in values.items()}),
                    **overrides)


def override(cfg: Config, **values) -> Config:
    """`cfg` with command-line values (None: not given), checked like the rest."""
    return cfg._replace(**{k: _coerce(k, v, f"command-line option for {k}")
                           for k, v in values.items() if v is not None})


def read_toml(path: str, what: str) -> dict:
    """The TOML file `path`; errors name it as `what`."""
    try:
        import tomllib
    except ImportError:      # Python < 3.11
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise BadInput(f"{what} {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{what} {path} is not valid TOML: {e}") from e
