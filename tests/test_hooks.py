"""Prolog / task-prolog / epilog / reconcile on the simulated node."""
import json
import os
import subprocess
import sys

import pynvml
import pytest

from harness import calls as hooks
from slurm_mig.errors import NodeProblem
from slurm_mig.node.jobfiles import task_prolog
from slurm_mig.node.ledger import Ledger
from slurm_mig.sim import SimStore


def instances(state):
    return [gi for g in SimStore(state).read()["gpus"] for gi in g["gis"]]


def env_of(cfg, job):
    text, code = task_prolog(cfg.run_dir, job)
    assert code == 0, text
    assert text.startswith("export CUDA_VISIBLE_DEVICES=MIG-")
    return text.strip().split("=", 1)[1].split(",")


def test_prolog_task_prolog_epilog_cycle(make_node):
    cfg, state = make_node("1xH100-80GB")
    hooks.prolog(cfg, "101", "mig:3g.40gb:1,mig:1g.10gb:2")
    uuids = env_of(cfg, "101")
    assert len(uuids) == 3 and len(set(uuids)) == 3
    live_uuids = {ci["uuid"] for gi in instances(state) for ci in gi["cis"]}
    assert set(uuids) == live_uuids
    rec = Ledger(cfg.state_dir).get("101")
    assert rec.state == "bound" and sorted(rec.uuids) == sorted(uuids)
    assert oct(os.stat(cfg.state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(cfg.run_dir, "101.env")).st_mode & 0o777) == "0o400"
    hooks.epilog(cfg, "101")
    assert instances(state) == []
    assert Ledger(cfg.state_dir).get("101").state == "released"
    assert task_prolog(cfg.run_dir, "101") == ("", 0)
    hooks.epilog(cfg, "101")          # idempotent
    hooks.epilog(cfg, "999")          # unknown job: nothing to do


def test_epilog_of_a_job_without_gpus_does_nothing(make_node):
    """Under slurmd, no SLURM_JOB_GPUS and no record: no lock, no record, no
    NVML. A job that has a record is released even so, and a GPU job always."""
    cfg, state = make_node("1xH100-80GB")
    assert hooks.epilog(cfg, "7", env={}) is None
    assert not os.path.exists(cfg.state_dir)
    hooks.prolog(cfg, "8", "mig:1g.10gb:1")
    hooks.prolog(cfg, "9", "mig:1g.10gb:1")
    assert hooks.epilog(cfg, "8", env={}).state == "released"
    assert hooks.epilog(cfg, "9", env={"SLURM_JOB_GPUS": "0"}).state == "released"
    assert instances(state) == []
    assert hooks.epilog(cfg, "10", env={"SLURM_JOB_GPUS": "0"}) is None
    assert Ledger(cfg.state_dir).get("10").state == "released"      # tells a waiting Prolog


def test_prolog_is_idempotent(make_node):
    cfg, state = make_node()
    hooks.prolog(cfg, "5", "mig:2g.20gb:1")
    first = env_of(cfg, "5")
    hooks.prolog(cfg, "5", "mig:2g.20gb:1")
    assert env_of(cfg, "5") == first and len(instances(state)) == 1


def test_no_fit_fails_only_the_job(make_node):
    cfg, state = make_node()
    hooks.prolog(cfg, "1", "mig:7g.80gb:1")
    hooks.prolog(cfg, "2", "mig:1g.10gb:1")          # returns normally: exit 0, no drain
    text, code = task_prolog(cfg.run_dir, "2")
    assert code == 1 and text.startswith("print slurm-mig: job 2 could not get its MIG devices")
    assert "does not fit" in text
    assert Ledger(cfg.state_dir).get("2").state == "failed"
    assert len(instances(state)) == 1


def test_unknown_profile_fails_only_the_job(make_node):
    cfg, _ = make_node()
    hooks.prolog(cfg, "3", "mig:5g.55gb:1")
    text, code = task_prolog(cfg.run_dir, "3")
    assert code == 1 and "unknown MIG profile '5g.55gb'" in text


