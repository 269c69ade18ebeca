"""`slurm-mig doctor` on real Slurm (the installed wheel): the end-to-end
cluster passes every check; deliberately broken ones fail, each on its own
line with its fix, and the exit status says so."""
import os
import re
import subprocess

import pytest

from harness.devcluster import DevCluster

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(slurm):
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm) as c:
        yield c


def doctor(c):
    """(exit status, check name -> its line). A node the cluster description
    covers has its gres.conf name the cluster's /dev (as real nodes share one):
    its dev_root says so, where it keeps its own simulated tree otherwise."""
    if c.node in c.described:
        c.set_config(dev_root=os.path.join(c.dir, "dev"))
    p = c.slurm_mig("doctor", "--node-name", c.node, check=False)
    lines = p.stdout.splitlines()
    assert re.fullmatch(r"\d+ of \d+ checks failed.*", lines[-1]), p.stdout + p.stderr
    return p.returncode, {re.match(r"\S+\s+([^:]+):", ln).group(1): ln for ln in lines[:-1]}


def failed(lines):
    return {name for name, line in lines.items() if line.startswith("FAIL")}


def test_the_end_to_end_cluster_passes(cluster):
    rc, lines = doctor(cluster)
    assert rc == 0 and not failed(lines), lines
    assert {"SelectType", "PrologFlags", "JobSubmitPlugins", "GresTypes", "Prolog", "TaskProlog",
            "Epilog", "PrologEpilogTimeout", "BatchStartTimeout", "gres.conf", "node Gres", "job_submit.lua",
            "state_dir", "run_dir", "steer_return", "guarantee_after"} <= {n for n, ln in lines.items() if ln.startswith("ok")}
    assert "25 s >= cred_expire=20 s + 3 s" in lines["steer_return"], lines   # the harness's, as Slurm shows it
    p = cluster.slurm_mig("doctor", "--controller", check=False)           # on the controller host
    assert p.returncode == 0 and "ok   job_submit.lua: " in p.stdout, p.stdout
    assert "gres.conf" not in p.stdout and "state_dir" not in p.stdout and "Prolog:" not in p.stdout


def test_node_side_breakage_is_found_with_its_fix(cluster):
    gres = os.path.join(cluster.dir, "etc", "gres.conf")
    prolog, epilog = (os.path.join(cluster.dir, "hooks", h) for h in ("prolog", "epilog"))
    state = cluster.node_dir("mig-state")
    saved = {p: open(p).read() for p in (gres, prolog)}
    running = cluster.run("sinfo", "-h", "-N", "-n", cluster.node, "-O", "Gres:|").stdout.strip().rstrip("|")
    try:
        # what the controller counts drifts from the GPUs (a runtime update; a stale restart reads so too)
        cluster.run("scontrol", "update", f"NodeName={cluster.node}", f"Gres={running.replace('mig:7g.80gb:2', 'mig:7g.80gb:1')}")
        with open(gres, "w") as f:                     # as before the GPUs were replaced
            f.write(saved[gres].replace("Name=shard Count=56", "Name=shard Count=49"))
        with open(prolog, "w") as f:                   # an older install's script
            f.write(saved[prolog].replace(cluster.installed.prefix, "/opt/slurm-mig-old"))
        os.chmod(epilog, 0o644)
        os.chmod(state, 0o777)
        rc, lines = doctor(cluster)
    finally:
        for path, text in saved.items():
            with open(path, "w") as f:
                f.write(text)
        os.chmod(epilog, 0o755)
        os.chmod(state, 0o755)
        cluster.run("scontrol", "update", f"NodeName={cluster.node}", f"Gres={running}")
    assert rc == 1
    assert failed(lines) == {"gres.conf", "node Gres", "Prolog", "Epilog", "state_dir"}, lines
    assert "mig:7g.80gb:1" in lines["node Gres"] and "need Gres=gpu:h100_sxm5_80gb:2,shard:112," in lines["node Gres"]
    assert "Name=shard records of migsim differ from the live GPUs (name=shard count=49 " in lines["gres.conf"]
    assert "where the live GPUs give name=shard count=56 " in lines["gres.conf"] and "slurm-mig gres-conf" in lines["gres.conf"]
    assert "is not this install's" in lines["Prolog"]
    assert f"fix: Prolog={cluster.installed.hook_script('prolog/slurm-mig-prolog')}" in lines["Prolog"]
    assert "missing or not executable" in lines["Epilog"]
    assert "writable by group or others (mode 0777)" in lines["state_dir"]
    assert f"chmod 700 {state}" in lines["state_dir"]
    assert doctor(cluster)[0] == 0                     # put back: healthy again


