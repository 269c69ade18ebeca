"""The Prolog's reading of Slurm: only for jobs holding a GPU here, from the
JSON, checked against slurmd's SLURM_JOB_GPUS, and failing the job alone
(never the node) when Slurm cannot be read. A batch job whose instances do
not fit goes back to the queue; others wait, then fail with the reason."""
import json
import os

import pytest

from slurm_mig.hooks.dispatch import run_prolog
from slurm_mig.hooks.epilog import epilog as run_epilog
from slurm_mig.node.jobfiles import task_prolog
from slurm_mig.slurm import jobinfo


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A squeue that logs each call and prints the one-job line of `job` (or
    fails `fail` times), an scontrol that logs each call and exits
    `scontrol_exit`, and an scancel that logs each call."""
    monkeypatch.setattr(jobinfo, "RETRY_DELAY", 0.01)
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"

    def make(job, fail=0, scontrol_exit=0):
        (tmp_path / "job.txt").write_text(job)
        scontrol = bin_dir / "scontrol"
        scontrol.write_text(f"#!/bin/sh\necho scontrol \"$@\" >> {calls}\n"
                            f"[ {scontrol_exit} = 0 ] || echo 'Requested operation is presently disabled' >&2\n"
                            f"exit {scontrol_exit}\n")
        scontrol.chmod(0o755)
        scancel = bin_dir / "scancel"
        scancel.write_text(f"#!/bin/sh\necho scancel \"$@\" >> {calls}\n")
        scancel.chmod(0o755)
        (tmp_path / "failures").write_text("x\n" * fail)
        script = bin_dir / "squeue"
        script.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
if [ -s {tmp_path}/failures ]; then sed -i 1d {tmp_path}/failures; echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1; fi
cat {tmp_path}/job.txt
""")
        script.chmod(0o755)
        return str(bin_dir)
    make.calls = lambda: calls.read_text().splitlines() if calls.exists() else []
    return make


ENV = {"SLURMD_NODENAME": "n1", "SLURM_JOB_GPUS": "0"}


def entry(tres, nodes="n1", batch_flag=False, requeue=False, restart_cnt=0, partition="debug",
          required="", features="", excluded="", admin_comment=""):
    """squeue's one-job line (jobinfo.FIELDS) for job 5."""
    flag = {True: "1", False: "0"}
    return "|".join(["5", flag[batch_flag], flag[requeue], str(restart_cnt), tres, nodes, partition,
                     required or "", features or "(null)", excluded, admin_comment or "(null)"]) + "|\n"


def full_gpu_node(make_node, **settings):
    """One H100 whose GPU another job (4) holds whole with a 7g.80gb."""
    cfg, state = make_node(**settings)
    run_prolog(cfg, "4", "mig:7g.80gb:1", gpu=0, uid=None)
    return cfg


BATCH = dict(batch_flag=True, requeue=True, restart_cnt=0)
SMALL_ON_GPU0 = "gres:mig:1g.10gb:1,gres:shard:8"


@pytest.fixture
def steerers(monkeypatch):
    """The steering processes the Prolog leaves, as (job, request)."""
    from slurm_mig.hooks import detached
    left = []
    from slurm_mig.slurm.requeue import STEER_ENV
    monkeypatch.setattr(detached, "spawn_detached",
                        lambda verb, job, env: left.append((job, json.loads(env[STEER_ENV]))))
    return left


def test_a_batch_job_without_room_goes_back_to_the_queue_marked(make_node, fake_slurm, steerers):
    """Even unsteered (steer = false), the job is marked and started by the
    steerer after its Epilog here: Slurm's own delay can be too soon on 22.05."""
    bin_dir = fake_slurm(entry(SMALL_ON_GPU0, **BATCH))
    cfg = full_gpu_node(make_node, slurm_bin_dir=bin_dir, steer=False)
    run_prolog(cfg, "5", uid=None, env=ENV)
    assert [c for c in fake_slurm.calls() if c.startswith("scontrol")] == ["scontrol requeue 5"]
    (job, request), = steerers
    assert job == "5" and request["keep_off"] is False and (request["attempt"], request["limit"]) == (1, 100)
    assert request["reason"].startswith("1g.10gb:1 does not fit next to the running jobs' instances")
    assert task_prolog(cfg.run_dir, "5") == ("", 0)
    from slurm_mig.node.ledger import Ledger
    rec = Ledger(cfg.state_dir).get("5")
    assert rec.state == "released" and rec.reason.startswith("requeued: ") and not rec.instances
    from slurm_mig.node import counters
    assert counters.read(cfg.state_dir)["requeues"] == 1