def test_waits_for_an_epilog_to_free_room(make_node):
    cfg, state = make_node(wait_for_room=20)
    hooks.prolog(cfg, "1", "mig:7g.80gb:1")
    env = {**os.environ, "SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir}
    waiting = subprocess.Popen([sys.executable, "-m", "slurm_mig", "-v", "prolog", "--job", "2",
                                "--request", "mig:3g.40gb:1", "--wait", "20"], env=env,
                               stderr=subprocess.PIPE, text=True)
    first = waiting.stderr.readline()          # the prolog is waiting before the epilog runs
    assert "waiting for room" in first, first
    hooks.epilog(cfg, "1")
    assert waiting.wait(timeout=60) == 0
    assert "bound MIG-" in waiting.stderr.read()
    assert len(env_of(cfg, "2")) == 1


def test_epilog_keeps_busy_instance_until_reconcile(make_node, cli):
    cfg, state = make_node()
    hooks.prolog(cfg, "7", "mig:1g.10gb:1")
    (uuid,) = env_of(cfg, "7")
    cli("sim", "busy", state, "--uuid", uuid, check=0)
    rec = hooks.epilog(cfg, "7")
    assert rec.state == "releasing" and uuid in rec.reason
    assert len(instances(state)) == 1
    # The busy instance is not handed to another job.
    hooks.prolog(cfg, "8", "mig:1g.10gb:7")
    assert task_prolog(cfg.run_dir, "8")[1] == 1
    cli("sim", "busy", state, "--uuid", uuid, "--clear", check=0)
    assert any("job 7" in a for a in hooks.reconcile(cfg))
    assert instances(state) == [] and Ledger(cfg.state_dir).live() == []


def test_reconcile_cleans_after_a_dead_prolog_and_unowned_instances(make_node, driver_for):
    cfg, state = make_node()
    from slurm_mig.core import catalog
    from slurm_mig.core.view import Held
    from slurm_mig.core.lifecycle import Record
    d = driver_for(state)
    p = catalog.load().model("H100-80GB").find_profile("3g.40gb")
    made = d.create(0, p, 0)             # the prolog died after creating this ...
    Ledger(cfg.state_dir).ensure()
    Ledger(cfg.state_dir).put(Record(job="44", state="planned", instances=[
        Held(gpu=0, profile_id=p.id, profile=p.name, start=0, size=4)]))
    d.create(0, catalog.load().model("H100-80GB").find_profile("1g.10gb"), 6)   # ... and this has no owner
    assert len(hooks.reconcile(cfg, dry_run=True)) == 2 and len(instances(state)) == 2
    actions = hooks.reconcile(cfg)
    assert any("job 44" in a for a in actions) and any("unowned" in a for a in actions)
    assert instances(state) == []
    assert made.uuid


def test_vanished_instances_close_the_record(make_node):
    cfg, state = make_node()
    hooks.prolog(cfg, "9", "mig:1g.10gb:1")
    with SimStore(state).transaction() as st:     # a GPU reset wipes instances
        st["gpus"][0]["gis"] = []
        st["_dirty"] = True
    hooks.prolog(cfg, "10", "mig:1g.10gb:1")
    assert Ledger(cfg.state_dir).get("9").state == "released"


def test_hopper_mig_off_is_enabled_by_prolog(make_node):
    cfg, state = make_node("1xH100-80GB", mig=False)
    hooks.prolog(cfg, "1", "mig:1g.10gb:1")
    assert SimStore(state).read()["gpus"][0]["mig_current"] == 1
    assert len(env_of(cfg, "1")) == 1


def test_ampere_mig_off_is_a_node_problem_naming_the_fix(make_node):
    cfg, _ = make_node("1xA100-40GB", mig=False)
    with pytest.raises(NodeProblem, match=r"nvidia-smi -i 0 -mig 1"):
        hooks.prolog(cfg, "1", "mig:1g.5gb:1")
    cfg2, _ = make_node("1xA100-40GB,1xH100-80GB", mig=False)
    hooks.prolog(cfg2, "2", "mig:1g.10gb:1")           # the Hopper GPU serves it
    assert task_prolog(cfg2.run_dir, "2")[1] == 0


# -- faults: any single NVML failure during a prolog -----------------------
PROLOG_CALLS = ["nvmlDeviceCreateGpuInstanceWithPlacement", "nvmlGpuInstanceGetInfo",
                "nvmlGpuInstanceGetComputeInstanceProfileInfo", "nvmlGpuInstanceCreateComputeInstance",
                "nvmlComputeInstanceGetInfo", "nvmlDeviceGetUUID", "nvmlDeviceGetGpuInstances"]
ERRORS = [pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES, pynvml.NVML_ERROR_UNKNOWN, pynvml.NVML_ERROR_IN_USE]


@pytest.mark.parametrize("call", PROLOG_CALLS)
@pytest.mark.parametrize("error", ERRORS)
@pytest.mark.parametrize("after", [0, 1, 3])
def test_single_nvml_failure_in_prolog_leaks_nothing(make_node, call, error, after):
    cfg, state = make_node()
    with SimStore(state).transaction() as st:
        st["faults"] = [{"call": call, "error": error, "after": after, "times": 1, "fired": 0}]
        st["_dirty"] = True
    # A creation-path NVML error is the job's problem: the prolog absorbs it
    # (an NVMLError escaping would be exit 1 under Slurm, a drained node).
    hooks.prolog(cfg, "1", "mig:3g.40gb:1,mig:1g.10gb:2")
    rec = Ledger(cfg.state_dir).get("1")
    live = {ci["uuid"] for gi in instances(state) for ci in gi["cis"]}
    n_gis = len(instances(state))
    if rec is not None and rec.state == "bound":
        assert set(rec.uuids) == live and n_gis == 3
        assert sorted(env_of(cfg, "1")) == sorted(live)
    else:
        assert n_gis == 0, "orphan instance after a failed prolog"
    hooks.epilog(cfg, "1")
    hooks.prolog(cfg, "2", "mig:7g.80gb:1")           # the next job on the node works
    assert len(env_of(cfg, "2")) == 1


# -- concurrency: separate processes at once --------------------------------
def run_parallel(cfg, verb, jobs, spec=None):
    env = {**os.environ, "SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir}
    procs = []
    for j in jobs:
        args = [sys.executable, "-m", "slurm_mig", verb, "--job", str(j)]
        if spec:
            args += ["--request", spec, "--wait", "0"]
        procs.append(subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=300), p.stderr.read()) for p in procs]