def broken(text):
    return (text.replace("PrologFlags=Alloc", "PrologFlags=Serial")
            .replace("PrologEpilogTimeout=", "PrologEpilogTimeout=30\n#")
            .replace("BatchStartTimeout=", "BatchStartTimeout=20\n#"))


def test_prolog_flags_and_timeouts_that_slurm_runs_with(slurm):
    with DevCluster("2xH100-80GB", wait_for_room=3, slurm=slurm, conf_edit=broken) as c:
        rc, lines = doctor(c)
    assert rc == 1 and failed(lines) == {"PrologFlags", "PrologEpilogTimeout", "BatchStartTimeout"}, lines
    assert "Serial lacks Alloc" in lines["PrologFlags"]
    assert "fix: PrologFlags=Serial,Alloc " in lines["PrologFlags"]
    prolog = int(re.search(r"30 s < (\d+) s needed", lines["PrologEpilogTimeout"]).group(1))
    assert f"fix: PrologEpilogTimeout={prolog} " in lines["PrologEpilogTimeout"]
    assert "wait_for_room=3 and interactive_wait=" in lines["PrologEpilogTimeout"]
    batch = int(re.search(r"20 s < (\d+) s needed", lines["BatchStartTimeout"]).group(1))
    assert f"fix: BatchStartTimeout={batch} " in lines["BatchStartTimeout"]


def without_cons_tres(text):
    return (text.replace("SelectType=select/cons_tres", "SelectType=select/linear")
            .replace("SelectTypeParameters=CR_Core", "SelectTypeParameters=CR_Memory"))


def test_without_cons_tres_slurmctld_refuses_to_start_and_doctor_reads_slurm_conf(slurm):
    c = DevCluster("2xH100-80GB", slurm=slurm, conf_edit=without_cons_tres)
    try:
        c.start(daemons=False)
        rc, lines = doctor(c)
        ctld = subprocess.run(["chroot", c.root, "/usr/sbin/slurmctld", "-D", "-f", c.conf],
                              capture_output=True, text=True, timeout=60, env=c.env)   # with munged
    finally:
        c.stop()
    assert ctld.returncode != 0 and "cons_tres" in ctld.stdout + ctld.stderr
    assert rc == 1 and failed(lines) == {"controller", "SelectType"}, lines
    assert f"checked {c.conf} instead" in lines["controller"]
    assert "select/linear" in lines["SelectType"] and "fix: SelectType=select/cons_tres" in lines["SelectType"]


def test_a_static_node_passes_until_its_layout_changes_under_gres_conf(slurm):
    layouts = os.path.join(os.path.dirname(__file__), "data", "mig-parted-h100.yaml")
    with DevCluster("2xH100-80GB", mode="static", layout=(layouts, "custom-config"), slurm=slurm) as c:
        rc, lines = doctor(c)
        assert rc == 0 and not failed(lines), lines
        assert lines["JobSubmitPlugins"].startswith("skip") and lines["gres.conf"].startswith("ok")
        c.slurm_mig("apply", "-f", c.node_dir("layout.yaml"), "-c", "all-balanced", "--force")
        rc, lines = doctor(c)
    assert rc == 1 and failed(lines) == {"gres.conf", "node Gres"}, lines   # Slurm counts the old layout
    assert "Name=mig records of migsim" in lines["gres.conf"] and "--mode static" in lines["gres.conf"]