def test_a_requeued_job_is_left_to_a_steerer_with_where_slurm_may_run_it(make_node, fake_slurm, steerers):
    bin_dir = fake_slurm(entry(SMALL_ON_GPU0, partition="gpu", **BATCH))
    cfg = full_gpu_node(make_node, slurm_bin_dir=bin_dir)
    run_prolog(cfg, "5", uid=None, env=ENV)
    # one Slurm command: the steerer marks the job in its one update
    assert [c for c in fake_slurm.calls() if not c.startswith("-h -j 5")] == ["scontrol requeue 5"]
    assert os.path.exists(os.path.join(cfg.run_dir, "5.requeued"))        # the Epilog here removes it
    (job, request), = steerers
    assert job == "5" and (request["attempt"], request["limit"]) == (1, 100)
    assert request["constraints"] == dict(nodes=["n1"], partition="gpu", excluded=[], required="",
                                          features="", admin_comment="")
    run_epilog(cfg, "5")
    assert not os.path.exists(os.path.join(cfg.run_dir, "5.requeued"))
    assert request["reason"].startswith("1g.10gb:1 does not fit next to the running jobs' instances")


def test_a_steerer_that_cannot_start_leaves_the_job_requeued(make_node, fake_slurm, monkeypatch):
    from slurm_mig.hooks import detached

    def cannot(verb, job, env):
        raise OSError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(detached, "spawn_detached", cannot)
    bin_dir = fake_slurm(entry(SMALL_ON_GPU0, partition="gpu", **BATCH))
    cfg = full_gpu_node(make_node, slurm_bin_dir=bin_dir)
    run_prolog(cfg, "5", uid=None, env=ENV)
    assert [c.split(" AdminComment")[0] for c in fake_slurm.calls() if c.startswith("scontrol")] == \
        ["scontrol requeue 5", "scontrol update JobId=5"]
    assert task_prolog(cfg.run_dir, "5") == ("", 0)
    assert not os.path.exists(os.path.join(cfg.run_dir, "5.requeued"))


def test_steering_off_leaves_the_job_where_slurm_sends_it(make_node, fake_slurm, steerers):
    bin_dir = fake_slurm(entry(SMALL_ON_GPU0, partition="gpu", **BATCH))
    run_prolog(full_gpu_node(make_node, slurm_bin_dir=bin_dir, steer=False), "5", uid=None, env=ENV)
    run_prolog(full_gpu_node(make_node, slurm_bin_dir=bin_dir), "5", uid=None, env=ENV)
    assert [request["keep_off"] for _, request in steerers] == [False, True]


def test_the_mark_counts_requeues_up_to_the_limit(make_node, fake_slurm, steerers):
    bin_dir = fake_slurm(entry(SMALL_ON_GPU0, **dict(BATCH, restart_cnt=2)))
    cfg = full_gpu_node(make_node, slurm_bin_dir=bin_dir, max_requeues=3)
    run_prolog(cfg, "5", uid=None, env=ENV)
    (_, request), = steerers
    assert (request["attempt"], request["limit"]) == (3, 3)


