"""Static layouts: mig-parted format, idempotent apply, --check, export, busy instances."""
import json
import os

import pytest

from harness import calls as hooks
from slurm_mig.sim import SimStore

LAYOUTS = os.path.join(os.path.dirname(__file__), "data", "mig-parted-h100.yaml")
EXAMPLES = ["all-1g.10gb", "all-1g.20gb", "all-2g.20gb", "all-3g.40gb", "all-4g.40gb", "all-7g.80gb",
            "all-balanced", "custom-config", "all-enabled", "all-disabled"]


@pytest.fixture
def node(make_node, cli):
    cfg, state = make_node("2xH100-80GB", mig=False)
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir,
           "SLURM_MIG_RUN_DIR": cfg.run_dir}
    return cfg, state, env


def _static_config(cfg):
    path = os.path.join(os.path.dirname(cfg.state_dir), "static.toml")
    with open(path, "w") as f:
        f.write('mode = "static"\n')
    return path


def layout_of(state):
    return [sorted((gi["profile_id"], gi["start"]) for gi in g["gis"]) for g in SimStore(state).read()["gpus"]]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_layouts_apply_check_and_reapply(node, cli, name):
    cfg, state, env = node
    cli("apply", "-f", LAYOUTS, "-c", name, env=env, check=0)
    assert cli("apply", "-f", LAYOUTS, "-c", name, "--check", env=env, check=0).stderr == ""
    before = SimStore(state).read()
    out = cli("apply", "-f", LAYOUTS, "-c", name, env=env, check=0).stdout
    assert "nothing changed" in out
    assert SimStore(state).read()["gpus"] == before["gpus"]       # same instances, same UUIDs


def test_counts_match_the_layout(node, cli):
    cfg, state, env = node
    p = cli("apply", "-f", LAYOUTS, "-c", "custom-config", env=env, check=0)
    assert "dynamic mode" in p.stderr and "reconcile" in p.stderr          # the node's default mode
    static = {**env, "SLURM_MIG_CONFIG": str(_static_config(cfg))}
    assert cli("apply", "-f", LAYOUTS, "-c", "custom-config", env=static, check=0).stderr == ""
    doc = json.loads(cli("status", "--json", env=env, check=0).stdout)
    g0 = sorted(i["profile"] for i in doc["gpus"][0]["instances"])
    g1 = sorted(i["profile"] for i in doc["gpus"][1]["instances"])
    assert g0 == ["3g.40gb", "4g.40gb"] and g1 == ["1g.10gb"] * 7


def test_check_reports_a_readable_diff(node, cli):
    cfg, state, env = node
    cli("apply", "-f", LAYOUTS, "-c", "all-3g.40gb", env=env, check=0)
    p = cli("apply", "-f", LAYOUTS, "-c", "all-balanced", "--check", env=env, check=1)
    assert "create 2g.20gb" in p.stdout and "differs" in p.stderr


def test_change_keeps_instances_already_in_place(node, cli):
    cfg, state, env = node
    cli("apply", "-f", LAYOUTS, "-c", "all-3g.40gb", env=env, check=0)
    uuids = {ci["uuid"] for g in SimStore(state).read()["gpus"] for gi in g["gis"] for ci in gi["cis"]}
    cli("apply", "-f", LAYOUTS, "-c", "all-balanced", env=env, check=0)
    after = {ci["uuid"] for g in SimStore(state).read()["gpus"] for gi in g["gis"] for ci in gi["cis"]}
    assert len(uuids & after) == 2          # each GPU's 3g.40gb stayed


def test_busy_instance_is_kept_or_the_apply_refused(node, cli):
    cfg, state, env = node
    cli("apply", "-f", LAYOUTS, "-c", "all-3g.40gb", env=env, check=0)
    g0 = SimStore(state).read()["gpus"][0]
    busy_uuid = next(gi["cis"][0]["uuid"] for gi in g0["gis"] if gi["start"] == 4)
    cli("sim", "busy", state, "--uuid", busy_uuid, check=0)
    # balanced keeps a 3g.40gb: the busy one stays and the rest goes around it.
    cli("apply", "-f", LAYOUTS, "-c", "all-balanced", env=env, check=0)
    g0 = SimStore(state).read()["gpus"][0]
    assert any(ci["uuid"] == busy_uuid for gi in g0["gis"] for ci in gi["cis"])
    # all-1g.10gb would destroy it: refused, nothing changed.
    before = layout_of(state)
    p = cli("apply", "-f", LAYOUTS, "-c", "all-1g.10gb", env=env, check=1)
    assert "in use" in p.stderr and "nothing was changed" in p.stderr
    assert layout_of(state) == before


