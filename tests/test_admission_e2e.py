"""Admission end to end on real Slurm daemons: sbatch refuses what no GPU can
hold, Slurm's shard count never hands a GPU more than it holds, and a batch
job whose room is taken goes back to the queue instead of failing."""
import re
import time

import pytest

from harness.devcluster import ClusterError, DevCluster, slurm_calls_of
from slurm_mig.core import catalog
from slurm_mig.slurm.jobinfo import job_query

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(slurm):
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm) as c:
        yield c


def job_field(cluster, job, key):
    text = cluster.run("scontrol", "show", "job", "-o", job).stdout
    m = re.search(rf"\b{key}=(.*?)(?= [A-Za-z]+=|$)", text)
    return m.group(1) if m else None


def wait_for(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def controller_state(cluster, node):
    """The node's State as slurmctld holds it (22.05's sinfo can keep showing
    "mixed" for a node that went idle after many requeues)."""
    out = cluster.run("scontrol", "show", "node", node or cluster.node).stdout
    return re.search(r"\bState=(\S+)", out).group(1).lower()


def settles_idle(cluster, *nodes, within=30):
    """Each node is idle within seconds (a requeued job's Epilog may still be
    running meanwhile) and never drained."""
    for node in nodes or (None,):
        seen = []
        deadline = time.monotonic() + within
        while not seen or seen[-1] != "idle" and time.monotonic() < deadline:
            seen.append(controller_state(cluster, node))
            time.sleep(0.5)
        assert seen[-1] == "idle" and not any("drain" in s for s in seen), (
            node, seen, cluster.run("squeue", "-h", "-t", "all", "-o", "%i %T %N %r").stdout,
            re.findall(r"State=\S+|CPUAlloc=\S+|AllocTRES=\S*", cluster.run("scontrol", "show", "node", node or cluster.node).stdout))


def make_busy_orphan(cluster, state):
    """A busy 1g.10gb instance on GPU 0 that no job owns (a process left
    behind): Slurm sees GPU 0's shards free, the Prolog cannot place a
    whole-GPU instance there. Returns its UUID."""
    from slurm_mig.core import catalog
    from slurm_mig.nvml.backend import open_driver
    profile = catalog.load().model("H100-80GB").find_profile("1g.10gb")
    inst = open_driver(f"sim:{state}").create(0, profile, 6)
    cluster.slurm_mig("sim", "busy", state, "--uuid", inst.uuid)
    return inst.uuid


@pytest.fixture
def busy_orphan(cluster):
    uuid = make_busy_orphan(cluster, cluster.state)
    yield uuid
    cluster.slurm_mig("sim", "busy", cluster.state, "--uuid", uuid, "--clear", check=False)
    # a whole-GPU job that met it left a hold of GPU 0: it ends within seconds now
    wait_for(lambda: not stuck_holds(cluster), 120, "the stuck-GPU hold to end")
    cluster.slurm_mig("reconcile")          # the idle leftover, for the next test's orphan


@pytest.mark.parametrize("gres, limit", [
    ("mig:1g.10gb:8", "at most 7 x 1g.10gb on one H100-SXM5-80GB"),
    ("mig:4g.40gb:2", "at most 1 x 4g.40gb on one H100-SXM5-80GB"),
    ("mig:7g.80gb:1,mig:1g.10gb:1", "1 x 1g.10gb + 1 x 7g.80gb needs 8 compute slices; "
                                     "one H100-SXM5-80GB has 7"),
    ("mig:1g.10gb:1,gpu:1", "do not combine mig: and gpu:"),
])
def test_sbatch_refuses_what_no_gpu_can_hold_naming_the_limit(cluster, gres, limit):
    with pytest.raises(ClusterError, match=re.escape(f"slurm-mig: {limit}")):
        cluster.sbatch(f"--gres={gres}", script="true")


def test_sbatch_accepts_what_one_gpu_holds(cluster):
    job = cluster.sbatch("--gres=mig:4g.40gb:1,mig:3g.40gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    assert cluster.wait_job(job) == "COMPLETED"
    assert len(re.search(r"^CVD=(.*)$", cluster.output(job), re.M).group(1).split(",")) == 2


def test_a_whole_gpu_job_and_eight_small_ones_all_complete(cluster):
    """Nine jobs for two GPUs: the shard weights make Slurm queue what does
    not fit, so none is handed an impossible GPU, none fails, none requeues."""
    jobs = [cluster.sbatch("--gres=mig:7g.80gb:1", script="sleep 3")]
    jobs += [cluster.sbatch("--gres=mig:1g.10gb:1", script="sleep 3") for _ in range(8)]
    assert [cluster.wait_job(j, timeout=300) for j in jobs] == ["COMPLETED"] * 9
    assert [job_field(cluster, j, "Restarts") for j in jobs] == ["0"] * 9
    settles_idle(cluster)


def test_a_batch_job_without_room_goes_back_to_the_queue_then_runs(cluster, busy_orphan):
    job = cluster.sbatch("--gres=mig:7g.80gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    wait_for(lambda: job_field(cluster, job, "JobState") == "PENDING"
             and (job_field(cluster, job, "AdminComment") or "").startswith("slurm-mig: requeued 1/100: "),
             90, f"job {job} back in the queue with its mark")
    assert "does not fit next to the running jobs' instances" in job_field(cluster, job, "AdminComment")
    assert job_field(cluster, job, "Restarts") == "1"
    assert job_field(cluster, job, "ExcNodeList") in (None, "(null)")     # its only node: not kept off
    settles_idle(cluster)
    cluster.slurm_mig("sim", "busy", cluster.state, "--uuid", busy_orphan, "--clear")
    # steer_return (cred_expire + 5 s) after its Epilog, then the scheduler: the Prolog
    # runs again (sooner, slurmd could skip it: the job id may still be in its cache).
    assert cluster.wait_job(job, timeout=120) == "COMPLETED"
    assert re.search(r"^CVD=MIG-", cluster.output(job), re.M)
    assert job_field(cluster, job, "Restarts") == "1"
    update, = [x for x in slurm_calls_of(cluster, job) if x.startswith(f"scontrol update JobId={job} ")]
    delay = int(re.fullmatch(r".* AdminComment=slurm-mig: requeued 1/100: .* StartTime=now\+(\d+)", update).group(1))
    assert 20 < delay <= 25, update                 # the harness's steer_return, counted from the Epilog
    back = seconds(job_field(cluster, job, "EligibleTime")) - seconds(job_field(cluster, job, "SubmitTime"))
    assert back >= 23, back                         # Slurm's own delay would be cred_expire + 1 = 21
    settles_idle(cluster)


def test_jobs_that_cannot_be_requeued_wait_then_fail_alone(cluster, busy_orphan):
    """An srun or salloc is told on its terminal that it waits and why it gave
    up; then its allocation is revoked: a salloc never runs its command in an
    allocation whose every step would fail."""
    p = cluster.run("srun", "--gres=mig:7g.80gb:1", "sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES",
                    check=False, timeout=120)
    assert p.returncode != 0 and "CVD=" not in p.stdout
    assert re.search(r"^srun: slurm-mig: job \d+ waits for room on \S+: 7g.80gb:1 does not fit .*"
                     r"gives up after 3 s$", p.stderr, re.M), p.stderr
    assert "could not get its MIG devices" in p.stderr
    assert "not requeued: interactive jobs (srun, salloc) cannot be requeued" in p.stderr
    p = cluster.run("salloc", "--gres=mig:7g.80gb:1", "sh", "-c", "echo INSIDE", check=False, timeout=120)
    assert p.returncode != 0 and "INSIDE" not in p.stdout, p.stdout + p.stderr
    assert re.search(r"^salloc: slurm-mig: job \d+ waits for room", p.stderr, re.M), p.stderr
    assert re.search(r"^salloc: slurm-mig: job \d+ could not get its MIG devices: 7g.80gb:1 does not fit",
                     p.stderr, re.M), p.stderr
    assert "has been revoked" in p.stderr
    job = cluster.sbatch("--no-requeue", "--gres=mig:7g.80gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    assert cluster.wait_job(job) == "FAILED"
    assert "not requeued: the job may not be requeued" in cluster.output(job)
    settles_idle(cluster)
    # a whole GPU held by a busy instance no job owns: named, after the same bounded wait
    # (last: it asks for a stuck-GPU hold, which runs until the fixture frees the instance)
    p = cluster.run("srun", "--gres=gpu:1", "sh", "-c", "echo CVD=$CUDA_VISIBLE_DEVICES",
                    check=False, timeout=120)
    assert p.returncode != 0 and "CVD=" not in p.stdout
    assert f"GPU 0 holds 1g.10gb {busy_orphan}, which no job owns and processes still use" in p.stdout + p.stderr
    assert "code 19" not in p.stdout + p.stderr
    assert "drain" not in controller_state(cluster, None)


def stuck_holds(cluster):
    """(job id, state, name) of every stuck-GPU hold pending, running or completing."""
    out = cluster.run("squeue", "-h", "-u", "root", "-o", "%i %T %j").stdout
    return [tuple(line.split()) for line in out.splitlines() if "slurm-mig-stuck-" in line]


def test_a_gpu_held_by_a_stuck_instance_stops_attracting_jobs(cluster, busy_orphan):
    """GPU 0 holds a busy instance no job owns. The first whole-GPU job Slurm
    sends there goes back to the queue, and a root job then holds GPU 0: the
    later whole-GPU jobs go to GPU 1 without a requeue, MIG jobs still run,
    and once the instance is free the hold ends and GPU 0 is handed out again."""
    show = "echo GPUS=$SLURM_JOB_GPUS; sleep 1"
    first = cluster.sbatch("--gres=gpu:1", script=show)
    name = f"slurm-mig-stuck-{cluster.node}-gpu0"
    wait_for(lambda: [h[1:] for h in stuck_holds(cluster)] == [("RUNNING", name)], 90, "the hold of GPU 0")
    later = [cluster.sbatch("--gres=gpu:1", script=show) for _ in range(2)]
    # named like the hold (root's, as every job here): no marker names it, so an ordinary job
    later.append(cluster.sbatch("--gres=gpu:1", "-J", name, script=show + "; echo CVD=$CUDA_VISIBLE_DEVICES"))
    mig = cluster.sbatch("--gres=mig:1g.10gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    assert [cluster.wait_job(j, timeout=180) for j in [first, *later, mig]] == ["COMPLETED"] * 5
    assert [job_field(cluster, j, "Restarts") for j in [first, *later, mig]] == ["1", "0", "0", "0", "0"]
    assert [re.search(r"^GPUS=(.*)$", cluster.output(j), re.M).group(1) for j in [first, *later]] == ["1"] * 4
    assert re.search(r"^CVD=GPU-", cluster.output(later[-1]), re.M)
    assert re.search(r"^CVD=MIG-", cluster.output(mig), re.M)
    [(hold, _, _)] = stuck_holds(cluster)                  # one hold, never a pile
    cluster.slurm_mig("sim", "busy", cluster.state, "--uuid", busy_orphan, "--clear")
    wait_for(lambda: cluster.job_state(hold) in ("COMPLETED", "GONE"), 60, "the hold to end")
    again = cluster.sbatch("--gres=gpu:1", script=show)
    assert cluster.wait_job(again) == "COMPLETED"
    assert re.search(r"^GPUS=(.*)$", cluster.output(again), re.M).group(1) == "0"
    assert job_field(cluster, again, "Restarts") == "0"
    assert busy_orphan not in cluster.slurm_mig("status").stdout    # the idle leftover was destroyed
    settles_idle(cluster)


def seconds(stamp):
    return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def test_a_requeued_job_is_kept_off_its_node_and_starts_soon_on_another(slurm):
    """Two nodes; GPU 0 of the first holds a busy orphan. A whole-GPU job sent
    there goes back to the queue kept off that node (ExcNodeList, named in its
    mark) and may start as soon as it is back in the queue, not after Slurm's
    own delay (cred_expire + 1 = 21 s here): it then runs on the other node."""
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, nodes=2) as c:
        n1, n2 = c.nodes
        make_busy_orphan(c, c.node_dir("gpus.json", node=n1))
        job = c.sbatch("--gres=mig:7g.80gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
        assert c.wait_job(job, timeout=120) == "COMPLETED"
        assert job_field(c, job, "NodeList") == n2
        assert job_field(c, job, "Restarts") == "1"
        assert job_field(c, job, "ExcNodeList") == n1
        assert job_field(c, job, "AdminComment").startswith(f"slurm-mig: requeued 1/100, kept off {n1}: ")
        # after a requeue SubmitTime is when the job was back in the queue
        eligible = seconds(job_field(c, job, "EligibleTime")) - seconds(job_field(c, job, "SubmitTime"))
        assert eligible <= 5, eligible
        assert re.search(r"^CVD=MIG-", c.output(job), re.M)
        # The requeue round: the Prolog's requeue and the steerer's one update; where
        # squeue cannot print ExcNodes in the Prolog's read (22.05), one one-job read.
        # Besides: each Prolog's one-job read, sinfo -p (cached for later rounds), and
        # the free-slice updates of the nodes (slurm/room.py), at most one per hook.
        calls = slurm_calls_of(c, job)
        reads = [x for x in calls if x.startswith("squeue " + " ".join(job_query(job)))]
        partition = [x for x in calls if x.startswith("sinfo -h -N -p ")]
        published = [x for x in calls if x.startswith("scontrol update NodeName=")]
        rounds = [x for x in calls if x not in reads + partition + published]
        assert len(published) <= 4 and all(" Extra=slurm-mig:1;" in x for x in published), calls
        assert len(reads) == 2 and len(partition) == 1, calls
        assert rounds[0] == f"scontrol requeue {job}" and rounds[-1].startswith(f"scontrol update JobId={job} ")
        assert rounds[-1].endswith(" StartTime=now") and f"ExcNodeList={n1}" in rounds[-1]
        assert len(rounds) == (3 if slurm.version == "22.05" else 2), calls
        settles_idle(c, *c.nodes)


def test_unsteered_a_requeued_job_is_only_marked_and_starts_after_the_credential_cache(slurm):
    """steer = false: the steerer still marks the requeued job and sets its
    start steer_return after the Epilog (Slurm's own delay can be too soon on
    22.05), in one update, without reading the partition or keeping it off."""
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, nodes=2) as c:
        n1, n2 = c.nodes
        c.set_config(steer=False, hold_stuck_gpus=False)
        orphan = make_busy_orphan(c, c.node_dir("gpus.json", node=n1))
        busy = [c.sbatch("-w", n2, "--gres=mig:7g.80gb:1", script="sleep 15") for _ in range(2)]
        wait_for(lambda: all(job_field(c, b, "JobState") == "RUNNING" for b in busy), 60, "n2 busy")
        job = c.sbatch("--gres=mig:7g.80gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
        wait_for(lambda: (job_field(c, job, "AdminComment") or "").startswith("slurm-mig: requeued 1/100: "),
                 90, f"job {job} marked")
        back = seconds(job_field(c, job, "EligibleTime")) - seconds(job_field(c, job, "SubmitTime"))
        assert back >= 23, back                     # Slurm's own delay would be cred_expire + 1 = 21
        c.slurm_mig("sim", "busy", c.node_dir("gpus.json", node=n1), "--uuid", orphan, "--clear")
        assert c.wait_job(job, timeout=120) == "COMPLETED"
        assert re.search(r"^CVD=MIG-", c.output(job), re.M)
        calls = slurm_calls_of(c, job)
        update, = [x for x in calls if x.startswith(f"scontrol update JobId={job} ")]
        assert re.fullmatch(r"scontrol update JobId=\d+ AdminComment=slurm-mig: requeued 1/100: .* StartTime=now\+2[1-5]",
                            update), calls
        assert not [x for x in calls if x.startswith("sinfo")], calls
        settles_idle(c, *c.nodes)


def test_a_node_gives_a_job_it_turned_away_back_once_its_credential_cache_let_it_go(slurm):
    """Two nodes; GPU 0 of the first holds a busy orphan, two 7g.80gb jobs keep
    the second busy for 45 s. A 7g.80gb job is turned away by the first and
    kept off it; with the harness's steer_return = 25 (cred_expire + 5) that node's
    steerer gives it back while the job pends, Slurm sends it there again and
    its Prolog runs (a second requeue, not a start without instances); it
    runs on the second node once that frees. (No stuck-GPU hold: GPU 0 keeps
    turning it away.)"""
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, nodes=2) as c:
        n1, n2 = c.nodes
        c.set_config(hold_stuck_gpus=False)
        make_busy_orphan(c, c.node_dir("gpus.json", node=n1))
        busy = [c.sbatch("-w", n2, "--gres=mig:7g.80gb:1", script="sleep 45") for _ in range(2)]
        wait_for(lambda: all(job_field(c, b, "JobState") == "RUNNING" for b in busy), 60, "n2 busy")
        job = c.sbatch("--gres=mig:7g.80gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
        assert c.wait_job(job, timeout=180) == "COMPLETED"
        assert job_field(c, job, "NodeList") == n2
        assert int(job_field(c, job, "Restarts")) >= 2
        assert re.search(r"^CVD=MIG-", c.output(job), re.M)
        settles_idle(c, *c.nodes)


def test_a_job_sent_back_guarantee_after_times_is_charged_its_guarantee_and_runs(slurm):
    """One node, 2 GPUs; two 2g.20gb at starts 2 and 4 of GPU 0 leave 26 of
    its 56 shards free and no start for a 3g.40gb, whose batch units (25)
    Slurm admits there, so Slurm keeps picking GPU 0 for it. With
    guarantee_after = 1, job_submit.lua recharges the job its guarantee (41)
    in the steerer's own update after the first requeue, so Slurm's next
    pick is GPU 1, where it runs: one requeue, no more, no extra command."""
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, settings={"guarantee_after": 1}) as c:
        busy = two_2g_jobs_on_gpu_0(c, 90)
        job = c.sbatch("--gres=mig:3g.40gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 4")
        assert re.fullmatch(r"gres[:/]mig:3g\.40gb:1,gres[:/]shard:25", job_field(c, job, "TresPerNode").strip())
        wait_for(lambda: instances(c, "3g.40gb"), 120, "the job's instance")
        [inst] = instances(c, "3g.40gb")
        assert c.wait_job(job, timeout=60) == "COMPLETED"
        assert inst["gpu"] == 1 and f"CVD={inst['uuid']}" in c.output(job)
        assert job_field(c, job, "Restarts") == "1"
        assert re.fullmatch(r"gres[:/]mig:3g\.40gb:1,gres[:/]shard:41", job_field(c, job, "TresPerNode").strip())
        assert job_field(c, job, "AdminComment").startswith("slurm-mig: requeued 1/100: ")
        calls = slurm_calls_of(c, job)
        updates = [x for x in calls if x.startswith(f"scontrol update JobId={job} ")]
        assert len(updates) == 1 and "TresPerNode" not in updates[0], calls   # lua recharges, not a field
        for b in busy:
            c.run("scancel", b)
            c.wait_job(b)
        settles_idle(c)


MIX = ["mig:1g.10gb:1", "mig:2g.20gb:1", "mig:3g.40gb:1", "mig:1g.10gb:2", "mig:4g.40gb:1",
       "mig:1g.20gb:1", "mig:7g.80gb:1", "mig:2g.20gb:1,mig:1g.10gb:1", "mig:3g.40gb:2"]


def test_whole_gpu_and_mig_jobs_side_by_side_all_complete(slurm):
    """44 jobs on 2 nodes x 2 GPUs, whole-GPU ones among MIG ones, with a busy
    instance no job owns stuck on one GPU (a process that outlived its job):
    every job completes. A whole-GPU job sent to a GPU that still holds MIG
    instances (22.05 hands one over while a shard of it is allocated; the
    stuck one on any version) goes back to the queue and is steered."""
    if slurm.version != "22.05":
        pytest.skip("the GPU handed over while a shard of it is allocated is a 22.05 bug")
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, nodes=2, cpus=8) as c:
        stuck = make_busy_orphan(c, c.node_dir("gpus.json", node=c.nodes[0]))
        jobs = []
        for i in range(44):
            gres = "gpu:1" if i % 5 in (1, 3) else MIX[i % len(MIX)]
            jobs.append(c.sbatch(f"--gres={gres}", script=f"sleep {1 + i % 3}"))
        assert sum(1 for i in range(44) if i % 5 in (1, 3)) >= 17
        states = [c.wait_job(j, timeout=600) for j in jobs]
        restarts = [int(job_field(c, j, "Restarts")) for j in jobs]
        print(f"44-job mix: {states.count('COMPLETED')} completed, {sum(restarts)} requeues")
        assert states == ["COMPLETED"] * 44, [(j, s, job_field(c, j, "AdminComment"))
                                              for j, s in zip(jobs, states) if s != "COMPLETED"]
        assert stuck in c.slurm_mig("status").stdout          # nothing destroyed what a process uses
        [(hold, _, name)] = stuck_holds(c)                    # the stuck GPU is held, once
        assert name == f"slurm-mig-stuck-{c.nodes[0]}-gpu0"
        c.slurm_mig("sim", "busy", c.node_dir("gpus.json", node=c.nodes[0]), "--uuid", stuck, "--clear")
        wait_for(lambda: c.job_state(hold) in ("COMPLETED", "GONE"), 60, "the hold to end")
        settles_idle(c, *c.nodes)


def two_2g_jobs_on_gpu_0(cluster, seconds):
    """Two batch 2g.20gb jobs that the Prolog places at starts 4 and 2 of
    GPU 0: 26 of its 56 shards stay free, a 3g.40gb's batch units are 25,
    but its only starts (0 and 4) are both blocked. The second starts once
    the first runs: the one returned last is the younger."""
    jobs = []
    for n in (1, 2):
        jobs.append(cluster.sbatch("--gres=mig:2g.20gb:1", script=f"sleep {seconds}"))
        wait_for(lambda: len(instances(cluster, "2g.20gb")) == n, 60, f"{n} 2g.20gb instance(s)")
    assert sorted((i["gpu"], i["placement"][0]) for i in instances(cluster, "2g.20gb")) == [(0, 2), (0, 4)]
    return jobs


def instances(cluster, profile):
    import json
    doc = json.loads(cluster.slurm_mig("status", "--json").stdout)["gpus"]
    return [dict(i, gpu=g["index"]) for g in doc for i in g["instances"] if i["profile"] == profile]


def interactive(cluster, *command):
    """Run `command` (srun or salloc) in a thread: (thread, result list)."""
    import threading
    out = []
    t = threading.Thread(target=lambda: out.append(cluster.run(*command, check=False, timeout=150)))
    t.start()
    return t, out


SHOW = "echo CVD=$CUDA_VISIBLE_DEVICES; sleep 4"


@pytest.mark.parametrize("command", [
    ("srun", "--gres=mig:3g.40gb:1", "sh", "-c", SHOW),
    ("salloc", "--gres=mig:3g.40gb:1", "srun", "sh", "-c", SHOW),
])
def test_an_interactive_job_goes_to_a_gpu_that_can_place_it(cluster, command):
    """The issue's reproduction: GPU 0 shows room for a 3g.40gb by its count
    but has no start for it. Charged toward guarantee units, the srun (or the
    salloc and its srun) gets GPU 1 and runs, where it used to fail."""
    jobs = two_2g_jobs_on_gpu_0(cluster, 30)
    t, out = interactive(cluster, *command)
    wait_for(lambda: instances(cluster, "3g.40gb"), 60, "the interactive job's instance")
    [inst] = instances(cluster, "3g.40gb")
    t.join()
    assert out[0].returncode == 0, out[0].stdout + out[0].stderr
    assert f"CVD={inst['uuid']}" in out[0].stdout and inst["gpu"] == 1
    for j in jobs:
        cluster.run("scancel", j)
        cluster.wait_job(j)
    settles_idle(cluster)


def test_a_salloc_no_gpu_can_place_waits_in_the_queue_then_works(cluster):
    """GPU 0 holds two 2g.20gb at starts 2 and 4 (26 free shards, enough for
    a 3g.40gb's batch units, 25, and no start for it), GPU 1 a 7g.80gb. The
    salloc is not granted a dead allocation on GPU 0: it waits in the queue,
    and once the batch jobs end it gets one whose srun runs."""
    jobs = two_2g_jobs_on_gpu_0(cluster, 20)
    jobs.append(cluster.sbatch("--gres=mig:7g.80gb:1", script="sleep 20"))
    wait_for(lambda: instances(cluster, "7g.80gb"), 60, "the 7g.80gb instance")
    t, out = interactive(cluster, "salloc", "--gres=mig:3g.40gb:1", "srun", "sh", "-c", SHOW)
    time.sleep(5)
    assert t.is_alive() and not instances(cluster, "3g.40gb")
    assert [cluster.job_state(j) for j in jobs] == ["RUNNING"] * 3
    t.join()
    assert out[0].returncode == 0, out[0].stdout + out[0].stderr
    assert re.search(r"^CVD=MIG-", out[0].stdout, re.M)
    assert "queued and waiting for resources" in out[0].stderr
    assert [cluster.wait_job(j) for j in jobs] == ["COMPLETED"] * 3
    settles_idle(cluster)


@pytest.mark.parametrize("command", [
    ("srun", "--gres=mig:3g.40gb:1", "sh", "-c", SHOW),
    ("salloc", "--gres=mig:3g.40gb:1", "srun", "sh", "-c", SHOW),
])
def test_an_interactive_job_whose_gpu_cannot_place_it_waits_then_runs(cluster, command):
    """Busy instances no job owns at starts 0 and 4 of GPU 0: Slurm sees all of
    its shards free and gives it the 3g.40gb, which has no start there. The
    Prolog waits (interactive_wait) instead of failing; the srun, or the salloc
    and its step, run once the instances are gone."""
    from slurm_mig.nvml.backend import open_driver
    profile = catalog.load().model("H100-80GB").find_profile("1g.10gb")
    uuids = [open_driver(f"sim:{cluster.state}").create(0, profile, start).uuid for start in (0, 4)]
    for uuid in uuids:
        cluster.slurm_mig("sim", "busy", cluster.state, "--uuid", uuid)
    cluster.set_config(interactive_wait=90)
    try:
        t, out = interactive(cluster, *command)
        time.sleep(8)
        assert t.is_alive() and not instances(cluster, "3g.40gb")
        for uuid in uuids:
            cluster.slurm_mig("sim", "busy", cluster.state, "--uuid", uuid, "--clear")
        t.join()
    finally:
        cluster.set_config(interactive_wait=cluster.wait_for_room)
    assert out[0].returncode == 0, out[0].stdout + out[0].stderr
    assert re.search(r"^CVD=MIG-", out[0].stdout, re.M)
    assert re.search(rf"^{command[0]}: slurm-mig: job \d+ waits for room on \S+: 3g.40gb:1 does not fit",
                     out[0].stderr, re.M), out[0].stderr        # the user was told why nothing happened
    settles_idle(cluster)
    cluster.slurm_mig("reconcile")          # the idle instance the job did not need


def test_an_srun_without_a_start_sends_the_younger_batch_job_back_and_runs(slurm):
    """interactive_evict_age, with srun/salloc jobs charged their batch units:
    Slurm gives the issue's 3g.40gb srun GPU 0 (26 free shards, its units
    25), where the two 2g.20gb batch jobs leave no start. Its Prolog sends
    the younger of them back to the queue (a one-job read that finds it
    running, then `scontrol requeue`) and the srun runs on GPU 0 once that
    job's Epilog has run; the older batch job runs on untouched, the younger
    one is pending again."""
    settings = {"interactive_charge": 0, "interactive_charge_one_start": 0, "interactive_evict_age": 600,
                "interactive_wait": 60}
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, settings=settings) as c:
        older, younger = two_2g_jobs_on_gpu_0(c, 120)
        t, out = interactive(c, "srun", "--gres=mig:3g.40gb:1", "sh", "-c", SHOW)
        wait_for(lambda: instances(c, "3g.40gb"), 60, "the srun's instance")
        [inst] = instances(c, "3g.40gb")
        t.join()
        assert out[0].returncode == 0, out[0].stdout + out[0].stderr
        assert f"CVD={inst['uuid']}" in out[0].stdout and inst["gpu"] == 0
        assert c.job_state(older) == "RUNNING" and job_field(c, older, "Restarts") == "0"
        assert job_field(c, younger, "Restarts") == "1" and c.job_state(younger) in ("PENDING", "REQUEUED")
        with open(c.slurm_calls, encoding="utf-8") as f:
            requeues = [line.split() for line in f if " requeue " in line]
        assert [r[1:] for r in requeues] == [["scontrol", "requeue", younger]], requeues
        srun = requeues[0][0]
        assert srun not in (older, younger)                    # the srun's Prolog made it
        about_them = [x for x in slurm_calls_of(c, srun) if x.startswith("scontrol requeue ")
                      or x.startswith("squeue -h -j ") and x.split()[3] in (older, younger)]
        assert about_them == [f"squeue -h -j {younger} -t all -o %T|%x", f"scontrol requeue {younger}"], about_them
        for j in (older, younger):
            c.run("scancel", j)
            c.wait_job(j)
        settles_idle(c)
