"""End to end on real Slurm daemons (Debian's slurm-wlm + munge, started on
free ports by the harness) with the simulated MIG node behind the hooks."""
import json
import os
import re

import pytest

from harness.devcluster import ClusterError, DevCluster, slurm_calls_of
from slurm_mig.slurm.jobinfo import job_query

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(slurm):
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm) as c:
        yield c


def uuids_in(text, key="CVD"):
    m = re.search(rf"^{key}=(.*)$", text, re.M)
    assert m, text
    return m.group(1).split(",") if m.group(1) else []


def live_instances(cluster):
    doc = json.loads(cluster.slurm_mig("status", "--json").stdout)
    return [i for g in doc["gpus"] for i in g["instances"]]


def test_single_profile_job(cluster):
    job = cluster.sbatch("--gres=mig:3g.40gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    assert cluster.wait_job(job) == "COMPLETED"
    (uuid,) = uuids_in(cluster.output(job))
    assert re.fullmatch(r"MIG-[0-9a-f-]{36}", uuid)
    assert live_instances(cluster) == []          # the epilog tore it down


def test_mixed_request_batch_and_srun_steps_see_exactly_their_uuids(cluster):
    job = cluster.sbatch("--gres=mig:3g.40gb:1,mig:1g.10gb:2", script="\n".join([
        "echo CVD=$CUDA_VISIBLE_DEVICES",
        "srun -n1 sh -c 'echo STEP=$CUDA_VISIBLE_DEVICES'"]))
    assert cluster.wait_job(job) == "COMPLETED", cluster.output(job)
    out = cluster.output(job)
    batch = uuids_in(out)
    assert len(batch) == 3 and len(set(batch)) == 3
    assert uuids_in(out, "STEP") == batch
    assert live_instances(cluster) == []


def test_each_task_of_a_multi_task_step_gets_its_own_instance(cluster):
    job = cluster.sbatch("-n2", "--gres=mig:1g.10gb:2", script="\n".join([
        "echo CVD=$CUDA_VISIBLE_DEVICES",
        "srun -n2 sh -c 'echo TASK$SLURM_LOCALID=$CUDA_VISIBLE_DEVICES'",
        "SLURM_MIG_BIND=all srun -n2 sh -c 'echo ALL$SLURM_LOCALID=$CUDA_VISIBLE_DEVICES'"]))
    assert cluster.wait_job(job) == "COMPLETED", cluster.output(job)
    out = cluster.output(job)
    batch = uuids_in(out)
    assert len(batch) == 2 and len(set(batch)) == 2           # the batch step sees both
    per_task = [uuids_in(out, f"TASK{i}") for i in (0, 1)]
    assert per_task == [[batch[0]], [batch[1]]], out          # one distinct instance each
    assert [uuids_in(out, f"ALL{i}") for i in (0, 1)] == [batch, batch], out
    assert live_instances(cluster) == []


def test_concurrent_steps_get_instances_of_their_own_request(cluster):
    """`srun --exact --gres=mig:...` steps: each gets the profile it asked for,
    and concurrent steps asking for the same profile get distinct instances."""
    step = "srun -n1 --exact --gres=mig:{p}:1 sh -c 'echo S$SLURM_STEP_ID=$CUDA_VISIBLE_DEVICES; sleep 4' &"
    job = cluster.sbatch("-n3", "--gres=mig:1g.10gb:2,mig:3g.40gb:1", script="\n".join([
        "echo CVD=$CUDA_VISIBLE_DEVICES", step.format(p="1g.10gb"), step.format(p="1g.10gb"),
        step.format(p="3g.40gb"), "wait", "srun -n1 sh -c 'echo NOREQ=$CUDA_VISIBLE_DEVICES'"]))
    profiles = {}
    cluster._wait(lambda: profiles.update((i["uuid"], i["profile"]) for i in live_instances(cluster))
                  or len(profiles) == 3, 60, "the job's instances made")
    assert cluster.wait_job(job) == "COMPLETED", cluster.output(job)
    out = cluster.output(job)
    batch = uuids_in(out)
    steps = [uuids_in(out, f"S{n}") for n in range(3)]
    assert all(len(s) == 1 for s in steps), out
    assert sorted(u for s in steps for u in s) == sorted(batch), out        # distinct, all the job's
    by_profile = sorted(profiles[s[0]] for s in steps)
    assert by_profile == ["1g.10gb", "1g.10gb", "3g.40gb"], (out, profiles)
    assert uuids_in(out, "NOREQ") == batch                    # no request of its own: the job's


def test_whole_gpu_steps_keep_slurms_split(cluster):
    step = "srun -n1 --exact --gres=gpu:1 sh -c 'echo S$SLURM_STEP_ID=$CUDA_VISIBLE_DEVICES; sleep 2' &"
    job = cluster.sbatch("-n2", "--gres=gpu:2", script="\n".join(
        ["echo CVD=$CUDA_VISIBLE_DEVICES", step, step, "wait"]))
    assert cluster.wait_job(job) == "COMPLETED", cluster.output(job)
    out = cluster.output(job)
    batch = uuids_in(out)
    steps = [uuids_in(out, f"S{n}") for n in range(2)]
    assert len(batch) == 2 and all(len(s) == 1 for s in steps), out
    assert sorted(s[0] for s in steps) == sorted(batch), out


def test_dcgm_job_mapping_files_exist_while_the_job_runs(cluster):
    mapping = os.path.join(cluster.dir, "dcgm")
    cluster.set_config(dcgm_job_mapping_dir=mapping)
    try:
        job = cluster.sbatch("--gres=mig:1g.10gb:2", script="sleep 3")
        cluster._wait(lambda: cluster.job_state(job) == "RUNNING" and os.path.isdir(mapping)
                      and len(os.listdir(mapping)) == 2, 60, "mapping files")
        insts = [i for i in live_instances(cluster) if i["owner"] == job]
        gpu = next(g["index"] for g in json.loads(cluster.slurm_mig("status", "--json").stdout)["gpus"]
                   if g["instances"])
        assert sorted(os.listdir(mapping)) == sorted(f"{gpu}.{i['gi_id']}" for i in insts)
        assert all(open(os.path.join(mapping, n)).read() == f"{job}\n" for n in os.listdir(mapping))
        assert cluster.wait_job(job) == "COMPLETED"
        assert os.listdir(mapping) == []
    finally:
        cluster.set_config(dcgm_job_mapping_dir=None)


def test_concurrent_jobs_get_distinct_instances(cluster):
    script = "echo CVD=$CUDA_VISIBLE_DEVICES; sleep 4"
    jobs = [cluster.sbatch("--gres=mig:1g.10gb:1", script=script) for _ in range(3)]
    jobs.append(cluster.sbatch("--gres=mig:2g.20gb:1", script=script))
    cluster._wait(lambda: all(cluster.job_state(j) in ("RUNNING", "COMPLETED") for j in jobs)
                  and len(live_instances(cluster)) >= 1, 60, "jobs running")
    owners = {i["owner"] for i in live_instances(cluster)}
    assert owners <= set(jobs)
    assert all(cluster.wait_job(j) == "COMPLETED" for j in jobs)
    seen = [u for j in jobs for u in uuids_in(cluster.output(j))]
    assert len(seen) == 4 and len(set(seen)) == 4
    assert live_instances(cluster) == []


def test_hooks_run_in_the_nodes_hook_server(cluster):
    """After one job, the node's Prolog and Epilog run in its hook server: with
    the slurm-mig-hook they would otherwise exec taken away, a MIG job still gets
    and gives back its instance."""
    first = cluster.sbatch("--gres=mig:1g.10gb:1", script="true")
    assert cluster.wait_job(first) == "COMPLETED"
    hookd = cluster.node_dir("mig-run", "hookd")
    cluster._wait(lambda: os.path.isdir(hookd) and any(n.endswith(".sock") for n in os.listdir(hookd)),
                  30, "the node's hook server")
    hook = cluster.installed.bin("slurm-mig-hook")
    os.rename(hook, hook + ".away")
    try:
        job = cluster.sbatch("--gres=mig:2g.20gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
        assert cluster.wait_job(job) == "COMPLETED"
    finally:
        os.rename(hook + ".away", hook)
    (uuid,) = uuids_in(cluster.output(job))
    assert uuid.startswith("MIG-") and live_instances(cluster) == []


def test_each_array_task_gets_instances_of_its_own(cluster):
    """Six tasks of 3g.40gb on two GPUs: Slurm runs at most four at once (the
    shards), each task its own instance, and the rest start as tasks end."""
    out = os.path.join(cluster.dir, "jobs", "array-%a.out")
    job = cluster.sbatch("--array=0-5", "--gres=mig:3g.40gb:1", "-o", out,
                         script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 4")
    owners_seen = set()

    def running_tasks_hold_their_own():
        live = live_instances(cluster)
        owners = [i["owner"] for i in live]
        assert len(owners) == len(set(owners)) <= 4, live
        owners_seen.update(owners)
        return len(owners_seen) == 6 or all(cluster.job_state(f"{job}_{t}") == "COMPLETED" for t in range(6))
    cluster._wait(running_tasks_hold_their_own, 120, "every array task to run")
    assert [cluster.wait_job(f"{job}_{t}") for t in range(6)] == ["COMPLETED"] * 6
    for t in range(6):
        with open(out.replace("%a", str(t)), encoding="utf-8") as f:
            (uuid,) = uuids_in(f.read())
        assert uuid.startswith("MIG-")
    assert len(owners_seen) == 6                 # each task under its own job id (the last keeps the array's)
    assert live_instances(cluster) == []


def test_unknown_profile_refused_at_submit(cluster):
    with pytest.raises(ClusterError, match=r"unknown MIG profile '5g\.50gb'; valid profiles: .*3g\.40gb"):
        cluster.sbatch("--gres=mig:5g.50gb:1", script="true")


@pytest.mark.parametrize("option", ["--gres=gpu:1g.10gb:1", "--gpus-per-node=1g.10gb:1"])
def test_slurms_own_gpu_spellings_of_a_profile_run_as_mig_jobs(cluster, option):
    job = cluster.sbatch(option, script="echo CVD=$CUDA_VISIBLE_DEVICES")
    assert cluster.wait_job(job) == "COMPLETED", cluster.output(job)
    (uuid,) = uuids_in(cluster.output(job))
    assert uuid.startswith("MIG-")


@pytest.mark.parametrize("options, told", [
    (["--gpus=1g.10gb:1"], "--gres=mig:<profile>:<count>"),
    (["--gres=mig:1g.10gb:1", "--cpus-per-gpu=2"], "--cpus-per-task, --mem and --ntasks")])
def test_options_that_cannot_serve_mig_are_refused_saying_what_to_use(cluster, options, told):
    """sbatch of 24.11 and later refuses --cpus-per-gpu without a GPU itself,
    saying so; 22.05 leaves it to the filter."""
    p = cluster.run("sbatch", "--wrap", "true", *options, check=False)
    assert p.returncode != 0 and (told in p.stderr or "did not request any GPU" in p.stderr), p.stderr


def test_a_pending_jobs_request_change_is_applied_or_refused_with_a_reason(cluster):
    job = cluster.sbatch("--hold", "--gres=mig:1g.10gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    tres = lambda: cluster.run("squeue", "-h", "-j", job, "-O", "tres-per-node:80").stdout.strip()
    cluster.run("scontrol", "update", f"jobid={job}", "Gres=mig:7g.80gb:1")
    assert re.fullmatch(r"gres[:/]mig:7g\.80gb:1,gres[:/]shard:56", tres())
    p = cluster.run("scontrol", "update", f"jobid={job}", "Gres=mig:bogus:1", check=False)
    assert p.returncode != 0 and ("Invalid generic resource" in p.stderr or "bogus" in p.stderr), p.stderr
    assert re.fullmatch(r"gres[:/]mig:7g\.80gb:1,gres[:/]shard:56", tres())
    cluster.run("scontrol", "release", job)
    assert cluster.wait_job(job) == "COMPLETED", cluster.output(job)
    (uuid,) = uuids_in(cluster.output(job))
    assert not any(i["uuid"] == uuid for i in live_instances(cluster))


def test_alias_is_accepted(cluster):
    job = cluster.sbatch("--gres=mig:3g.39gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    assert cluster.wait_job(job) == "COMPLETED"
    assert len(uuids_in(cluster.output(job))) == 1


def test_hostile_job_names_and_comments_change_nothing(cluster):
    """Free-text fields shaped like allocation fields (issue: a job name forged
    what the Prolog read): the job gets exactly what its --gres says."""
    forged = cluster.sbatch("-J", "x JOB_GRES=mig:7g.80gb:1 GRES=shard:8(IDX:1)",
                            "--comment", "GRES=gpu:1(IDX:0) Nodes=migsim GRES=shard:8(IDX:0)",
                            "--gres=mig:1g.10gb:1",
                            script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 3")
    nothing = cluster.sbatch("-J", "y JOB_GRES=(null) GRES=gpu:1(IDX:0)",
                             script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 3")
    cluster._wait(lambda: live_instances(cluster) and cluster.job_state(nothing) == "RUNNING", 60, "running")
    (inst,) = live_instances(cluster)
    assert inst["profile"] == "1g.10gb" and inst["owner"] == forged
    doc = json.loads(cluster.slurm_mig("status", "--json").stdout)
    assert all(g["mig"]["current"] == 1 for g in doc["gpus"])      # no GPU was handed over whole
    assert cluster.wait_job(forged) == cluster.wait_job(nothing) == "COMPLETED"
    assert len(uuids_in(cluster.output(forged))) == 1 and uuids_in(cluster.output(nothing)) == []
    assert honest_7g(cluster) == "COMPLETED"


def honest_7g(cluster):
    return cluster.wait_job(cluster.sbatch("--gres=mig:7g.80gb:1", script="true"))


def test_a_repeated_profile_gets_every_instance_it_is_charged_for(cluster):
    """`mig:1g.10gb:1,mig:1g.10gb:1`: job_submit.lua charges two instances' shards,
    and the Prolog places two (the request is summed per profile)."""
    job = cluster.sbatch("--gres=mig:1g.10gb:1,mig:1g.10gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES")
    assert cluster.wait_job(job) == "COMPLETED"
    assert len(set(uuids_in(cluster.output(job)))) == 2


def test_a_job_without_gpus_does_not_ask_slurm(cluster):
    """The Prolog of a GPU-less job returns before reading Slurm and its
    Epilog writes nothing; a MIG job's reads Slurm once, and its hooks leave
    at most two updates of the node's free slices (the hooks reach Slurm
    through logging wrappers)."""
    plain = cluster.sbatch("-J", "plain", script="echo ok")
    mig = cluster.sbatch("--gres=mig:1g.10gb:1", script="echo ok")
    assert cluster.wait_job(plain) == cluster.wait_job(mig) == "COMPLETED"
    assert slurm_calls_of(cluster, plain) == []
    read, *published = slurm_calls_of(cluster, mig)
    assert read == "squeue " + " ".join(job_query(mig))                   # one job, once
    assert len(published) <= 2 and all(c.startswith(f"scontrol update NodeName={cluster.node} "
                                                     "Extra=slurm-mig:1;t=") for c in published)
    records = os.path.join(cluster.node_dir("mig-state"), "jobs")
    assert not os.path.exists(os.path.join(records, f"{plain}.json"))     # its Epilog did nothing
    assert os.path.exists(os.path.join(records, "closed", f"{mig}.json"))


def test_reconcile_releases_records_of_jobs_slurm_no_longer_runs(cluster):
    # A job whose epilog never ran (slurmd crashed, say): its record is still bound.
    p = cluster.slurm_mig("prolog", "--job", "424242", "--request", "mig:1g.10gb:1", "--wait", "0")
    assert p.returncode == 0
    assert any(i["owner"] == "424242" for i in live_instances(cluster))
    out = cluster.slurm_mig("reconcile", "--node", cluster.node).stdout
    assert "job 424242" in out
    assert live_instances(cluster) == []


def test_whole_gpu_job_gets_the_gpu_with_mig_off_then_mig_returns(cluster):
    job = cluster.sbatch("--gres=gpu:1", script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 2")
    cluster._wait(lambda: cluster.job_state(job) in ("RUNNING", "COMPLETED"), 60, "job running")
    doc = json.loads(cluster.slurm_mig("status", "--json").stdout)
    assert cluster.wait_job(job) == "COMPLETED"
    (uuid,) = uuids_in(cluster.output(job))
    gpu = next(g for g in doc["gpus"] if g["uuid"] == uuid)
    after = json.loads(cluster.slurm_mig("status", "--json").stdout)["gpus"][gpu["index"]]
    assert after["mig"] == {"current": 1, "pending": 1}


def test_generated_config_parses_in_slurmd(cluster):
    p = cluster.run("/usr/sbin/slurmd", "-G", "-N", cluster.node, "-f", cluster.conf, check=False)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text
    assert "error" not in text.lower(), text
    assert "shard" in text and "mig" in text


LAYOUTS = os.path.join(os.path.dirname(__file__), "data", "mig-parted-h100.yaml")


def test_static_layout_end_to_end(slurm):
    with DevCluster("2xH100-80GB", mode="static", layout=(LAYOUTS, "custom-config"), slurm=slurm) as c:
        gres = open(os.path.join(c.dir, "etc", "gres.conf")).read()
        idx_uuid = dict(re.findall(r"^# IDX (\d+): .* (MIG-\S+)$", gres, re.M))
        jobs = {c.sbatch("--gres=mig:3g.40gb:1", script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 2"): 1,
                c.sbatch("--gres=mig:1g.10gb:2", script="echo CVD=$CUDA_VISIBLE_DEVICES; sleep 2"): 2}
        seen = []
        for job, n in jobs.items():
            assert c.wait_job(job) == "COMPLETED"
            uuids = uuids_in(c.output(job))
            assert len(uuids) == n and set(uuids) <= set(idx_uuid.values())
            seen += uuids
        assert len(set(seen)) == 3
        assert idx_uuid["1"] in seen          # the only 3g.40gb record is IDX 1
        assert len(live_instances(c)) == 9    # static instances stay after the jobs


def test_static_idx_is_counted_type_by_type(slurm):
    """Two GPUs each with 1g,1g,2g,3g: Slurm numbers the IDX type by type, so
    the 2g.20gb and 3g.40gb jobs get instances of their own profile."""
    with DevCluster("2xH100-80GB", mode="static", layout=(LAYOUTS, "all-balanced"), slurm=slurm) as c:
        jobs = {c.sbatch(f"--gres=mig:{p}:1", script="echo CVD=$CUDA_VISIBLE_DEVICES"): p
                for p in ("2g.20gb", "3g.40gb", "1g.10gb")}
        profile = {i["uuid"]: i["profile"] for i in live_instances(c)}
        for job, wanted in jobs.items():
            assert c.wait_job(job) == "COMPLETED"
            assert [profile[u] for u in uuids_in(c.output(job))] == [wanted], c.output(job)


# -- two nodes: two slurmd on this host (127.0.0.1 and 127.0.0.2), each its own simulated GPUs

def node_instances(cluster, node, job):
    """(GPU index, instance) of `job`'s instances on `node`."""
    doc = json.loads(cluster.slurm_mig("status", "--json", node=node).stdout)
    return [(g["index"], i) for g in doc["gpus"] for i in g["instances"] if i["owner"] == job]


def wait_for_tasks(cluster, job, nodes):
    """Each node's task line `TASK_<node>=<uuids>` from a running job's output."""
    def lines():
        out = cluster.output(job) if os.path.exists(os.path.join(cluster.dir, "jobs", f"{job}.out")) else ""
        return {n: uuids_in(out, f"TASK_{n}") for n in nodes if f"TASK_{n}=" in out}
    cluster._wait(lambda: len(lines()) == len(nodes) or cluster.job_state(job) not in
                  ("PENDING", "CONFIGURING", "RUNNING"), 90, f"the tasks of job {job}")
    assert len(lines()) == len(nodes), (cluster.job_state(job), cluster.output(job))
    return lines()


TASKS = "srun -N2 -n2 sh -c 'echo TASK_$SLURMD_NODENAME=$CUDA_VISIBLE_DEVICES'; sleep 3"


@pytest.fixture(scope="module")
def two_nodes(slurm):
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, nodes=2) as c:
        yield c


def test_two_node_job_binds_each_node_its_own_gpu(two_nodes):
    """Nodes that got different GPUs (GPU 0 of the first node is full) each
    place one instance on their own GPU, and each task sees its own node's."""
    c = two_nodes
    n1, n2 = c.nodes
    blocker = c.sbatch("-w", n1, "--gres=mig:7g.80gb:1", script="sleep 300")
    c._wait(lambda: c.job_state(blocker) == "RUNNING" and node_instances(c, n1, blocker), 60,
            "the blocker")
    assert [gpu for gpu, _ in node_instances(c, n1, blocker)] == [0]
    job = c.sbatch("-N2", "--gres=mig:3g.40gb:1", script=TASKS)
    tasks = wait_for_tasks(c, job, c.nodes)
    placed = {n: node_instances(c, n, job) for n in c.nodes}
    assert [(gpu, i["profile"]) for gpu, i in placed[n1]] == [(1, "3g.40gb")], placed
    assert [(gpu, i["profile"]) for gpu, i in placed[n2]] == [(0, "3g.40gb")], placed
    assert {n: [i["uuid"] for _, i in placed[n]] for n in c.nodes} == tasks
    assert c.wait_job(job) == "COMPLETED"
    c.run("scancel", blocker)
    assert c.wait_job(blocker) == "CANCELLED"
    assert all(node_instances(c, n, j) == [] for n in c.nodes for j in (job, blocker))


def test_each_component_of_a_heterogeneous_job_gets_its_own_instances(two_nodes):
    """A het job's components are jobs of their own (bound under their own
    ids), while every task sees the leader's SLURM_JOB_ID: each task finds
    its component's instance, of its component's profile."""
    c = two_nodes
    n1, n2 = c.nodes
    job = c.sbatch("-w", n1, "--mem=100", "--gres=mig:1g.10gb:1", ":", "-w", n2, "--mem=100",
                   "--gres=mig:2g.20gb:1",
                   script="srun --het-group=0,1 sh -c 'echo TASK_$SLURMD_NODENAME=$CUDA_VISIBLE_DEVICES'; sleep 3")
    tasks = wait_for_tasks(c, job, c.nodes)
    leader, other = c.run("squeue", "-h", "-j", job, "-O", "JobID:|").stdout.split()
    assert leader == f"{job}|"
    placed = {n1: node_instances(c, n1, job), n2: node_instances(c, n2, other.rstrip("|"))}
    assert [i["profile"] for _, i in placed[n1]] == ["1g.10gb"] and \
        [i["profile"] for _, i in placed[n2]] == ["2g.20gb"], placed
    assert {n: [i["uuid"] for _, i in placed[n]] for n in c.nodes} == tasks
    assert c.wait_job(job) == "COMPLETED", c.output(job)


def test_two_node_static_job_binds_each_node_its_own_records(slurm):
    """Static mode with one cluster-wide gres.conf (NodeName= records) and a
    different layout per node: each node maps Slurm's IDX through its own
    records only, and each task sees an instance of its own node."""
    layouts = [(LAYOUTS, "custom-config"), (LAYOUTS, "all-3g.40gb")]
    with DevCluster("2xH100-80GB", mode="static", layout=layouts, slurm=slurm, nodes=2) as c:
        job = c.sbatch("-N2", "--gres=mig:3g.40gb:1", script=TASKS)
        tasks = wait_for_tasks(c, job, c.nodes)
        for n in c.nodes:
            (uuid,) = tasks[n]
            (inst,) = [i for _, i in node_instances(c, n, job)]
            assert inst["uuid"] == uuid and inst["profile"] == "3g.40gb"
        assert c.wait_job(job) == "COMPLETED"
        assert len(live_instances(c)) == 9                 # static instances stay
