"""`slurm-mig status --prometheus`: node metrics for node_exporter's textfile
collector, read back with prometheus_client's own parser; the node counters."""
import json
import multiprocessing
import os
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import calls as hooks
import slurm_mig
from slurm_mig.errors import StateCorrupt
from slurm_mig.node import counters
from slurm_mig.sim import control


def parse(text):
    """{metric family name: {(sorted label items): value}}."""
    return {f.name: {tuple(sorted(s.labels.items())): s.value for s in f.samples}
            for f in text_string_to_metric_families(text)}


def labelled(family, **labels):
    """The samples of `family` with these labels (others free)."""
    return {k: v for k, v in family.items() if all((n, str(x)) in k for n, x in labels.items())}


@pytest.fixture
def node(make_node, cli):
    cfg, state = make_node("2xH100-80GB")
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir, "SLURM_MIG_CONFIG": os.devnull}
    return cfg, state, lambda *args, check=None: cli(*args, env=env, check=check)


def test_metrics_describe_the_node_as_status_does(node):
    cfg, state, run = node
    hooks.run_prolog(cfg, "21", "mig:3g.40gb:1,mig:1g.10gb:2", gpu=0, uid=1000)
    hooks.run_prolog(cfg, "22", "mig:2g.20gb:1", gpu=1, uid=1000)
    hooks.run_prolog(cfg, "23", "mig:7g.80gb:1", gpu=0, uid=1000)        # no room: fails alone
    doc = json.loads(run("status", "--json", check=0).stdout)["gpus"]
    m = parse(run("status", "--prometheus", check=0).stdout)
    assert m["slurm_mig_gpu_mig_mode"] == {
        (("gpu", str(g)), ("state", s)): 1.0 for g in (0, 1) for s in ("current", "pending")}
    assert len(m["slurm_mig_gpu_info"]) == 2
    jobs = {}
    for k in m["slurm_mig_instance"]:
        labels = dict(k)
        assert labels["owner"] == "job"
        jobs.setdefault(labels["job"], []).append((int(labels["gpu"]), labels["profile"], labels["uuid"]))
    assert {j: sorted(p for _, p, _ in v) for j, v in jobs.items()} == {
        "21": ["1g.10gb", "1g.10gb", "3g.40gb"], "22": ["2g.20gb"]}
    assert {u for v in jobs.values() for _, _, u in v} == {i["uuid"] for g in doc for i in g["instances"]}
    assert m["slurm_mig_instances"] == {
        (("gpu", "0"), ("profile", "1g.10gb")): 2.0, (("gpu", "0"), ("profile", "3g.40gb")): 1.0,
        (("gpu", "1"), ("profile", "2g.20gb")): 1.0}
    assert {(int(dict(k)["gpu"]), dict(k)["profile"]): v for k, v in m["slurm_mig_can_create"].items()} == {
        (g["index"], p): float(n) for g in doc for p, n in g["can_create"].items()}
    assert m["slurm_mig_prologs"][()] == 3.0 and m["slurm_mig_jobs_failed"][()] == 1.0
    assert m["slurm_mig_nvml_up"][()] == m["slurm_mig_state_readable"][()] == 1.0


def test_idle_and_busy_unowned_instances(node):
    cfg, state, run = node
    hooks.run_prolog(cfg, "24", "mig:1g.10gb:2", gpu=1, uid=1000)
    uuids = [i["uuid"] for g in json.loads(run("status", "--json", check=0).stdout)["gpus"]
             for i in g["instances"]]
    os.unlink(os.path.join(cfg.state_dir, "jobs", "24.json"))         # nobody owns them now
    control.set_busy(state, uuids[0])
    inst = parse(run("status", "--prometheus", check=0).stdout)["slurm_mig_instance"]
    assert sorted((dict(k)["uuid"], dict(k)["owner"], dict(k)["job"]) for k in inst) == sorted(
        [(uuids[0], "in_use", ""), (uuids[1], "idle", "")])


def test_reconcile_actions_are_counted(node):
    cfg, state, run = node
    hooks.run_prolog(cfg, "25", "mig:1g.10gb:1", gpu=0, uid=1000)
    hooks.run_prolog(cfg, "26", "mig:1g.10gb:1", gpu=0, uid=1000)
    assert len(hooks.reconcile(cfg, dry_run=True, active_jobs=set())) == 2    # only says
    assert counters.read(cfg.state_dir)["reconcile_actions"] == 0
    actions = hooks.reconcile(cfg, active_jobs=set())          # both jobs gone without an epilog
    assert len(actions) == 2
    assert counters.read(cfg.state_dir) == {"prologs": 2, "requeues": 0, "jobs_failed": 0,
                                            "reconcile_actions": 2}


