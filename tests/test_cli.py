"""The command line: verbs, exit codes, and clear errors for bad input."""
import json

import pytest

from slurm_mig.core import catalog


@pytest.fixture
def node(tmp_path, cli):
    state = str(tmp_path / "node.json")
    cli("sim", "init", state, "--gpus", "2xH100-80GB", check=0)
    env = {"SLURM_MIG_BACKEND": f"sim:{state}", "SLURM_MIG_STATE_DIR": str(tmp_path / "st"),
           "SLURM_MIG_RUN_DIR": str(tmp_path / "run")}
    return state, env


def test_status_json_and_table(node, cli):
    state, env = node
    cli("prolog", "--job", "12", "--request", "mig:3g.40gb:1", env=env, check=0)
    doc = json.loads(cli("status", "--json", env=env, check=0).stdout)
    g0 = doc["gpus"][0]
    assert g0["model"] == "H100-SXM5-80GB" and g0["mig"] == {"current": 1, "pending": 1}
    (inst,) = [i for g in doc["gpus"] for i in g["instances"]]
    assert inst["owner"] == "12" and inst["profile"] == "3g.40gb" and inst["uuid"].startswith("MIG-")
    table = cli("status", env=env, check=0).stdout
    assert "job 12" in table and "3g.40gb" in table and "Can still create" in table


def test_status_names_what_holds_an_instance_no_job_owns(node, cli):
    """An instance processes use after its job's record closed: shown as held
    by processes, never as a job (`job processes (no job)`), and typed in JSON."""
    state, env = node
    cli("prolog", "--job", "12", "--request", "mig:1g.10gb:1", env=env, check=0)
    (inst,) = [i for g in json.loads(cli("status", "--json", env=env, check=0).stdout)["gpus"]
               for i in g["instances"]]
    cli("sim", "busy", state, "--uuid", inst["uuid"], check=0)
    cli("epilog", "--job", "12", env=env, check=0)        # cannot destroy it: kept, record releasing
    cli("reconcile", env=env)
    import shutil
    shutil.rmtree(env["SLURM_MIG_STATE_DIR"] + "/jobs")    # the record gone: no job owns it now
    (inst,) = [i for g in json.loads(cli("status", "--json", env=env, check=0).stdout)["gpus"]
               for i in g["instances"]]
    assert (inst["owner"], inst["owner_kind"], inst["owned_by"]) == (None, "in_use", "processes no job owns")
    row = next(line for line in cli("status", env=env, check=0).stdout.splitlines() if inst["uuid"] in line)
    assert row.endswith("processes no job owns") and "job" not in row.replace("no job owns", "")
    assert [g["hold"] for g in json.loads(cli("status", "--json", env=env, check=0).stdout)["gpus"]] == [None, None]
    from slurm_mig.node import holds
    holds.write(env["SLURM_MIG_STATE_DIR"], holds.Hold(0, inst["uuid"], job="77", since=1.0))
    doc = json.loads(cli("status", "--json", env=env, check=0).stdout)
    assert [g["hold"] for g in doc["gpus"]] == [{"job": "77", "instance": inst["uuid"]}, None]
    assert (f"GPU 0 is kept from new jobs by job 77 while {inst['uuid']}, which no job owns, is in use"
            in cli("status", env=env, check=0).stdout)


def test_task_prolog_and_epilog_verbs(node, cli):
    _, env = node
    cli("prolog", "--job", "3", "--request", "1g.10gb:2", env=env, check=0)
    out = cli("task-prolog", env={**env, "SLURM_JOB_ID": "3"}, check=0).stdout
    assert out.startswith("export CUDA_VISIBLE_DEVICES=MIG-") and out.count("MIG-") == 2
    cli("epilog", "--job", "3", env=env, check=0)
    assert cli("task-prolog", "--job", "3", env=env, check=0).stdout == ""


def test_plan_exit_codes(node, cli):
    _, env = node
    assert "create 3g.40gb" in cli("plan", "--request", "mig:3g.40gb:1", env=env, check=0).stdout
    p = cli("plan", "--request", "mig:7g.80gb:3", env=env, check=3)
    assert "can never fit here: at most 1 x 7g.80gb on one H100-SXM5-80GB" in p.stderr
    p = cli("plan", "--request", "mig:9g.99gb:1", env=env, check=2)
    assert "unknown MIG profile" in p.stderr and "3g.40gb" in p.stderr
    from slurm_mig.core import catalog        # the profiles' own names, as `free` lists them
    assert f"valid profiles: {', '.join(catalog.load().all_profile_names())} (and their" in p.stderr
    doc = json.loads(cli("plan", "--request", "mig:1g.10gb:1", "--json", env=env, check=0).stdout)
    assert doc["placements"][0]["profile"] == "1g.10gb"


