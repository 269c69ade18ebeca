"""The checks of `slurm-mig doctor` on their own (tests/test_doctor_e2e.py runs
them against real Slurm)."""
import os

from slurm_mig import installed
from slurm_mig.config import Config
from slurm_mig.node import checks as node_checks
from slurm_mig.slurm import doctor
from slurm_mig.slurm.confgen import hook_timeouts

SHOW_CONFIG_22 = """Configuration data as of 2026-12-07T07:49:35
BatchStartTimeout       = 60 sec
Epilog                  = /opt/slurm-mig/share/slurm-mig/epilog/slurm-mig-epilog
GresTypes               = gpu,shard,mig
JobSubmitPlugins        = lua
Prolog                  = /opt/slurm-mig/share/slurm-mig/prolog/slurm-mig-prolog
PrologEpilogTimeout     = 65534
PrologFlags             = Contain,X11
SelectType              = select/cons_res
TaskProlog              = (null)
"""

SHOW_CONFIG_24 = """Prolog[0]               = /etc/slurm/prolog.d/*
Prolog[1]               = /opt/x/prolog
PrologEpilogTimeout     = 120
"""


def test_show_config_of_each_version_reads_into_lists():
    conf = doctor.parse_show_config(SHOW_CONFIG_22)
    assert conf["prologflags"] == ["Contain,X11"] and conf["batchstarttimeout"] == ["60 sec"]
    assert "taskprolog" not in conf                        # (null) is unset
    assert doctor.parse_show_config(SHOW_CONFIG_24)["prolog"] == ["/etc/slurm/prolog.d/*", "/opt/x/prolog"]


def test_prolog_flags_fix_keeps_the_flags_already_set():
    check = doctor.prolog_flags(doctor.parse_show_config(SHOW_CONFIG_22))
    assert check.status == doctor.FAIL and check.fix.startswith("PrologFlags=Contain,X11,Alloc ")
    assert doctor.prolog_flags({"prologflags": ["Alloc,Contain"]}).status == doctor.OK


def test_select_type_and_gres_types():
    conf = doctor.parse_show_config(SHOW_CONFIG_22)
    assert doctor.select_type(conf).status == doctor.FAIL
    assert doctor.gres_types(conf, "dynamic").status == doctor.OK
    lacking = doctor.gres_types({"grestypes": ["gpu"]}, "dynamic")
    assert lacking.status == doctor.FAIL and "lacks shard,mig" in lacking.text
    assert doctor.job_submit_plugin({}, "dynamic").status == doctor.FAIL
    assert doctor.job_submit_plugin({}, "static").status == doctor.SKIP


def test_guarantee_after_must_come_before_max_requeues():
    assert doctor.guarantee_after(Config()).status == doctor.OK                          # 50 < 100
    assert doctor.guarantee_after(Config(guarantee_after=0)).status == doctor.OK         # off
    check = doctor.guarantee_after(Config(guarantee_after=10, max_requeues=10))
    assert check.status == doctor.FAIL and check.fix.startswith("guarantee_after = 5 ")


def test_steer_return_must_outlast_slurmds_credential_cache():
    assert doctor.steer_return({}, Config()).status == doctor.OK                   # 125 >= 120 + 3, Slurm's default
    assert doctor.steer_return({}, Config(steer_return=122)).status == doctor.FAIL  # expired, maybe not dropped
    longer = {"authinfo": ["cred_expire=300,socket=/run/munge.sock"]}
    check = doctor.steer_return(longer, Config())
    assert check.status == doctor.FAIL and check.fix == "steer_return = 305 in the slurm-mig config"
    assert doctor.steer_return(longer, Config(steer_return=302)).status == doctor.FAIL
    assert doctor.steer_return(longer, Config(steer_return=303)).status == doctor.OK
    assert doctor.steer_return(longer, Config(steer_return=303, steer=False)).status == doctor.OK
    assert doctor.steer_return(longer, Config(steer_return=300, steer=False)).status == doctor.FAIL   # it sets the start
    assert doctor.steer_return(longer, Config(steer_return=0)).status == doctor.OK


