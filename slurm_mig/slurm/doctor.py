"""`slurm-mig doctor`: is this node, and the Slurm it runs under, set up the
way slurm-mig needs? Each check answers one question, and when the answer is
no it says what is wrong and the fix.

The node's own checks (directories, systemd units) are node/checks.py.
Reads only: one `scontrol show config` (one controller request: the values
the controller really uses, not a file that may differ from them), the files it
names (hook scripts, job_submit.lua next to slurm.conf), gres.conf, the live
GPUs, the modes of the directories root writes into, and the systemd units.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

from .. import installed
from ..config import Config
from ..core import catalog
from ..errors import SlurmMigError
from ..fsutil import read_text
from ..node.checks import FAIL, OK, SKIP, Check, directories, hook_server, systemd
from . import confgen, gresconf
from .jobinfo import read_budget, run_slurm, slurm_command

HOOKS = tuple(installed.HOOK_SCRIPTS)          # Prolog, TaskProlog, Epilog
NO_TIMEOUT = 65534                             # what 22.05 to 26.05 show when unset: no limit
_CONFIG_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\[\d+\])?\s+=\s?(.*)$")


def parse_show_config(text: str) -> Dict[str, List[str]]:
    """`scontrol show config` -> lower-case key -> values ('(null)' read as
    unset). 24.11 and later print list settings one per line as `Prolog[0] = ...`."""
    conf: Dict[str, List[str]] = {}
    for line in text.splitlines():
        m = _CONFIG_LINE.match(line.strip())
        if m and m.group(2).strip() not in ("(null)", ""):
            conf.setdefault(m.group(1).lower(), []).append(m.group(2).strip())
    return conf


def parse_slurm_conf(path: str) -> Dict[str, List[str]]:
    """slurm.conf itself, read as Slurm reads it (slurm/gresconf.py), in the
    same shape: for when the controller cannot be asked (it may refuse to start
    over the very setting that is wrong)."""
    with open(path, encoding="utf-8") as f:
        lines = gresconf.logical_lines(f.read())
    conf: Dict[str, List[str]] = {"slurm_conf": [path], "batchstarttimeout": ["10"]}   # Slurm's default
    for line in lines:
        pairs = gresconf.parse_line(line, path)
        if pairs and pairs[0][0] not in ("nodename", "partitionname", "nodeset", "frontendname",
                                         "downnodes", "switchname"):
            for key, value in pairs:
                conf[key] = [value]
    return conf


def _one(conf: Dict[str, List[str]], key: str) -> str:
    return ",".join(conf.get(key.lower(), []))


def _items(value: str) -> List[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def select_type(conf) -> Check:
    value = _one(conf, "SelectType")
    if value == "select/cons_tres":
        return Check("SelectType", OK, value)
    return Check("SelectType", FAIL, f"{value or 'unset'}: Slurm allocates shards and per-GPU GRES "
                 "only with select/cons_tres",
                 "SelectType=select/cons_tres (with SelectTypeParameters=CR_Core or CR_Core_Memory) "
                 "in slurm.conf, then restart the controller and the slurmd of every node")


def prolog_flags(conf) -> Check:
    flags = _items(_one(conf, "PrologFlags"))
    if any(f.lower() == "alloc" for f in flags):
        return Check("PrologFlags", OK, ",".join(flags))
    merged = ",".join(flags + ["Alloc"])
    return Check("PrologFlags", FAIL, f"{','.join(flags) or 'unset'} lacks Alloc: the Prolog would run "
                 "at the job's first step, so the batch script could start before its instances exist",
                 f"PrologFlags={merged} (add Alloc to the one PrologFlags= line, keeping the flags "
                 "already there), then restart the controller and the slurmd of every node")


def job_submit_plugin(conf, mode: str) -> Check:
    plugins = _items(_one(conf, "JobSubmitPlugins"))
    if mode != "dynamic":
        return Check("JobSubmitPlugins", SKIP, "static mode needs no job_submit.lua")
    if any(p.split("/")[-1] == "lua" for p in plugins):
        return Check("JobSubmitPlugins", OK, ",".join(plugins))
    return Check("JobSubmitPlugins", FAIL, f"{','.join(plugins) or 'unset'} lacks lua: mig:<profile> "
                 "requests get no shard units, so Slurm does not pick a GPU with room",
                 f"JobSubmitPlugins={','.join(plugins + ['lua'])} and the generated job_submit.lua "
                 "next to slurm.conf on the controller host")


def gres_types(conf, mode: str) -> Check:
    have = {t.lower() for t in _items(_one(conf, "GresTypes"))}
    need = ["gpu", "shard", "mig"] if mode == "dynamic" else ["mig"]
    missing = [t for t in need if t not in have]
    if not missing:
        return Check("GresTypes", OK, _one(conf, "GresTypes"))
    return Check("GresTypes", FAIL, f"{_one(conf, 'GresTypes') or 'unset'} lacks {','.join(missing)} "
                 f"({mode} mode)", f"GresTypes={','.join(sorted(have) + missing)} (slurm.conf.node of "
                 "`slurm-mig gres-conf`), then restart the controller and the slurmd of every node")


def _runs(path: str, script: str) -> bool:
    """Whether the file Slurm runs is the installed script, or a wrapper naming it."""
    if os.path.realpath(path) == os.path.realpath(script):
        return True
    try:
        with open(path, "rb") as f:
            return script.encode() in f.read(65536)
    except OSError:
        return False


def hook_paths(conf, scripts: Optional[Dict[str, str]]) -> Iterator[Check]:
    for param in HOOKS:
        values = conf.get(param.lower(), [])
        if scripts is None:
            yield Check(param, SKIP, "this slurm-mig runs from a source tree: no installed script to compare")
            continue
        want = scripts[param]
        fix = f"{param}={want} in slurm.conf (or a wrapper that execs it), then `scontrol reconfigure`"
        if not values:
            yield Check(param, FAIL, "not set: slurmd runs no slurm-mig hook", fix)
            continue
        files = [f for v in values for f in sorted(glob.glob(v))]
        runnable = [f for f in files if os.path.isfile(f) and os.access(f, os.X_OK)]
        if not runnable:
            yield Check(param, FAIL, f"{','.join(values)} is missing or not executable on this node", fix)
        elif not any(_runs(f, want) for f in runnable):
            yield Check(param, FAIL, f"{','.join(values)} is not this install's {want}", fix)
        else:
            yield Check(param, OK, ",".join(values))


def _seconds(value: str) -> Optional[int]:
    m = re.match(r"\d+", value or "")
    return int(m.group(0)) if m else None


def timeouts(conf, cfg: Config) -> Iterator[Check]:
    prolog, batch = confgen.hook_timeouts(cfg)
    base = (f"lock_timeout={cfg.lock_timeout:g} (twice) + {read_budget():g} s for the Prolog's read "
            f"of the job + {confgen.NVML_MARGIN} s of NVML work")
    epilog = (f"; or, if longer, an Epilog retrying busy instances: lock_timeout + (epilog_retries="
              f"{cfg.epilog_retries} + 1) x epilog_retry_delay={cfg.epilog_retry_delay:g} x 7 + "
              f"{confgen.NVML_MARGIN} s")
    # 25.05 and later may set the two apart; PrologEpilogTimeout covers both otherwise
    for key, floor, waits, effect, settings in (
            ("PrologTimeout" if "prologtimeout" in conf else "PrologEpilogTimeout", prolog,
             f"the longer of wait_for_room={cfg.wait_for_room:g} and interactive_wait="
             f"{cfg.interactive_wait:g}", "slurmd kills a Prolog still waiting, and drains the node,",
             "wait_for_room, interactive_wait or lock_timeout"),
            ("BatchStartTimeout", batch, f"wait_for_room={cfg.wait_for_room:g}, then + 10 s",
             "the controller gives a batch job up while its Prolog still waits,",
             "wait_for_room or lock_timeout")):
        value, why = _seconds(_one(conf, key)), f"{base} + {waits}{epilog}"
        if key != "BatchStartTimeout" and (value is None or value >= NO_TIMEOUT):
            yield Check(key, OK, "unset: slurmd never kills a Prolog (a hung one holds its job)")
        elif value is not None and value >= floor:
            yield Check(key, OK, f"{value} s >= {floor} s ({why})")
        else:
            yield Check(key, FAIL, f"{value} s < {floor} s needed: {effect} before it can fail the job "
                        f"alone ({why})", f"{key}={floor} in slurm.conf (slurm.conf.hooks of `slurm-mig "
                        f"gres-conf` has the lines), or lower {settings} in the slurm-mig config")


CRED_EXPIRE = 120          # s: Slurm's default AuthInfo cred_expire (slurm.conf(5))
CRED_PURGE = 3             # s more: slurmd drops an expired job id only in a scan, at most every 2 s


def steer_return(conf, cfg: Config) -> Check:
    """A requeued job may start again on a node that ran it steer_return after
    its Epilog there (the steerer sets its start, or gives that node back):
    slurmd must have dropped the job id from its credential cache by then, or
    it skips the job's Prolog."""
    m = re.search(r"cred_expire=(\d+)", _one(conf, "AuthInfo"))
    expire = int(m.group(1)) if m else CRED_EXPIRE
    if not cfg.steer_return:
        return Check("steer_return", OK, "off: requeued jobs keep Slurm's own delay (cred_expire + 1 s)")
    if cfg.steer_return >= expire + CRED_PURGE:
        return Check("steer_return", OK, f"{cfg.steer_return:g} s >= cred_expire={expire} s + {CRED_PURGE} s")
    return Check("steer_return", FAIL, f"{cfg.steer_return:g} s < cred_expire={expire} s + {CRED_PURGE} s: a "
                 "requeued job started again that soon on a node that ran it could run without its Prolog "
                 "(slurmd skips the Prolog of a job id still in its credential cache, and drops an expired one "
                 "only in a scan, at most every 2 s)", f"steer_return = {expire + 5} in the slurm-mig config")