@pytest.mark.parametrize("fields, scontrol_exit, why", [
    (dict(BATCH, batch_flag=False), 0, "interactive jobs (srun, salloc) cannot be requeued"),
    (dict(BATCH, requeue=False), 0, "the job may not be requeued (--no-requeue, or JobRequeue=0)"),
    (dict(BATCH, restart_cnt=100), 0, "it was requeued 100 times already (max_requeues = 100)"),
    (BATCH, 1, "Slurm refused to requeue it (scontrol failed 1 times: Requested operation is "
               "presently disabled)"),
])
def test_a_job_that_cannot_go_back_fails_alone_with_both_reasons(make_node, fake_slurm, fields,
                                                                 scontrol_exit, why):
    bin_dir = fake_slurm(entry(SMALL_ON_GPU0, **fields), scontrol_exit=scontrol_exit)
    cfg = full_gpu_node(make_node, slurm_bin_dir=bin_dir)
    run_prolog(cfg, "5", uid=None, env=ENV)
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 1 and "does not fit next to the running jobs' instances" in text
    assert text.rstrip().endswith(f"; not requeued: {why}")
    assert [c for c in fake_slurm.calls() if "update" in c] == []


def test_a_job_without_gpus_never_calls_slurm(make_node, fake_slurm):
    bin_dir = fake_slurm(entry("gres:mig:1g.10gb:1,gres:shard:8"))
    cfg, _ = make_node(slurm_bin_dir=bin_dir)
    run_prolog(cfg, "5", uid=None, env={"SLURMD_NODENAME": "n1"})
    assert fake_slurm.calls() == [] and task_prolog(cfg.run_dir, "5") == ("", 0)


def test_the_prolog_reads_the_request_once_and_the_gpu_from_slurmd(make_node, fake_slurm):
    bin_dir = fake_slurm(entry("gres:mig:1g.10gb:1,gres:mig:2g.20gb:1,gres:shard:23", nodes="n[0-1]"))
    cfg, _ = make_node("2xH100-80GB", slurm_bin_dir=bin_dir)
    run_prolog(cfg, "5", uid=None, env={**ENV, "SLURM_JOB_GPUS": "1"})
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 0 and text.count("MIG-") == 2
    from slurm_mig.node.ledger import Ledger
    rec = Ledger(cfg.state_dir).get("5")
    assert rec.request == {"1g.10gb": 1, "2g.20gb": 1} and {i.gpu for i in rec.instances} == {1}
    assert fake_slurm.calls() == [" ".join(jobinfo.job_query("5"))]


@pytest.mark.parametrize("line, why", [
    ("", "squeue printed 0 lines for job 5"),
    ("6|1|1|0|gres:shard:8|n1|debug||(null)||(null)|\n", "squeue printed 0 lines for job 5, not its own"),
    ("5|1|1|0|gres:shard:8|n2|debug||(null)||(null)|\n", "Slurm says job 5 runs on n2, not on n1"),
    ("5|1|1|0|gres:shard:8|n1\n", "squeue printed 6 fields for job 5, not 11"),
    ("5|1|1|0|gres:mig:1g.10gb:x|n1|debug||(null)||(null)|\n", "unknown GRES request item"),
])
def test_an_unusable_answer_fails_the_job_alone(make_node, fake_slurm, line, why):
    cfg, _ = make_node("2xH100-80GB", slurm_bin_dir=fake_slurm(line))
    run_prolog(cfg, "5", uid=None, env=ENV)          # returns: exit 0, node not drained
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 1 and why in text


def test_shards_from_two_gpus_fail_the_job_alone(make_node, fake_slurm):
    cfg, _ = make_node("2xH100-80GB", slurm_bin_dir=fake_slurm(entry("gres:mig:1g.10gb:1,gres:shard:8")))
    run_prolog(cfg, "5", uid=None, env={**ENV, "SLURM_JOB_GPUS": "0,1"})
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 1 and "shards on this node come from GPUs [0, 1]" in text


def test_an_unreachable_controller_fails_the_job_after_retries(make_node, fake_slurm):
    bin_dir = fake_slurm(entry("gres:mig:1g.10gb:1,gres:shard:8"), fail=jobinfo.READ_ATTEMPTS)
    cfg, _ = make_node(slurm_bin_dir=bin_dir)
    run_prolog(cfg, "5", uid=None, env=ENV)
    text, code = task_prolog(cfg.run_dir, "5")
    assert len(fake_slurm.calls()) == jobinfo.READ_ATTEMPTS
    assert code == 1 and "Unable to contact slurm controller" in text and \
        f"failed {jobinfo.READ_ATTEMPTS} times" in text


