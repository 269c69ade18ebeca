"""Reliability of the root-run hooks: every NVML failure, crashes at every NVML
call, random kills, parallel random hook sequences, lock time-outs, hostile
input and permissions. After each: reconcile, then the node's invariants."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pynvml
import pytest
from hypothesis import given, settings, strategies as st

from harness import calls as hooks
from slurm_mig.nvml import backend as backend_mod
from slurm_mig.errors import BadInput, NodeProblem, StateCorrupt
from slurm_mig.node.jobfiles import task_prolog
from slurm_mig.node.ledger import Ledger
from slurm_mig.nvml.driver import Driver
from slurm_mig.sim import SimNvml, SimStore
from slurm_mig.sim.nvml import KILL
from slurm_mig.slurm.jobinfo import parse_allocation, parse_job_line, parse_jobs_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUEST = "mig:3g.40gb:1,mig:1g.10gb:1"
NVML_ERRORS = [pynvml.NVML_ERROR_INVALID_ARGUMENT, pynvml.NVML_ERROR_NOT_SUPPORTED,
               pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_NOT_FOUND,
               pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_IN_USE,
               pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES, pynvml.NVML_ERROR_UNKNOWN]


# -- helpers ------------------------------------------------------------------
class Recorder:
    """Wraps an NVML object and records the names of the calls made through it."""

    def __init__(self, inner, calls):
        self._inner, self._calls = inner, calls

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name.startswith("nvml") and callable(attr):
            def call(*args, **kwargs):
                self._calls.append(name)
                return attr(*args, **kwargs)
            return call
        return attr


def record_calls(monkeypatch, fn):
    calls = []
    real = backend_mod.open_backend
    monkeypatch.setattr(backend_mod, "open_backend", lambda spec: Recorder(real(spec), calls))
    fn()
    monkeypatch.setattr(backend_mod, "open_backend", real)
    return calls


def inject(state, call, error, after=0, times=1):
    with SimStore(state).transaction() as st:
        st["faults"], st["calls"] = [{"call": call, "error": error, "after": after, "times": times,
                                      "fired": 0}], {}
        st["_dirty"] = True


def check_owned(cfg, state):
    """Before any reconcile: every instance on the node is named by a live
    record, as "record intent first" promises (a prolog killed mid-create left
    a planned/created record), so the prolog's cheap reconcile, which never
    destroys unowned instances, can undo it."""
    records = Ledger(cfg.state_dir).live()
    orphans = [i for g in Driver(SimNvml(state)).gpus() for i in g.instances
               if not any(r.owns(i) for r in records)]
    assert orphans == [], f"instances no record names: {orphans}"


def check_invariants(cfg, state):
    """Every instance is named by a record before reconcile (check_owned); after
    it, every instance has one live owner, owners' instances exist, nothing is
    half-done, and the env files match the records."""
    check_owned(cfg, state)
    hooks.reconcile(cfg)
    live = {ci["uuid"]: (g, gi["id"]) for g, gpu in enumerate(SimStore(state).read()["gpus"])
            for gi in gpu["gis"] for ci in gi["cis"]}
    records = Ledger(cfg.state_dir).live()
    owned = [u for r in records for u in r.uuids]
    assert len(owned) == len(set(owned)), "an instance is bound to two jobs"
    assert set(owned) == set(live), (owned, live)
    assert all(r.state in ("bound", "releasing") for r in records), [r.state for r in records]
    for r in records:
        if r.state == "bound":
            text, code = task_prolog(cfg.run_dir, r.job)
            assert code == 0 and "=" in text, (text, code, r.to_dict())
            assert sorted(text.strip().split("=", 1)[1].split(",")) == sorted(r.uuids)


def next_job_works(cfg, state, job="900"):
    hooks.prolog(cfg, job, "mig:1g.10gb:1")
    assert outcome(cfg, job) == "bound", task_prolog(cfg.run_dir, job)
    hooks.epilog(cfg, job)


def outcome(cfg, job):
    """What a prolog that returned did for the job: "bound" (env file) or "job
    failed" (fail file). Neither is a bug, never a success: the job would run
    without its devices."""
    text, code = task_prolog(cfg.run_dir, job)
    if code == 0 and text.startswith("export CUDA_VISIBLE_DEVICES=MIG-"):
        return "bound"
    assert code == 1 and "could not get its MIG devices" in text, (code, text)
    return "job failed"


# -- 1. the fault matrix --------------------------------------------------------
def _prolog_and_epilog_calls(make_node, monkeypatch):
    cfg, state = make_node("1xH100-80GB")
    pro = record_calls(monkeypatch, lambda: hooks.prolog(cfg, "1", REQUEST))
    epi = record_calls(monkeypatch, lambda: hooks.epilog(cfg, "1"))
    return sorted(set(pro)), sorted(set(epi))


@pytest.mark.slow
def test_fault_matrix(make_node, monkeypatch, tmp_path_factory):
    pro_calls, epi_calls = _prolog_and_epilog_calls(make_node, monkeypatch)
    cases = [("prolog", c, e) for c in pro_calls for e in NVML_ERRORS] + \
            [("epilog", c, e) for c in epi_calls for e in NVML_ERRORS]
    outcomes = {"bound": 0, "job failed": 0, "node problem": 0, "released": 0, "kept for reconcile": 0}
    for hook, call, error in cases:
        cfg, state = make_node("1xH100-80GB")
        if hook == "epilog":
            hooks.prolog(cfg, "1", REQUEST)
        inject(state, call, error)
        try:
            if hook == "prolog":
                hooks.prolog(cfg, "1", REQUEST)
                outcomes[outcome(cfg, "1")] += 1
            else:
                rec = hooks.epilog(cfg, "1")
                outcomes["released" if rec.state == "released" else "kept for reconcile"] += 1
        except NodeProblem:
            outcomes["node problem"] += 1
        inject(state, call, error, after=10**9)      # the fault is spent; clear it
        check_invariants(cfg, state)
        next_job_works(cfg, state)
        hooks.epilog(cfg, "1")
        check_invariants(cfg, state)
        assert SimStore(state).read()["gpus"][0]["gis"] == []
    print(f"\nfault matrix: {len(cases)} cases ({len(pro_calls)} prolog calls, {len(epi_calls)} "
          f"epilog calls x {len(NVML_ERRORS)} errors): {outcomes}")
    assert len(cases) >= 150


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES])
def test_prolog_that_cannot_create_fails_the_job(make_node, error):
    """Both create attempts fail: the job must be failed (its TaskProlog exits
    1 with the reason), not left with neither an env file nor a fail file."""
    cfg, state = make_node("1xH100-80GB")
    inject(state, "nvmlDeviceCreateGpuInstanceWithPlacement", error, times=2)
    hooks.prolog(cfg, "1", REQUEST)
    assert outcome(cfg, "1") == "job failed"
    check_invariants(cfg, state)
    next_job_works(cfg, state)


# -- 2. crashes: SIGKILL at every NVML call, and at random moments -------------------
def hook_env(cfg, job):
    """The environment a hook process gets, with a config file mirroring `cfg`."""
    conf = os.path.join(os.path.dirname(cfg.state_dir), "hooks.toml")
    if not os.path.exists(conf):
        with open(conf, "w") as f:
            f.write(f'backend = "{cfg.backend}"\nstate_dir = "{cfg.state_dir}"\n'
                    f'run_dir = "{cfg.run_dir}"\nwait_for_room = {cfg.wait_for_room}\n'
                    f'epilog_retries = {cfg.epilog_retries}\nepilog_retry_delay = {cfg.epilog_retry_delay}\n')
    return {**os.environ, "SLURM_MIG_CONFIG": conf, "SLURM_JOB_ID": job, "SLURM_MIG_REQUEST": REQUEST}


def run_hook(cfg, verb, job, **kw):
    env = hook_env(cfg, job)
    return subprocess.run([sys.executable, "-m", "slurm_mig.hooks.main", verb], env=env,
                          capture_output=True, text=True, timeout=60, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("hook", ["prolog", "epilog"])
def test_kill_at_every_nvml_call_then_recover(make_node, monkeypatch, hook):
    cfg, state = make_node("1xH100-80GB")
    setup = (lambda: None) if hook == "prolog" else (lambda: hooks.prolog(cfg, "1", REQUEST))
    setup()
    run = (lambda: hooks.prolog(cfg, "1", REQUEST)) if hook == "prolog" else (lambda: hooks.epilog(cfg, "1"))
    sequence = record_calls(monkeypatch, run)
    assert len(sequence) > 20
    for i, call in enumerate(sequence):
        cfg, state = make_node("1xH100-80GB")
        setup()
        inject(state, call, KILL, after=sequence[:i].count(call))
        p = run_hook(cfg, hook, "1")
        assert p.returncode == -signal.SIGKILL, (i, call, p.returncode, p.stderr)
        inject(state, call, KILL, after=10**9)
        check_invariants(cfg, state)
        next_job_works(cfg, state)
        hooks.epilog(cfg, "1")
        check_invariants(cfg, state)
        assert SimStore(state).read()["gpus"][0]["gis"] == []


@pytest.mark.slow
def test_random_kills_during_hooks(make_node):
    rng = random.Random(7)
    cfg, state = make_node("2xH100-80GB")
    for i in range(25):
        job = str(100 + i % 6)
        verb = rng.choice(["prolog", "prolog", "epilog"])
        env = hook_env(cfg, job)
        p = subprocess.Popen([sys.executable, "-m", "slurm_mig.hooks.main", verb], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        check_invariants(cfg, state)
    for j in range(100, 106):
        hooks.epilog(cfg, str(j))
    check_invariants(cfg, state)
    assert all(g["gis"] == [] for g in SimStore(state).read()["gpus"])


def test_gpu_reset_closes_records(make_node, cli):
    cfg, state = make_node("2xH100-80GB")
    hooks.prolog(cfg, "1", "mig:7g.80gb:1", gpu=1)
    cli("sim", "reset", state, "--gpu", "1", check=0)
    assert any("vanished" in a for a in hooks.reconcile(cfg))
    assert Ledger(cfg.state_dir).get("1").state == "released"
    check_invariants(cfg, state)


# -- 3. parallel random hook sequences ------------------------------------------------
@pytest.mark.slow
def test_parallel_random_hook_sequences(make_node):
    rng = random.Random(11)
    cfg, state = make_node("2xH100-80GB")
    specs = ["mig:1g.10gb:1", "mig:2g.20gb:1", "mig:3g.40gb:1", "mig:1g.10gb:2,mig:2g.20gb:1",
             "mig:7g.80gb:1", "mig:4g.40gb:1"]
    total = 0
    for round_ in range(6):
        procs = []
        for _ in range(20):
            job = str(rng.randint(1, 15))
            verb = rng.choice(["prolog", "prolog", "epilog"])
            env = {**hook_env(cfg, job), "SLURM_MIG_REQUEST": rng.choice(specs)}
            procs.append(subprocess.Popen([sys.executable, "-m", "slurm_mig.hooks.main", verb], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
        total += len(procs)
        check_invariants(cfg, state)
    for j in range(1, 16):
        hooks.epilog(cfg, str(j))
    check_invariants(cfg, state)
    assert all(g["gis"] == [] for g in SimStore(state).read()["gpus"])
    assert total == 120


def test_lock_timeout_is_a_clear_error(make_node, tmp_path):
    cfg, state = make_node()
    conf = tmp_path / "c.toml"
    conf.write_text(f'backend = "{cfg.backend}"\nstate_dir = "{cfg.state_dir}"\n'
                    f'run_dir = "{cfg.run_dir}"\nlock_timeout = 1\n')
    with Ledger(cfg.state_dir).lock():
        env = {**hook_env(cfg, "5"), "SLURM_MIG_CONFIG": str(conf)}
        t = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "slurm_mig.hooks.main", "prolog"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert time.monotonic() - t < 30
    assert p.returncode == 1 and "could not lock" in p.stderr and "Traceback" not in p.stderr


# -- 4. hostile and malformed input ---------------------------------------------------------
@given(st.text(max_size=300))
def test_allocation_parser_fuzz(text):
    for parse in (parse_allocation, lambda t: parse_jobs_json(t, "7", "n1"),
                  lambda t: parse_job_line(t, "7", "n1", "0"), lambda t: parse_job_line("7|" + t, "7", "n1", "0")):
        try:
            req = parse(text)
        except BadInput:
            continue
        assert req.gpu is None or req.gpu >= 0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_layout_parser_fuzz(text):
    from slurm_mig.core.layout import load_config
    try:
        load_config(text, "a")
    except BadInput:
        pass


@pytest.mark.parametrize("content", ["", "{", '{"job": "1"}', '{"job": "../x", "state": "bound"}',
                                     '{"job": "1", "state": "weird"}', "[]", "\x00\xff", '{"schema": "one"}'])
def test_an_unreadable_record_is_quarantined_and_its_instances_kept(make_node, content, cli):
    """Job 1's record is damaged while its instance sits idle between steps: the
    next Prolog moves the record to quarantine/ (the node is not drained), and
    nothing takes or destroys the instance until Slurm says every job running
    here has a readable record."""
    cfg, state = make_node()
    hooks.prolog(cfg, "1", "mig:7g.80gb:1")
    (uuid,) = [c["uuid"] for g in SimStore(state).read()["gpus"] for gi in g["gis"] for c in gi["cis"]]
    path = os.path.join(cfg.state_dir, "jobs", "1.json")
    with open(path, "w", encoding="latin-1") as f:
        f.write(content)
    hooks.prolog(cfg, "2", "mig:1g.10gb:1")            # the whole GPU may still be job 1's: job 2 fails alone
    assert Ledger(cfg.state_dir).get("2").state == "failed"
    assert not os.path.exists(path) and [n.split(".json")[0] for n in
                                         os.listdir(os.path.join(cfg.state_dir, "quarantine"))] == ["1"]
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir, "PATH": "/usr/bin:/bin"}
    p = cli("reconcile", "--node", "n1", env=env, check=0)           # Slurm cannot be asked here
    assert f"kept unowned 7g.80gb GI" in p.stdout and "quarantined" in p.stdout
    assert [c["uuid"] for g in SimStore(state).read()["gpus"] for gi in g["gis"] for c in gi["cis"]] == [uuid]
    actions = hooks.reconcile(cfg, active_jobs=set())      # Slurm: no job runs here any more
    assert any("destroy unowned 7g.80gb" in a for a in actions) and not os.listdir(
        os.path.join(cfg.state_dir, "quarantine"))
    assert SimStore(state).read()["gpus"][0]["gis"] == []


def test_truncated_sim_state_is_named(make_node):
    cfg, state = make_node()
    with open(state, "r+") as f:
        f.truncate(40)
    with pytest.raises(StateCorrupt, match="node.json"):
        hooks.prolog(cfg, "2", "mig:1g.10gb:1")


@pytest.mark.parametrize("job", ["../1", "1;id", "", "1 2", "$(id)", "01x"])
def test_task_prolog_script_ignores_hostile_job_ids(make_node, job):
    cfg, _ = make_node()
    env = {**os.environ, "SLURM_JOB_ID": job, "SLURM_MIG_RUN_DIR": cfg.run_dir}
    p = subprocess.run([os.path.join(REPO, "prolog", "slurm-mig-task-prolog")], env=env,
                       capture_output=True, text=True)
    assert (p.returncode, p.stdout) == (0, "")


# -- 5. permissions -------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_env_files_are_private_to_the_job_user(make_node):
    import shutil
    import tempfile
    cfg, _ = make_node("1xH100-80GB")
    top = tempfile.mkdtemp(prefix="slurm-mig-perm-")     # pytest's own tmp is root-only
    os.chmod(top, 0o755)
    cfg = cfg._replace(run_dir=os.path.join(top, "run"), state_dir=os.path.join(top, "state"))
    hooks.prolog(cfg, "1", "mig:1g.10gb:1", uid=65534)      # nobody's job
    hooks.prolog(cfg, "2", "mig:1g.10gb:1", uid=1)          # daemon's job
    # a copy nobody can read: the checkout may live where nobody can (root's home)
    script = shutil.copy(os.path.join(REPO, "prolog", "slurm-mig-task-prolog"), top)

    def as_nobody(*argv, job):
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                              env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": job,
                                   "SLURM_MIG_RUN_DIR": cfg.run_dir},
                              capture_output=True, text=True)
    assert as_nobody(script, job="1").stdout.startswith("export CUDA_VISIBLE_DEVICES=MIG-")
    assert as_nobody(script, job="2").stdout == ""               # not nobody's job
    assert as_nobody("cat", os.path.join(cfg.run_dir, "2.env"), job="2").returncode != 0
    assert as_nobody("touch", os.path.join(cfg.run_dir, "3.env"), job="3").returncode != 0
    assert as_nobody("ls", cfg.state_dir, job="1").returncode != 0
    st_env = os.stat(os.path.join(cfg.run_dir, "1.env"))
    assert (st_env.st_uid, st_env.st_mode & 0o777) == (65534, 0o400)
    for name in os.listdir(os.path.join(cfg.state_dir, "jobs")):
        assert os.stat(os.path.join(cfg.state_dir, "jobs", name)).st_mode & 0o077 == 0
    shutil.rmtree(top)


@pytest.mark.slow
@pytest.mark.parametrize("gpus", ["1xH100-80GB", "1xA100-40GB"])
def test_whole_gpu_hooks_under_single_faults(make_node, monkeypatch, gpus):
    cfg, state = make_node(gpus)
    run_pro = lambda: hooks.run_prolog(cfg, "1", whole_gpus=[0])       # noqa: E731
    calls = sorted(set(record_calls(monkeypatch, run_pro))
                   | set(record_calls(monkeypatch, lambda: hooks.epilog(cfg, "1"))))
    cases = 0
    for call in calls:
        for error in (pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_IN_USE, pynvml.NVML_ERROR_GPU_IS_LOST):
            for phase in ("prolog", "epilog"):
                cfg, state = make_node(gpus)
                if phase == "epilog":
                    run_pro()
                inject(state, call, error)
                try:
                    run_pro() if phase == "prolog" else hooks.epilog(cfg, "1")
                except NodeProblem:
                    pass          # exit 1 under Slurm (NVML unusable); reconcile must still recover
                inject(state, call, error, after=10**9)
                hooks.epilog(cfg, "1")
                hooks.reconcile(cfg)
                gpu = SimStore(state).read()["gpus"][0]
                assert gpu["gis"] == [] and gpu["mig_current"] == 1, (call, error, phase, gpu)
                assert Ledger(cfg.state_dir).live() == []
                run_pro()                                      # the next whole-GPU job works
                assert task_prolog(cfg.run_dir, "1")[1] == 0
                hooks.epilog(cfg, "1")
                cases += 1
    assert cases == len(calls) * 6 and cases >= 30