@pytest.mark.parametrize("args,needle", [
    (["prolog", "--job", "../etc", "--request", "mig:1g.10gb:1"], "invalid job id"),
    (["prolog", "--job", "12; rm -rf /", "--request", "mig:1g.10gb:1"], "invalid job id"),
    (["epilog"], "no job id"),
    (["plan", "--request", "mig:1g.10gb:100000"], "bad count"),
    (["plan", "--request", "mig:"], "malformed"),
    (["prolog", "--job", "4", "--request", "mig:1g.10gb:1", "--uid", "-5"], "not in the range"),
    (["prolog", "--job", "4", "--request", "mig:1g.10gb:1", "--uid", "4294967296"], "not in the range"),
    (["doctor", "--node-name", "a b"], "invalid node name 'a b'"),
    (["gres-conf", "--node-name", "bad name"], "invalid node name 'bad name'"),
    (["reconcile", "--node", "x/y"], "invalid node name 'x/y'"),
    (["publish-room", "--node", "$(id)"], "invalid node name"),
    (["gres-conf", "--from-spec", ""], "--from-spec is empty"),
])
def test_bad_input_exit_2(node, cli, args, needle):
    _, env = node
    p = cli(*args, env=env, check=2)
    assert needle in p.stderr and "Traceback" not in p.stderr