def test_timeouts_follow_the_node_config():
    cfg = Config(wait_for_room=600, lock_timeout=10, interactive_wait=900)
    prolog, batch = hook_timeouts(cfg)
    assert (prolog, batch) == (2 * 10 + 900 + 60 + 66, 2 * 10 + 600 + 60 + 66 + 10)
    checks = {c.name: c for c in doctor.timeouts({"prologepilogtimeout": [str(prolog - 1)],
                                                   "batchstarttimeout": [f"{batch} sec"]}, cfg)}
    assert checks["PrologEpilogTimeout"].status == doctor.FAIL
    assert f"PrologEpilogTimeout={prolog} " in checks["PrologEpilogTimeout"].fix
    assert "interactive_wait=900" in checks["PrologEpilogTimeout"].text
    assert checks["BatchStartTimeout"].status == doctor.OK
    forever = {c.name: c for c in doctor.timeouts(doctor.parse_show_config(SHOW_CONFIG_22), cfg)}
    assert forever["PrologEpilogTimeout"].status == doctor.OK and "never" in forever["PrologEpilogTimeout"].text
    assert forever["BatchStartTimeout"].status == doctor.FAIL
    # a batch job never waits interactive_wait: lowering it cannot help BatchStartTimeout
    assert "lower wait_for_room or lock_timeout" in forever["BatchStartTimeout"].fix
    assert "interactive_wait" not in forever["BatchStartTimeout"].fix
    assert "epilog_retries=5" in forever["BatchStartTimeout"].text                   # the other bound, said
    split = {c.name for c in doctor.timeouts({"prologtimeout": ["99999"], "batchstarttimeout": ["9999"]}, cfg)}
    assert split == {"PrologTimeout", "BatchStartTimeout"}          # 25.05's own Prolog timeout