def test_a_busy_controller_is_retried(make_node, fake_slurm):
    bin_dir = fake_slurm(entry("gres:mig:1g.10gb:1,gres:shard:8"), fail=jobinfo.READ_ATTEMPTS - 1)
    cfg, _ = make_node(slurm_bin_dir=bin_dir)
    run_prolog(cfg, "5", uid=None, env=ENV)
    assert task_prolog(cfg.run_dir, "5")[1] == 0 and len(fake_slurm.calls()) == jobinfo.READ_ATTEMPTS


def test_a_missing_slurm_client_fails_the_job_not_the_node(make_node, tmp_path):
    cfg, _ = make_node(slurm_bin_dir=str(tmp_path / "nowhere"))
    run_prolog(cfg, "5", uid=None, env=ENV)
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 1 and "not executable (slurm_bin_dir)" in text


def test_the_hook_entry_exits_0_when_slurm_is_down(make_node, tmp_path):
    """As slurmd runs it: a separate process, no PATH; the node must not drain."""
    import subprocess
    import sys
    cfg, state = make_node(slurm_bin_dir=str(tmp_path / "nowhere"))
    conf = tmp_path / "hook.toml"
    conf.write_text(f'backend = "{cfg.backend}"\nstate_dir = "{cfg.state_dir}"\n'
                    f'run_dir = "{cfg.run_dir}"\nslurm_bin_dir = "{tmp_path}/nowhere"\n')
    env = {"SLURM_MIG_CONFIG": str(conf), "SLURM_JOB_ID": "5", "SLURM_JOB_GPUS": "0",
           "SLURMD_NODENAME": "n1", "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-m", "slurm_mig.hooks.main", "prolog"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert task_prolog(cfg.run_dir, "5")[1] == 1


# -- whole GPUs next to MIG jobs ---------------------------------------------------------------
def test_a_batch_whole_gpu_job_on_a_gpu_with_instances_goes_back_to_the_queue(make_node, fake_slurm, steerers):
    """22.05 can hand GPU 0 to `--gres=gpu:1` while a MIG job's instance is still
    there: the job is requeued and steered like a MIG job, never failed."""
    cfg = full_gpu_node(make_node, slurm_bin_dir=fake_slurm(entry("gres:gpu:1", **BATCH)))
    run_prolog(cfg, "5", uid=None, env=ENV)
    assert [c for c in fake_slurm.calls() if c.startswith("scontrol")] == ["scontrol requeue 5"]
    (_, request), = steerers
    assert request["reason"].startswith("GPU 0 still holds MIG instances of job 4")
    from slurm_mig.node.ledger import Ledger
    rec = Ledger(cfg.state_dir).get("5")
    assert rec.state == "released" and rec.whole_gpus == [0] and rec.reason.startswith("requeued: ")


@pytest.mark.parametrize("tres, bound", [("gres:gpu:1", "GPU-"), (SMALL_ON_GPU0, "MIG-")])
def test_an_interactive_job_waits_interactive_wait_for_room(make_node, fake_slurm, tres, bound):
    """srun/salloc cannot go back to the queue: its Prolog waits
    interactive_wait (here 20 s; wait_for_room, for batch jobs, is 0)."""
    import threading
    cfg = full_gpu_node(make_node, slurm_bin_dir=fake_slurm(entry(tres)), interactive_wait=20)
    threading.Timer(1.0, hooks_epilog, (cfg, "4")).start()      # job 4 ends while job 5 waits
    run_prolog(cfg, "5", uid=None, env=ENV)
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 0 and text.startswith(f"export CUDA_VISIBLE_DEVICES={bound}")


def test_an_interactive_job_is_told_once_that_it_waits(make_node, fake_slurm):
    import threading
    cfg = full_gpu_node(make_node, slurm_bin_dir=fake_slurm(entry(SMALL_ON_GPU0)), interactive_wait=7200)
    threading.Timer(1.5, hooks_epilog, (cfg, "4")).start()
    run_prolog(cfg, "5", uid=None, env=ENV)
    assert task_prolog(cfg.run_dir, "5")[1] == 0
    assert [c for c in fake_slurm.calls() if not c.startswith("-h")] == [
        "scontrol notify 5 slurm-mig: job 5 waits for room on n1: 1g.10gb:1 does not fit next to the running "
        "jobs' instances (GPU 0: 0/8 slots free); it starts when running jobs end, or gives up after 2 h"]


@pytest.mark.parametrize("scontrol_exit", [0, 1])
def test_an_interactive_job_that_gives_up_is_told_why_then_revoked(make_node, fake_slurm, scontrol_exit):
    """A salloc must not keep an allocation whose every step fails; when Slurm
    refuses the notices the job still fails alone, its steps saying why."""
    cfg = full_gpu_node(make_node, slurm_bin_dir=fake_slurm(entry("gres:gpu:1"), scontrol_exit=scontrol_exit),
                        interactive_wait=1)
    run_prolog(cfg, "5", uid=None, env=ENV)
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 1 and "GPU 0 still holds MIG instances of job 4" in text
    waits, why, cancel = [c for c in fake_slurm.calls() if not c.startswith("-h")]
    assert waits.startswith("scontrol notify 5 slurm-mig: job 5 waits for room on n1: GPU 0 still holds")
    assert waits.endswith("gives up after 1 s")
    assert why == "scontrol notify 5 " + text.strip().removeprefix("print ").split("\n")[0]
    assert cancel == "scancel 5"


def test_a_batch_job_is_never_revoked(make_node, fake_slurm):
    cfg = full_gpu_node(make_node, slurm_bin_dir=fake_slurm(entry("gres:gpu:1", batch_flag=True)))
    run_prolog(cfg, "5", uid=None, env=ENV)
    assert task_prolog(cfg.run_dir, "5")[1] == 1
    assert not [c for c in fake_slurm.calls() if "notify" in c or "scancel" in c]


def test_a_busy_instance_no_job_owns_is_named_not_a_code(make_node, fake_slurm):
    from slurm_mig.sim.control import set_busy
    from slurm_mig.sim import SimStore
    cfg = full_gpu_node(make_node, slurm_bin_dir=fake_slurm(entry("gres:gpu:1")))
    state = cfg.backend[4:]
    (uuid,) = [c["uuid"] for g in SimStore(state).read()["gpus"] for gi in g["gis"] for c in gi["cis"]]
    set_busy(state, uuid)
    os.unlink(os.path.join(cfg.state_dir, "jobs", "4.json"))     # an orphan: nobody owns it, a process uses it
    run_prolog(cfg, "5", uid=None, env=ENV)
    text, code = task_prolog(cfg.run_dir, "5")
    assert code == 1 and f"GPU 0 holds 7g.80gb {uuid}, which no job owns and processes still use (pids" in text
    assert "code 19" not in text


def hooks_epilog(cfg, job):
    from slurm_mig.hooks.epilog import epilog
    epilog(cfg, job)


@pytest.mark.parametrize("batch, requeue, restarts, expected", [
    (True, True, 0, True), (True, True, 98, True), (True, True, 99, False),     # max_requeues = 100
    (False, True, 0, False), (True, False, 0, False)])
def test_only_a_batch_job_slurm_may_requeue_with_a_requeue_left_may_be_sent_back_for_an_srun(
        batch, requeue, restarts, expected):
    from slurm_mig.config import Config
    from slurm_mig.hooks.dispatch import _requeueable
    from slurm_mig.slurm.jobinfo import JobRequest
    req = JobRequest(request=None, gpu=0, mig_idx=[], batch=batch, requeue=requeue, restarts=restarts)
    assert _requeueable(Config(max_requeues=100), req) is expected