@pytest.mark.slow
@pytest.mark.parametrize("gpus,n", [(1, 7), (8, 56)])
def test_concurrent_prologs_bind_distinct_instances(make_node, gpus, n):
    cfg, state = make_node(f"{gpus}xH100-80GB")
    results = run_parallel(cfg, "prolog", range(1, n + 2), "mig:1g.10gb:1")
    assert all(rc == 0 for rc, _ in results), results
    bound = {j: env_of(cfg, str(j)) for j in range(1, n + 2) if task_prolog(cfg.run_dir, str(j))[1] == 0}
    refused = [j for j in range(1, n + 2) if task_prolog(cfg.run_dir, str(j))[1] == 1]
    assert len(bound) == n and len(refused) == 1
    all_uuids = [u for us in bound.values() for u in us]
    assert len(set(all_uuids)) == n
    results = run_parallel(cfg, "epilog", range(1, n + 2))
    assert all(rc == 0 for rc, _ in results), results
    assert instances(state) == [] and Ledger(cfg.state_dir).live() == []


def test_gpu_fallback_places_elsewhere_only_when_enabled(make_node):
    cfg, state = make_node("2xH100-80GB", policy="first-fit")
    for job, spec in [("1", "mig:1g.10gb:1"), ("2", "mig:1g.10gb:1"), ("3", "mig:1g.10gb:1"),
                      ("4", "mig:3g.40gb:1")]:
        hooks.prolog(cfg, job, spec, gpu=0)
    hooks.epilog(cfg, "2")
    # GPU 0 now has memory slots 1 and 3 free: room by count, none for a 2g.20gb.
    hooks.prolog(cfg, "5", "mig:2g.20gb:1", gpu=0)
    assert task_prolog(cfg.run_dir, "5")[1] == 1
    hooks.prolog(cfg._replace(gpu_fallback=True), "6", "mig:2g.20gb:1", gpu=0)
    assert task_prolog(cfg.run_dir, "6")[1] == 0
    assert [i.gpu for i in Ledger(cfg.state_dir).get("6").instances] == [1]