def guarantee_after(cfg: Config) -> Check:
    """A batch job is recharged its guarantee from its guarantee_after-th
    requeue on (job_submit.lua): at max_requeues or later it never is, and a
    job Slurm keeps sending to GPUs without a start for it fails instead."""
    if not cfg.guarantee_after:
        return Check("guarantee_after", OK, "off: a job sent back max_requeues times fails")
    if cfg.guarantee_after < cfg.max_requeues:
        return Check("guarantee_after", OK, f"{cfg.guarantee_after} < max_requeues={cfg.max_requeues}")
    return Check("guarantee_after", FAIL, f"{cfg.guarantee_after} >= max_requeues={cfg.max_requeues}: a job "
                 "fails at max_requeues before it is ever charged the units that would send it to a GPU "
                 "that holds it", f"guarantee_after = {cfg.max_requeues // 2} in the slurm-mig config, "
                 "then regenerate job_submit.lua (`slurm-mig gres-conf`)")


_PRICED = re.compile(r"^# Shard units priced for the GPU models (.+):$", re.M)


def generated(gpus, cfg: Config, node: str, gres_conf_text: str = "") -> Dict[str, str]:
    """This node's files as `slurm-mig gres-conf` would write them, its shard
    units priced for the GPU models the installed gres.conf names (a mixed
    cluster prices each model's units for the whole set)."""
    priced = _PRICED.search(gres_conf_text)
    cat = catalog.load()
    models = [cat.model(key.strip()) for key in priced.group(1).split(",")] if priced else []
    return confgen.render([confgen.NodeGroup(node, confgen.from_gpus(gpus))], cfg.mode, cfg.dev_root,
                          "doctor", "the live GPUs", cfg.proc_root, models if cfg.mode == "dynamic" else ())