def test_output_file_is_replaced_atomically(node, tmp_path):
    cfg, state, run = node
    out = tmp_path / "textfile" / "slurm_mig.prom"
    out.parent.mkdir()
    run("status", "--prometheus", "--output", str(out), check=0)
    first = os.stat(out)
    assert oct(first.st_mode & 0o777) == "0o644"
    hooks.run_prolog(cfg, "27", "mig:1g.10gb:1", gpu=0, uid=1000)
    assert run("status", "--prometheus", "--output", str(out), check=0).stdout == ""
    assert os.stat(out).st_ino != first.st_ino                # a new file renamed over the old
    assert os.listdir(out.parent) == ["slurm_mig.prom"]      # no temporary file left
    assert parse(out.read_text())["slurm_mig_prologs"][()] == 1.0
    assert "--output goes with --prometheus" in run("status", "--output", str(out), check=2).stderr
    assert "--json and --prometheus are two formats" in run("status", "--prometheus", "--json", check=2).stderr


def test_what_cannot_be_read_is_said_and_the_rest_written(node, tmp_path):
    cfg, state, run = node
    hooks.run_prolog(cfg, "28", "mig:9g.10gb:1", gpu=0, uid=1000)        # unknown profile: fails alone
    os.rename(state, state + ".away")                                     # NVML cannot start
    p = run("status", "--prometheus", check=1)
    m = parse(p.stdout)
    assert m["slurm_mig_nvml_up"][()] == 0.0 and "slurm_mig_instance" not in m
    assert m["slurm_mig_jobs_failed"][()] == 1.0 and m["slurm_mig_state_readable"][()] == 1.0
    assert "cannot read the GPUs" in p.stderr
    os.rename(state + ".away", state)
    with open(os.path.join(cfg.state_dir, counters.FILE), "w") as f:
        f.write('{"prologs": -3}')
    p = run("status", "--prometheus", check=1)
    m = parse(p.stdout)
    assert m["slurm_mig_state_readable"][()] == 0.0 and "slurm_mig_prologs" not in m
    assert m["slurm_mig_nvml_up"][()] == 1.0 and "does not hold counters" in p.stderr


def _count(state_dir, times):
    for _ in range(times):
        counters.bump(state_dir, "prologs")


def test_concurrent_counts_are_all_kept(tmp_path):
    state_dir = str(tmp_path / "state")
    procs = [multiprocessing.Process(target=_count, args=(state_dir, 40)) for _ in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert counters.read(state_dir)["prologs"] == 200


def test_a_corrupt_counter_file_restarts_the_counts(tmp_path, capsys):
    state_dir = str(tmp_path / "state")
    os.makedirs(state_dir, mode=0o700)
    with open(os.path.join(state_dir, counters.FILE), "w") as f:
        f.write("not json")
    with pytest.raises(StateCorrupt):
        counters.read(state_dir)
    counters.bump(state_dir, "requeues", 2)
    assert counters.read(state_dir)["requeues"] == 2 and "counting from 0" in capsys.readouterr().err
    with pytest.raises(ValueError):
        counters.bump(state_dir, "nonsense")


def test_the_shipped_unit_writes_the_file(node, tmp_path):
    """The ExecStart of slurm-mig-metrics.service, run as written
    (slurm-mig from this checkout, the file path of its Environment=)."""
    cfg, state, run = node
    units = os.path.join(os.path.dirname(slurm_mig.__file__), "systemd")
    unit = open(os.path.join(units, "slurm-mig-metrics.service")).read()
    prom = re.search(r"^Environment=SLURM_MIG_PROM=(\S+)$", unit, re.M).group(1)
    argv = re.search(r"^ExecStart=@SLURM_MIG@ (.*)$", unit, re.M).group(1).split()
    out = tmp_path / os.path.basename(prom)
    run(*[str(out) if a == "${SLURM_MIG_PROM}" else a for a in argv], check=0)
    assert parse(out.read_text())["slurm_mig_nvml_up"][()] == 1.0
    timer = open(os.path.join(units, "slurm-mig-metrics.timer")).read()
    assert "OnUnitActiveSec=1min" in timer