def test_hook_scripts_must_be_this_install_or_name_it(tmp_path):
    scripts = {p: str(tmp_path / "share" / p) for p in doctor.HOOKS}
    os.makedirs(tmp_path / "share")
    for path in scripts.values():
        with open(path, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(path, 0o755)
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(f"#!/bin/sh\nexec {scripts['Epilog']}\n")
    wrapper.chmod(0o755)
    other = tmp_path / "other-prolog"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    conf = {"prolog": [str(tmp_path / "other-*")], "taskprolog": [scripts["TaskProlog"]],
            "epilog": [str(wrapper)]}
    checks = {c.name: c for c in doctor.hook_paths(conf, scripts)}
    assert checks["Prolog"].status == doctor.FAIL and checks["Prolog"].fix.startswith(f"Prolog={scripts['Prolog']}")
    assert checks["TaskProlog"].status == checks["Epilog"].status == doctor.OK
    assert [c.status for c in doctor.hook_paths({}, None)] == [doctor.SKIP] * 3


def test_directories_root_writes_into(tmp_path):
    state, run = tmp_path / "state", tmp_path / "run"
    state.mkdir(mode=0o700)
    run.mkdir()
    run.chmod(0o775)
    cfg = Config(state_dir=str(state), run_dir=str(run), hooks_dir=str(tmp_path / "none"))
    checks = {c.name: c for c in node_checks.directories(cfg)}
    assert checks["state_dir"].status == doctor.OK and checks["hooks_dir"].status == doctor.OK
    assert checks["run_dir"].status == doctor.FAIL and "mode 0775" in checks["run_dir"].text
    assert f"chmod 755 {run}" in checks["run_dir"].fix


def test_the_hook_server_is_reported_serving_or_not(tmp_path):
    import socket
    cfg = Config(run_dir=str(tmp_path))
    check = lambda c=cfg: node_checks.hook_server(c)     # noqa: E731
    assert check().status == doctor.OK and check().text.startswith("none running now")
    (tmp_path / "hookd").mkdir(mode=0o700)
    path = str(tmp_path / "hookd" / "fe00-1234.sock")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(path)
        assert check().text.startswith("none running now")      # a socket nothing listens on
        s.listen()
        assert check().text == f"serving on {path}"
    assert check(cfg._replace(hook_server=False)).text.startswith("off")


def test_systemd_units_installed_and_enabled(tmp_path):
    cfg = Config(isolate_devices=True)
    assert node_checks.wanted_units(cfg) == ["slurm-mig-reconcile.timer", "slurm-mig-node-setup.service"]
    units = installed.systemd_units()
    status = lambda: {c.name: c.status for c in node_checks.systemd(cfg, str(tmp_path))}   # noqa: E731
    assert set(status().values()) == {doctor.FAIL}
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    assert status() == dict.fromkeys(node_checks.wanted_units(cfg), doctor.FAIL)      # written, not enabled
    for unit, target in (("slurm-mig-reconcile.timer", "timers.target"),
                         ("slurm-mig-node-setup.service", "multi-user.target")):
        (tmp_path / f"{target}.wants").mkdir(exist_ok=True)
        os.symlink(tmp_path / unit, tmp_path / f"{target}.wants" / unit)
    assert set(status().values()) == {doctor.OK}
    (tmp_path / "slurm-mig-reconcile.service").write_text(units["slurm-mig-reconcile.service"]
                                                          .replace(installed.command(), "/old/slurm-mig"))
    assert status()["slurm-mig-reconcile.timer"] == doctor.FAIL               # names another install


def test_slurm_conf_is_read_when_slurmctld_cannot_be_asked(tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"
    conf.write_text("SelectType=select/linear  # no shards\nPrologFlags=Contain\n"
                    "NodeName=n1 Gres=gpu:1 Prolog=ignored\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    read, why = doctor.slurm_config(str(tmp_path))              # no scontrol there
    assert why.status == doctor.FAIL and f"checked {conf} instead" in why.text
    assert read["selecttype"] == ["select/linear"] and "prolog" not in read
    assert read["batchstarttimeout"] == ["10"]                  # Slurm's default when unset


def test_job_submit_lua_must_admit_this_node_and_match_the_catalog(tmp_path):
    from types import SimpleNamespace
    from slurm_mig.core import catalog
    from slurm_mig.slurm import confgen
    from slurm_mig.config import Config
    cat = catalog.load()
    a30, h100 = cat.model("A30-24GB"), cat.model("H100-80GB")
    cfg = Config(mode="dynamic")
    lua = tmp_path / "job_submit.lua"
    conf = {"slurm_conf": [str(tmp_path / "slurm.conf")]}
    here = [SimpleNamespace(model=h100)]
    assert doctor.job_submit_lua(conf, here, cfg).status == doctor.SKIP     # on the controller host only
    missing = doctor.job_submit_lua(conf, [], cfg, here=True)                 # which this is
    assert missing.status == doctor.FAIL and "--cluster-models MODEL,... " in missing.fix

    def generated(*models, **charges):
        return confgen.render([confgen.NodeGroup("n1", confgen.from_spec(f"1x{models[0].key}"))], "dynamic",
                              "/dev", "gres-conf", "a declared node", cluster_models=models,
                              **charges)["job_submit.lua"]
    lua.write_text(generated(a30))
    check = doctor.job_submit_lua(conf, here, cfg)
    assert check.status == doctor.FAIL and "not this node's H100-SXM5-80GB" in check.text
    assert "--cluster-models A30-24GB,H100-SXM5-80GB " in check.fix
    lua.write_text(generated(a30, h100))
    assert doctor.job_submit_lua(conf, here, cfg).status == doctor.OK
    lua.write_text(generated(a30, h100).replace('["1g.10gb"] = { "1g.10gb", 8 }', '["1g.10gb"] = { "1g.10gb", 1 }'))
    check = doctor.job_submit_lua(conf, here, cfg)
    assert check.status == doctor.FAIL and "differs from what this slurm-mig's catalog generates" in check.text
    # the site's charges are part of the file: generated with them, it matches a config that has them
    lua.write_text(generated(a30, h100, interactive_charge=0, guarantee_after=5))
    assert doctor.job_submit_lua(conf, here, cfg).status == doctor.FAIL
    assert doctor.job_submit_lua(conf, here, cfg._replace(interactive_charge=0, guarantee_after=5)).status \
        == doctor.OK


def test_gres_as_slurm_prints_it_counts_like_the_generated_node_line():
    slurm = ("gpu:h100_sxm5_80gb:2(S:0-1),shard:h100_sxm5_80gb:112,mig:1g.10gb:14,mig:1g.10gb+me:2,"
             "mig:7g.80gb:2")
    line = "gpu:h100_sxm5_80gb:2,shard:112,mig:1g.10gb:14,mig:1g.10gb+me:2,mig:7g.80gb:2"
    assert doctor.gres_counts(slurm) == doctor.gres_counts(line) == {
        ("gpu", ""): 2, ("shard", ""): 112, ("mig", "1g.10gb"): 14, ("mig", "1g.10gb+me"): 2, ("mig", "7g.80gb"): 2}
    assert doctor.gres_counts(line.replace("shard:112", "shard:56")) != doctor.gres_counts(slurm)


def test_a_mixed_clusters_gres_conf_is_priced_for_its_models(make_node, driver_for):
    cfg, state = make_node("1xH100-80GB")
    gpus = driver_for(state).gpus()
    header = "# Shard units priced for the GPU models A100-40GB, H100-SXM5-80GB:\n"
    assert "Name=shard Count=728 " in doctor.generated(gpus, cfg, "n1", header)["gres.conf"]
    assert "Name=shard Count=56 " in doctor.generated(gpus, cfg, "n1")["gres.conf"]