def beside_slurm_conf(conf, name: str) -> str:
    """Where Slurm reads `name` (gres.conf, job_submit.lua): next to slurm.conf."""
    slurm_conf = _one(conf, "SLURM_CONF") or os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    return os.path.join(os.path.dirname(slurm_conf), name)


def gres_conf(path: str, files: Dict[str, str], cfg: Config, node: str) -> Check:
    """The installed gres.conf's records for this node against `files` (generated())."""
    fix = (f"regenerate with `slurm-mig gres-conf` (--cluster for a described cluster, else --mode "
           f"{cfg.mode} --node-name {node}), put its gres.conf at {path} and slurm.conf.node's lines "
           "in slurm.conf, then restart slurmd on the node")
    names = ("gpu", "shard", "mig") if cfg.mode == "dynamic" else ("mig",)
    try:
        want = {name: gresconf.records_in(files["gres.conf"], node, name, "generated gres.conf")
                for name in names}
        have = {name: gresconf.node_records(path, node, name) for name in names}
    except SlurmMigError as e:
        return Check("gres.conf", FAIL, str(e), fix)
    for name in want:
        mine, live = _comparable(have[name]), _comparable(want[name])
        if mine != live:
            first = next((f"{_record(a)} where the live GPUs give {_record(b)}" for a, b in zip(mine, live)
                          if a != b), f"{len(mine)} records where the live GPUs give {len(live)}")
            return Check("gres.conf", FAIL, f"{path}: the Name={name} records of {node} differ from the "
                         f"live GPUs ({first}): Slurm counts room the node does not have, or hides room "
                         "it has", fix)
    return Check("gres.conf", OK, f"{path} matches the live GPUs of {node}")