def test_job_owned_instance_needs_force(node, cli):
    cfg, state, env = node
    cli("apply", "-f", LAYOUTS, "-c", "all-enabled", env=env, check=0)
    hooks.prolog(cfg, "5", "mig:7g.80gb:1", gpu=0)
    p = cli("apply", "-f", LAYOUTS, "-c", "all-1g.10gb", env=env, check=1)
    assert "job 5" in p.stderr
    cli("apply", "-f", LAYOUTS, "-c", "all-1g.10gb", "--force", env=env, check=0)


def test_export_round_trips(node, cli, tmp_path):
    cfg, state, env = node
    cli("apply", "-f", LAYOUTS, "-c", "custom-config", env=env, check=0)
    exported = tmp_path / "live.yaml"
    exported.write_text(cli("export", "--name", "snap", env=env, check=0).stdout)
    cli("apply", "-f", LAYOUTS, "-c", "all-disabled", env=env, check=0)
    cli("apply", "-f", str(exported), "-c", "snap", env=env, check=0)
    cli("apply", "-f", LAYOUTS, "-c", "custom-config", "--check", env=env, check=0)


@pytest.mark.parametrize("text,needle", [
    ("version: v2\nmig-configs: {}\n", "version: v1"),
    ("version: v1\nmig-configs:\n  a:\n    - devices: all\n", "mig-enabled"),
    ("version: v1\nmig-configs:\n  a:\n    - devices: [x]\n      mig-enabled: true\n", "devices must be"),
    ("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {9g.9gb: 1}\n", "no MIG profile"),
    ("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n    - devices: [0]\n      mig-enabled: true\n", "matches 2 entries"),
    ("{{{", "not valid YAML"),
])
def test_bad_layout_files(node, cli, tmp_path, text, needle):
    cfg, state, env = node
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    p = cli("apply", "-f", str(bad), "-c", "a", env=env, check=2)
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert "no config 'zz'" in cli("apply", "-f", LAYOUTS, "-c", "zz", env=env, check=2).stderr


def test_ampere_mode_change_pending_is_reported_and_site_hooks_run(make_node, cli, tmp_path):
    cfg, state = make_node("1xA100-40GB", mig=False)
    with SimStore(state).transaction() as st:
        st["gpus"][0]["reset_capable"] = False
        st["_dirty"] = True
    hooks_dir = tmp_path / "hooks.d"
    hooks_dir.mkdir()
    log = tmp_path / "hook.log"
    hook = hooks_dir / "10-dcgm"
    hook.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    hook.chmod(0o755)
    conf = tmp_path / "c.toml"
    conf.write_text(f'backend = "{cfg.backend}"\nstate_dir = "{cfg.state_dir}"\nhooks_dir = "{hooks_dir}"\n')
    layout = tmp_path / "l.yaml"
    layout.write_text("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n"
                      "      mig-devices: {3g.20gb: 2}\n")
    env = {"SLURM_MIG_CONFIG": str(conf)}
    p = cli("apply", "-f", str(layout), "-c", "a", env=env, check=1)
    assert "pending on" in p.stderr and "nvidia-smi --gpu-reset -i 0" in p.stderr
    assert log.read_text().splitlines() == ["pre-mode-change 0 on", "post-mode-change 0 on"]
    cli("sim", "reset", state, "--gpu", "0", check=0)      # the admin resets that GPU only
    cli("apply", "-f", str(layout), "-c", "a", env=env, check=0)
    assert len(SimStore(state).read()["gpus"][0]["gis"]) == 2