def test_unknown_backend_and_corrupt_state(tmp_path, cli):
    p = cli("--backend", "cuda", "status", check=2)
    assert "unknown backend 'cuda'" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "gpus": [')
    p = cli("--backend", f"sim:{bad}", "status", check=1)
    assert "bad.json is corrupt" in p.stderr and "Traceback" not in p.stderr
    p = cli("sim", "init", str(tmp_path / "x.json"), "--gpus", "2xH900", check=2)
    assert "unknown GPU model 'H900'" in p.stderr
    p = cli("sim", "init", str(tmp_path / "typo" / "dir" / "x.json"), "--gpus", "1xH100-80GB", check=2)
    assert f"folder {tmp_path / 'typo' / 'dir'} does not exist" in p.stderr and not (tmp_path / "typo").exists()


def test_missing_explicit_config(cli, tmp_path):
    p = cli("--config", str(tmp_path / "nope.toml"), "status", check=2)
    assert "does not exist" in p.stderr


def test_config_file_drives_hooks(tmp_path, cli):
    state = str(tmp_path / "n.json")
    cli("sim", "init", state, "--gpus", "1xA100-40GB", check=0)
    conf = tmp_path / "c.toml"
    conf.write_text(f'backend = "sim:{state}"\nstate_dir = "{tmp_path}/s"\nrun_dir = "{tmp_path}/r"\n'
                    'wait_for_room = 0\n')
    env = {"SLURM_MIG_CONFIG": str(conf), "SLURM_JOB_ID": "77"}
    cli("prolog", "--request", "mig:4g.20gb:1", env=env, check=0)
    assert "MIG-" in cli("task-prolog", env=env, check=0).stdout
    conf.write_text("wait_for_room = -3\n")
    assert "wait_for_room = -3: must be a finite number" in cli("status", env=env, check=2).stderr


def test_sim_fault_and_busy(node, cli):
    state, env = node
    p = cli("sim", "fault", state, "--call", "nvmlDeviceCreateGpuInstanceWithPlacement",
            "--error", "INSUFFICIENT_RESOURCES", "--times", "5", check=0)
    cli("prolog", "--job", "4", "--request", "mig:1g.10gb:1", env=env, check=0)
    out = cli("task-prolog", "--job", "4", env=env, check=1).stdout
    assert out.startswith("print ") and "creating instances failed" in out
    cli("sim", "fault", state, "--clear", check=0)
    assert "no NVML function" in cli("sim", "fault", state, "--call", "nvmlFoo", "--error", "3", check=2).stderr
    assert "unknown NVML error" in cli("sim", "fault", state, "--call", "nvmlDeviceGetCount",
                                       "--error", "BOGUS", check=2).stderr
    assert "no instance with UUID" in cli("sim", "busy", state, "--uuid", "MIG-x", check=2).stderr
    assert p.returncode == 0


def test_catalog_views(cli):
    assert "H100-SXM5-80GB" in cli("catalog", check=0).stdout
    out = cli("catalog", "H100-80GB", check=0).stdout
    assert "3g.40gb" in out and "{0,4}:4" in out and "without reset" in out
    doc = json.loads(cli("catalog", "A30", "--json", check=0).stdout)
    assert doc["A30-24GB"]["memory_slots"] == 4
    assert "unknown GPU model" in cli("catalog", "Z1", check=2).stderr


def test_catalog_import_reads_a_gpu(node, cli):
    state, env = node
    doc = json.loads(cli("catalog", "import", "--gpu", "1", env=env, check=0).stdout)
    (layout,) = doc["layouts"].values()
    assert layout["memory_slots"] == 8 and layout["gi_profiles"]["2"]["starts"] == [0, 4]
    (model,) = doc["models"].values()
    assert model["profiles"]["2"]["name"] == "3g.40gb"
    assert (model["arch"], model["memory_mib"], model["pci_device_ids"]) == ("hopper", 81559, ["0x2330"])
    # The printed entry loads as catalog data and describes the same GPU.
    with open(catalog.DATA_FILE) as f:
        ci_profiles = json.load(f)["ci_profiles"]
    (imported,) = catalog.Catalog.from_dict({**doc, "ci_profiles": ci_profiles}).models.values()
    h100 = catalog.load().model("H100-80GB")
    assert [(p.id, p.starts, p.mem_slots, p.max) for p in imported.profiles] == \
        [(p.id, p.starts, p.mem_slots, p.max) for p in h100.profiles]


def test_version_is_the_packages(cli):
    from slurm_mig import __version__
    assert cli("--version", check=0).stdout == f"slurm-mig {__version__}\n"


def test_help_explains(cli):
    out = cli("--help", check=0).stdout
    assert "Exit codes" in out and "prolog" in out and "SLURM_MIG_BACKEND" in out


# -- what an admin meets first: errors that name the thing -------------------------------------
def test_apply_refuses_gpus_the_node_lacks(node, cli, tmp_path):
    state, env = node
    layout = tmp_path / "l.yaml"
    layout.write_text('version: v1\nmig-configs:\n  c:\n    - devices: [0, 5]\n      mig-enabled: true\n'
                      '      mig-devices:\n        "1g.10gb": 1\n')
    p = cli("apply", "-f", str(layout), "-c", "c", env=env, check=2)
    assert "the layout names GPU(s) 5, which this node does not have (GPUs 0, 1); nothing was changed" in p.stderr
    assert json.loads(cli("status", "--json", env=env, check=0).stdout)["gpus"][0]["instances"] == []


def test_broken_yaml_names_the_file_and_the_line(node, cli, tmp_path):
    state, env = node
    layout = tmp_path / "bad.yaml"
    layout.write_text("version: v1\nmig-configs: [\n")
    p = cli("apply", "-f", str(layout), "-c", "c", env=env, check=2)
    assert f"{layout} is not valid YAML, line 3, column 1:" in p.stderr and "<unicode string>" not in p.stderr


def test_metrics_into_a_missing_directory_name_it(node, cli, tmp_path):
    state, env = node
    target = tmp_path / "nodir" / "x.prom"
    p = cli("status", "--prometheus", "--output", str(target), env=env, check=1)
    assert f"cannot write {target}: directory {target.parent} does not exist" in p.stderr and ".tmp-" not in p.stderr


def test_the_hook_entry_explains_itself(node, tmp_path):
    import subprocess
    import sys
    state, env = node
    run = lambda *args, **extra: subprocess.run([sys.executable, "-m", "slurm_mig.hooks.main", *args],  # noqa: E731
                                                capture_output=True, text=True, env={**env, **extra})
    p = run("--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: slurm-mig-hook prolog|epilog|task-prolog|steer")
    (tmp_path / "hook.toml").write_text("wait_for_room = 0\n")
    p = run("prolog", SLURM_MIG_CONFIG=str(tmp_path / "hook.toml"))
    assert p.returncode == 1 and "slurm-mig-hook prolog: SLURM_JOB_ID is not set: it runs under slurmd" in p.stderr


def test_plan_places_on_one_gpu_as_a_prolog_does(node, cli):
    state, env = node
    p = cli("plan", "--request", "mig:7g.80gb:1,mig:1g.10gb:1", env=env, check=3)
    assert "can never fit here: together they need more than one H100-SXM5-80GB has" in p.stderr
    p = cli("plan", "--request", "mig:3g.40gb:1,mig:1g.10gb:1", env=env, check=0)
    assert len({line.split(" on GPU ")[1].split()[0] for line in p.stdout.splitlines()}) == 1