# -- whole GPUs (--gres=gpu) in dynamic mode ------------------------------------
def test_whole_hopper_gpu_runs_with_mig_off_and_gets_it_back(make_node):
    cfg, state = make_node("2xH100-80GB")
    hooks.run_prolog(cfg, "30", whole_gpus=[1])
    gpus = SimStore(state).read()["gpus"]
    assert gpus[1]["mig_current"] == 0
    assert env_of_any(cfg, "30") == [gpus[1]["uuid"]]
    hooks.prolog(cfg, "31", "mig:7g.80gb:1")            # unpinned: must not take GPU 1
    assert [i.gpu for i in Ledger(cfg.state_dir).get("31").instances] == [0]
    hooks.prolog(cfg, "32", "mig:1g.10gb:1")            # nothing left but the held GPU
    assert task_prolog(cfg.run_dir, "32")[1] == 1
    from slurm_mig.node.context import NodeContext
    from slurm_mig.node.status import status_doc
    assert status_doc(NodeContext(cfg))[0][1]["can_create"] == {}       # status does not offer it either
    hooks.epilog(cfg, "30")
    assert SimStore(state).read()["gpus"][1]["mig_current"] == 1
    assert Ledger(cfg.state_dir).get("30").state == "released"


def test_whole_ampere_gpu_gets_a_full_instance(make_node):
    cfg, state = make_node("1xA100-40GB")
    hooks.run_prolog(cfg, "40", whole_gpus=[0])
    (uuid,) = env_of(cfg, "40")
    gis = SimStore(state).read()["gpus"][0]["gis"]
    assert [(g["profile_id"], g["start"], g["size"]) for g in gis] == [(0, 0, 8)]
    assert gis[0]["cis"][0]["uuid"] == uuid
    hooks.epilog(cfg, "40")
    assert SimStore(state).read()["gpus"][0]["gis"] == []


def test_whole_gpu_with_another_jobs_instances_fails_only_the_job(make_node):
    cfg, state = make_node("1xH100-80GB")
    hooks.prolog(cfg, "50", "mig:1g.10gb:1")
    hooks.run_prolog(cfg, "51", whole_gpus=[0])
    text, code = task_prolog(cfg.run_dir, "51")
    assert code == 1 and "still holds MIG instances of job 50" in text
    assert SimStore(state).read()["gpus"][0]["mig_current"] == 1


def env_of_any(cfg, job):
    text, code = task_prolog(cfg.run_dir, job)
    assert code == 0, text
    return text.strip().split("=", 1)[1].split(",")


def test_nvml_errors_reach_the_job_by_name_not_by_code(make_node):
    """The simulator's errors print as pynvml's 'NVML Error with code 23' (no
    library loaded); what the job reads names the error and what it means."""
    from slurm_mig.sim.control import add_fault
    cfg, state = make_node()
    add_fault(state, "nvmlDeviceCreateGpuInstanceWithPlacement", "INSUFFICIENT_RESOURCES", times=5)
    hooks.run_prolog(cfg, "7", "mig:1g.10gb:1", gpu=0, uid=None)
    text, code = task_prolog(cfg.run_dir, "7")
    assert code == 1 and "INSUFFICIENT_RESOURCES (23): no room for it there" in text
    assert "with code" not in text