def test_allow_reset_completes_a_pending_ampere_mode_change(make_node, cli, tmp_path):
    cfg, state = make_node("2xA100-40GB", mig=False)
    with SimStore(state).transaction() as st:
        for g in st["gpus"]:
            g["reset_capable"] = False
        st["_dirty"] = True
    layout = tmp_path / "l.yaml"
    layout.write_text("version: v1\nmig-configs:\n  a:\n    - devices: [0]\n      mig-enabled: true\n"
                      "      mig-devices: {7g.40gb: 1}\n")
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir}
    cli("apply", "-f", str(layout), "-c", "a", "--allow-reset", env=env, check=0)
    gpus = SimStore(state).read()["gpus"]
    assert gpus[0]["mig_current"] == 1 and len(gpus[0]["gis"]) == 1
    assert gpus[1]["mig_current"] == 0 and gpus[1]["mig_pending"] == 0     # the other GPU untouched
    assert "no GPU 7" in cli("sim", "reset", state, "--gpu", "7", check=2).stderr


def test_reset_is_refused_while_a_process_runs(make_node, cli):
    cfg, state = make_node("1xH100-80GB")
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir}
    cli("apply", "-f", LAYOUTS, "-c", "all-7g.80gb", env=env, check=0)
    uuid = SimStore(state).read()["gpus"][0]["gis"][0]["cis"][0]["uuid"]
    cli("sim", "busy", state, "--uuid", uuid, check=0)
    assert "processes are running" in cli("sim", "reset", state, "--gpu", "0", check=2).stderr
    assert len(SimStore(state).read()["gpus"][0]["gis"]) == 1


@pytest.mark.parametrize("entry,needle", [
    ("      mig-device: {1g.10gb: 3}\n", "unknown key(s) mig-device"),      # a typo, not "no instances"
    ("      migdevices: {}\n", "unknown key(s) migdevices"),
])
def test_an_unknown_key_is_refused_before_anything_changes(node, cli, tmp_path, entry, needle):
    cfg, state, env = node
    cli("apply", "-f", LAYOUTS, "-c", "all-1g.10gb", env=env, check=0)
    before = layout_of(state)
    bad = tmp_path / "typo.yaml"
    bad.write_text("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n" + entry)
    p = cli("apply", "-f", str(bad), "-c", "a", env=env, check=2)
    assert needle in p.stderr and "Traceback" not in p.stderr
    assert layout_of(state) == before
    bad.write_text("version: v1\nmig-config: {}\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n")
    assert "unknown key(s) mig-config" in cli("apply", "-f", str(bad), "-c", "a", env=env, check=2).stderr


@pytest.mark.parametrize("devices", ['{"3g.39gb": 1, "3g.40gb": 1}', '{"3g.40gb": 1, "3G.40GB": 1}'])
def test_an_alias_beside_its_profile_adds_to_it(node, cli, tmp_path, devices):
    cfg, state, env = node
    f = tmp_path / "alias.yaml"
    f.write_text(f"version: v1\nmig-configs:\n  a:\n    - devices: [0]\n      mig-enabled: true\n"
                 f"      mig-devices: {devices}\n")
    cli("apply", "-f", str(f), "-c", "a", env=env, check=0)
    doc = json.loads(cli("status", "--json", env=env, check=0).stdout)
    assert sorted(i["profile"] for i in doc["gpus"][0]["instances"]) == ["3g.40gb", "3g.40gb"]
    cli("apply", "-f", str(f), "-c", "a", "--check", env=env, check=0)


def test_a_config_for_no_gpu_of_the_node_is_an_error(node, cli, tmp_path):
    cfg, state, env = node
    f = tmp_path / "a100.yaml"
    f.write_text('version: v1\nmig-configs:\n  a:\n    - devices: all\n      device-filter: "0x20B010DE"\n'
                 '      mig-enabled: true\n      mig-devices: {1g.10gb: 7}\n')
    for extra in ((), ("--check",)):
        p = cli("apply", "-f", str(f), "-c", "a", *extra, env=env, check=2)
        assert "no entry of the config applies to any GPU" in p.stderr and "0x233010DE" in p.stderr