def gres_counts(text: str) -> Dict[Tuple[str, str], int]:
    """A node's Gres= (slurm.conf, or Slurm's own `sinfo -O Gres`, which adds the
    GPU type to every item and may add `(S:0-1)`) -> (name, MIG profile) -> count."""
    counts: Dict[Tuple[str, str], int] = {}
    for item in text.split(","):
        parts = re.sub(r"\(.*\)$", "", item.strip()).split(":")
        if len(parts) >= 2 and parts[-1].isdigit():
            key = (parts[0], parts[1] if parts[0] == "mig" and len(parts) == 3 else "")
            counts[key] = counts.get(key, 0) + int(parts[-1])
    return counts


def slurm_node_gres(files: Dict[str, str], cfg: Config, node: str) -> Check:
    """What the controller runs with for this node, against the live GPUs: a
    gres.conf merged but not yet loaded (no restart) passes the file check."""
    want = re.search(r"^NodeName=\S+ Gres=(\S+)", files["slurm.conf.node"], re.M).group(1)
    try:
        out = run_slurm([slurm_command("sinfo", cfg.slurm_bin_dir), "-h", "-N", "-n", node, "-O", "Gres:|"],
                        attempts=1)
    except SlurmMigError as e:
        return Check("node Gres", FAIL, f"cannot read {node} from Slurm: {e}",
                     f"check that {node} is this node's Slurm name (--node-name)")
    have = out.splitlines()[0].rstrip("|") if out.strip() else "(no such node)"
    if gres_counts(have) == gres_counts(want):
        return Check("node Gres", OK, f"Slurm runs {node} with what its live GPUs need")
    return Check("node Gres", FAIL, f"Slurm runs {node} with Gres={have}; its live GPUs need Gres={want}",
                 f"put Gres={want} on {node}'s NodeName= line, then restart the controller and slurmd on the node")


def _record(fields: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())


def _comparable(records: List[dict]) -> List[dict]:
    return [{k: v for k, v in r.items() if k != "nodename"} for r in records]


_LUA_MODEL = re.compile(r'^\s*\{ key = "([^"]+)"', re.M)
_STATIC = re.compile(r'^    \["([^"]+)"\] = true,$', re.M)     # the static_partitions table


def _code(text: str) -> List[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("--")]


def job_submit_lua(conf, gpus, cfg: Config, here: bool = False) -> Check:
    """`here`: this is the controller host, where the file must be. The file
    must be what gres-conf writes with this config's charges."""
    if cfg.mode != "dynamic":
        return Check("job_submit.lua", SKIP, "static mode needs no job_submit.lua")
    path = beside_slurm_conf(conf, "job_submit.lua")
    text = read_text(path)
    if text is None and not here:
        return Check("job_submit.lua", SKIP, f"no {path} on this host: it lives next to slurm.conf on "
                     "the controller host; run `slurm-mig doctor --controller` there")
    models = _LUA_MODEL.findall(text or "")
    live = sorted({g.model.key for g in gpus if g.model is not None})
    listed = ",".join(models) or "none"
    every = ",".join(sorted(set(models) | set(live))) or "MODEL,..."
    fix = (f"`slurm-mig gres-conf --cluster-models {every} --output DIR` and install its "
           f"job_submit.lua as {path}")
    missing = [m for m in live if m not in models]
    if not models:
        return Check("job_submit.lua", FAIL, f"{path} is missing or names no GPU model: not one "
                     "`slurm-mig gres-conf` wrote", fix)
    if missing:
        return Check("job_submit.lua", FAIL, f"{path} admits GPU models {listed}, not this node's "
                     f"{','.join(missing)}: sbatch refuses or mis-charges their profiles", fix)
    try:
        cat = catalog.load()
        want = confgen.render([confgen.NodeGroup(None, confgen.from_spec(f"1x{models[0]}"))], "dynamic", "/dev",
                              "doctor", "the catalog", cluster_models=[cat.model(m) for m in models],
                              static_partitions=_STATIC.findall(text),
                              interactive_charge=cfg.interactive_charge,
                              interactive_charge_one_start=cfg.interactive_charge_one_start,
                              guarantee_after=cfg.guarantee_after)["job_submit.lua"]
    except SlurmMigError as e:
        return Check("job_submit.lua", FAIL, f"{path}: {e}", fix)
    if _code(text) != _code(want):
        return Check("job_submit.lua", FAIL, f"{path} differs from what this slurm-mig's catalog "
                     f"generates for {listed} (an older release, or edited by hand)", fix)
    return Check("job_submit.lua", OK, f"{path} matches the catalog for {listed}")