@pytest.mark.parametrize("error,effect", [("GPU_IS_LOST", "node"), ("NO_PERMISSION", "node"),
                                          ("RESET_REQUIRED", "node"), ("INVALID_ARGUMENT", "refused"),
                                          ("NOT_SUPPORTED", "refused"), ("IN_USE", "busy"),
                                          ("INSUFFICIENT_RESOURCES", "retry"), ("NOT_FOUND", "retry"),
                                          ("UNKNOWN", "retry")])
def test_each_nvml_error_has_one_effect_for_the_job_or_the_node(error, effect):
    from slurm_mig.nvml.errors import NVMLError, fault
    code = getattr(pynvml, "NVML_ERROR_" + error)
    got = fault(NVMLError(code))
    assert (got.name, got.code, got.effect.value) == (error, code, effect)
    assert str(got).startswith(f"{error} ({code}): ") and "with code" not in str(got)


@pytest.mark.parametrize("call", ["nvmlDeviceGetMigMode", "nvmlDeviceCreateGpuInstanceWithPlacement"])
def test_a_lost_gpu_is_a_node_problem_with_its_instances_named(make_node, call):
    """GPU_IS_LOST while reading or creating: the Prolog exits 1 (the GPU needs
    an admin; retrying or failing job after job would not help), and whatever
    it made stays named by the record for reconcile."""
    from slurm_mig.sim.control import add_fault
    cfg, state = make_node()
    add_fault(state, call, "GPU_IS_LOST", times=5)
    with pytest.raises(NodeProblem, match=r"NVML error while (reading the node|creating instances): "
                       r"GPU_IS_LOST \(15\): the GPU fell off the bus; the GPU or its driver needs an admin"):
        hooks.run_prolog(cfg, "7", "mig:1g.10gb:1", gpu=0, uid=None)
    assert not os.path.exists(os.path.join(cfg.run_dir, "7.env"))
    named = {u for r in Ledger(cfg.state_dir).live() for u in r.uuids}
    assert {gi["uuid"] for gi in SimStore(state).read()["gpus"][0]["gis"]} <= named


@pytest.mark.parametrize("error,tries", [("GPU_IS_LOST", 1), ("IN_USE", 4)])
def test_the_epilog_retries_a_destroy_only_where_waiting_can_help(make_node, error, tries):
    """A busy instance is retried epilog_retries times; one on a lost GPU is
    kept for reconcile at once. Either way the record keeps it (RELEASING)."""
    from slurm_mig.sim.control import add_fault
    cfg, state = make_node(epilog_retries=3)
    hooks.prolog(cfg, "7", "mig:1g.10gb:1", gpu=0)
    add_fault(state, "nvmlComputeInstanceDestroy", error, times=10)
    rec = hooks.epilog(cfg, "7")
    assert rec.state == "releasing" and len(rec.instances) == 1
    assert SimStore(state).read()["faults"][0]["fired"] == tries


def test_a_gpu_model_the_catalog_does_not_know_is_named(make_node, monkeypatch):
    from slurm_mig.nvml.driver import Driver
    cfg, state = make_node()
    real = Driver.gpus
    monkeypatch.setattr(Driver, "gpus", lambda self, *a, **k: [g._replace(model=None) for g in real(self, *a, **k)])
    hooks.run_prolog(cfg, "7", "mig:1g.10gb:1", gpu=0, uid=None)
    text, code = task_prolog(cfg.run_dir, "7")
    assert code == 1 and "is a model the catalog does not know: `slurm-mig catalog import --gpu 0`" in text
    hooks.run_prolog(cfg, "8", "mig:1g.10gb:1", gpu=3, uid=None)
    assert "GPU 3 does not exist on this node" in task_prolog(cfg.run_dir, "8")[0]