def slurm_config(bin_dir: str) -> Tuple[Optional[Dict[str, List[str]]], Optional[Check]]:
    """What the controller runs (`scontrol show config`), else slurm.conf itself,
    with a failed check saying why the controller could not be asked."""
    try:
        return parse_show_config(run_slurm([slurm_command("scontrol", bin_dir), "show", "config"],
                                           attempts=1)), None
    except SlurmMigError as e:
        why = f"`scontrol show config` failed ({e})"
    path = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    fix = (f"start the controller (its log says why it stopped), or "
           f"{'check' if 'SLURM_CONF' in os.environ else 'set'} SLURM_CONF / slurm_bin_dir")
    try:
        return parse_slurm_conf(path), Check("controller", FAIL, f"{why}: checked {path} instead", fix)
    except (OSError, SlurmMigError) as e:
        return None, Check("controller", FAIL, f"{why}, and {path} cannot be read ({e}): the checks "
                           "of slurm.conf are skipped", fix)


def run(cfg: Config, node: str, unit_dir: Optional[str] = None, controller: bool = False) -> List[Check]:
    """Every check, in the order an admin fixes them; on the controller host
    (`controller`) only slurm.conf's and job_submit.lua's, which must be there."""
    conf, unreachable = slurm_config(cfg.slurm_bin_dir)
    checks: List[Check] = [unreachable] if unreachable else []
    if conf is not None:
        checks += [select_type(conf), prolog_flags(conf), job_submit_plugin(conf, cfg.mode),
                   gres_types(conf, cfg.mode)]
        checks += [] if controller else hook_paths(conf, installed.hook_scripts_if_installed())
        checks += timeouts(conf, cfg)
        checks.append(steer_return(conf, cfg))
    checks.append(guarantee_after(cfg))          # the config alone: asks Slurm nothing
    if controller:
        return checks + ([job_submit_lua(conf, [], cfg, here=True)] if conf is not None else [])
    from ..nvml.backend import open_driver
    try:
        gpus = open_driver(cfg.backend).gpus()
    except Exception as e:         # NVML errors have no common base outside nvml/
        from ..nvml.errors import NVMLError, describe
        if not isinstance(e, (NVMLError, SlurmMigError)):
            raise
        gpus = None
        checks.append(Check("GPUs", FAIL, f"cannot read the GPUs ({cfg.backend}): "
                            f"{describe(e) if isinstance(e, NVMLError) else e}",
                            "load the NVIDIA driver, or set backend in the config"))
    if gpus is not None and conf is not None:
        path = beside_slurm_conf(conf, "gres.conf")
        try:
            files = generated(gpus, cfg, node, read_text(path) or "")
        except SlurmMigError as e:
            checks.append(Check("gres.conf", FAIL, f"cannot describe the live GPUs: {e}",
                                "add the GPU model with `slurm-mig catalog import`"))
        else:
            checks += [gres_conf(path, files, cfg, node),
                       Check("node Gres", SKIP, "the controller cannot be asked") if unreachable
                       else slurm_node_gres(files, cfg, node)]
        checks.append(job_submit_lua(conf, gpus, cfg))
    checks += directories(cfg)
    checks.append(hook_server(cfg))
    checks += systemd(cfg, unit_dir)
    return checks
