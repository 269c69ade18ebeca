"""The generated job_submit.lua, run by a Lua 5.1 interpreter with a stand-in
`slurm` table: Slurm 22.05 hands it `gres:mig:...`, 23.11 and later
`gres/mig:...`, and what it writes back must keep that prefix. It must refuse
exactly the requests no GPU model of the cluster can hold (the planner's
exhaustive search is the oracle) and those the shard count cannot admit."""
import copy
import itertools
import json
import re
import shutil
import subprocess

import pytest

from slurm_mig.core import catalog, planner, shards
from slurm_mig.slurm import confgen

LUA = shutil.which("lua5.1")
pytestmark = pytest.mark.skipif(LUA is None, reason="needs lua5.1 (bash run.sh test installs it)")

# One job per stdin line: tab-separated field=value pairs of job_desc; prints
# the return code, tres_per_node afterwards and what the user was told.
DRIVER = """
local told
slurm = { SUCCESS = 0, ERROR = -1, log_user = function(fmt, ...) told = string.format(fmt, ...) end }
dofile(arg[1])
for line in io.lines() do
    local desc = {}
    for k, v in string.gmatch(line, "([%w_]+)=([^\\t]*)") do desc[k] = v end
    told = ""
    local modify = desc.modify
    desc.modify = nil
    local rc
    if modify then rc = slurm_job_modify(desc, {}, {}, 1000) else rc = slurm_job_submit(desc, {}, 1000) end
    print(rc .. "\\t" .. tostring(desc.tres_per_node) .. "\\t" .. told)
end
"""
H100 = catalog.load().model("H100-80GB")


def lua_script(tmp_path, gpus, cluster_models=()):
    files = confgen.render([confgen.NodeGroup(None, gpus)], "dynamic", "/dev", "test", "test",
                           cluster_models=cluster_models)
    (tmp_path / "job_submit.lua").write_text(files["job_submit.lua"])
    (tmp_path / "driver.lua").write_text(DRIVER)
    return tmp_path


@pytest.fixture(scope="module")
def lua_files(tmp_path_factory):
    return lua_script(tmp_path_factory.mktemp("lua"), confgen.from_spec("2xH100-80GB"))


def submit_many(lua_files, jobs):
    """jobs: tres_per_node strings (batch jobs), or dicts of job_desc fields."""
    lines = ["\t".join(f"{k}={v}" for k, v in (j if isinstance(j, dict) else {"tres_per_node": j, "script": "#!"}).items())
             for j in jobs]
    p = subprocess.run([LUA, str(lua_files / "driver.lua"), str(lua_files / "job_submit.lua")],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = []
    for line in p.stdout.splitlines():
        rc, new, told = line.split("\t")
        out.append((int(rc), new, told))
    assert len(out) == len(jobs)
    return out


def submit(lua_files, job):
    return submit_many(lua_files, [job])[0]


@pytest.mark.parametrize("prefix", ["gres:", "gres/"])
def test_shards_are_added_with_the_prefix_slurm_used(lua_files, prefix):
    assert submit(lua_files, f"{prefix}mig:3g.40gb:1") == (0, f"{prefix}mig:3g.40gb:1,{prefix}shard:25", "")
    rc, new, _ = submit(lua_files, f"{prefix}mig:1g.10gb:2,{prefix}mig:3g.39gb:1")
    assert rc == 0 and new == f"{prefix}mig:1g.10gb:2,{prefix}mig:3g.40gb:1,{prefix}shard:41"


@pytest.mark.parametrize("prefix", ["gres:", "gres/"])
def test_unknown_profiles_are_refused_with_the_valid_ones(lua_files, prefix):
    rc, _, told = submit(lua_files, f"{prefix}mig:5g.50gb:1")
    assert rc == -1 and "unknown MIG profile '5g.50gb'" in told and "3g.40gb" in told


def test_jobs_without_mig_pass_unchanged(lua_files):
    assert submit(lua_files, "gres/gpu:1") == (0, "gres/gpu:1", "")
    assert submit(lua_files, {"tres_per_job": "gres/gpu:1"}) == (0, "nil", "")


@pytest.mark.parametrize("tres, limit", [
    ("gres:mig:1g.10gb:8", "at most 7 x 1g.10gb on one H100-SXM5-80GB"),
    ("gres/mig:4g.40gb:2", "at most 1 x 4g.40gb on one H100-SXM5-80GB"),
    ("gres/mig:1g.10gb:5,gres/mig:1g.10gb:3", "at most 7 x 1g.10gb on one H100-SXM5-80GB"),
    ("gres:mig:7g.80gb:1,gres:mig:1g.10gb:1",
     "1 x 1g.10gb + 1 x 7g.80gb needs 8 compute slices; one H100-SXM5-80GB has 7"),
    ("gres:mig:3g.40gb:2,gres:mig:1g.20gb:1",
     "1 x 1g.20gb + 2 x 3g.40gb needs 10 memory slots; one H100-SXM5-80GB has 8"),
    ("gres:mig:1g.10gb:4,gres:mig:1g.10gb+me:1",
     "4 x 1g.10gb + 1 x 1g.10gb+me on one H100-SXM5-80GB is a combination Slurm's shard count "
     "cannot admit (61 of 56 shards)"),
])
def test_what_no_gpu_can_hold_is_refused_naming_the_limit(lua_files, tres, limit):
    rc, new, told = submit(lua_files, tres)
    assert (rc, told) == (-1, f"slurm-mig: {limit}" + ("; submit it as separate jobs" if "shard" in limit else ""))


def test_what_fits_is_accepted_whole_gpu_profiles_costing_a_gpu(lua_files):
    assert submit(lua_files, "gres/mig:4g.40gb:1,gres/mig:3g.40gb:1")[:2] == \
        (0, "gres/mig:4g.40gb:1,gres/mig:3g.40gb:1,gres/shard:54")
    assert submit(lua_files, "gres:mig:7g.80gb:1")[:2] == (0, "gres:mig:7g.80gb:1,gres:shard:56")


@pytest.mark.parametrize("job", [
    "gres:mig:1g.10gb:1,gres:gpu:1", "gres/gpu:h100:1,gres/mig:1g.10gb:1",
    {"tres_per_node": "gres/mig:1g.10gb:1", "tres_per_job": "gres/gpu:1"},
    {"tres_per_node": "gres:mig:1g.10gb:1", "tres_per_task": "gres:gpu:1"},
])
def test_mig_with_whole_gpus_in_one_job_is_refused(lua_files, job):
    rc, _, told = submit(lua_files, job)
    assert rc == -1 and "do not combine mig: and gpu:" in told


@pytest.mark.parametrize("tres", ["gres:shard:4", "gres/shard:8,gres/mig:1g.10gb:1", "gres/shard"])
def test_raw_shards_are_refused(lua_files, tres):
    rc, _, told = submit(lua_files, tres)
    assert rc == -1 and ("--gres=mig:" in told or "do not combine mig: and shard:" in told)


def test_mig_outside_the_per_node_gres_is_refused(lua_files):
    rc, _, told = submit(lua_files, {"tres_per_job": "gres/mig:1g.10gb:1"})
    assert rc == -1 and "--gres=mig:" in told


@pytest.mark.parametrize("prefix", ["gres:", "gres/"])
def test_slurms_gpu_spellings_of_a_mig_profile_are_translated(lua_files, prefix):
    """--gres=gpu:1g.10gb:1 and --gpus-per-node=1g.10gb:1 reach the filter as a
    gpu: item of tres_per_node; a GPU type that is no MIG profile stays a GPU."""
    assert submit(lua_files, f"{prefix}gpu:1g.10gb:1") == \
        (0, f"{prefix}mig:1g.10gb:1,{prefix}shard:8", "")
    assert submit(lua_files, f"{prefix}gpu:3G.40GB:2")[:2] == (0, f"{prefix}mig:3g.40gb:2,{prefix}shard:50")
    assert submit(lua_files, f"{prefix}gpu:h100:1") == (0, f"{prefix}gpu:h100:1", "")
    rc, _, told = submit(lua_files, f"{prefix}gpu:1g.10gb:1,{prefix}gpu:1")
    assert rc == -1 and "do not combine mig: and gpu:" in told


@pytest.mark.parametrize("field", ["tres_per_job", "tres_per_task", "tres_per_socket"])
def test_per_job_and_per_task_mig_spellings_are_refused_naming_the_per_node_form(lua_files, field):
    rc, _, told = submit(lua_files, {field: "gres:gpu:1g.10gb:1"})
    assert rc == -1 and "--gres=mig:<profile>:<count>" in told


@pytest.mark.parametrize("extra", [{"cpus_per_tres": "gres:gpu:2"}, {"mem_per_tres": "gres/gpu:1024"},
                                   {"ntasks_per_tres": "2"}])
def test_per_gpu_options_with_mig_are_refused_saying_what_to_use(lua_files, extra):
    rc, _, told = submit(lua_files, {"tres_per_node": "gres:mig:1g.10gb:1", **extra})
    assert rc == -1 and "--cpus-per-task, --mem and --ntasks" in told
    assert submit(lua_files, {"tres_per_node": "gres:gpu:1", **extra})[0] == 0       # whole GPUs: Slurm's
    assert submit(lua_files, {"tres_per_node": "gres:mig:1g.10gb:1", "ntasks_per_tres": "65534"})[0] == 0


def test_a_pending_jobs_update_follows_the_same_rules_with_an_error_code_slurm_names(lua_files):
    assert submit(lua_files, {"tres_per_node": "gres:mig:7g.80gb:1", "modify": "1"}) == \
        (0, "gres:mig:7g.80gb:1,gres:shard:56", "")
    rc, _, told = submit(lua_files, {"tres_per_node": "gres:mig:bogus:1", "modify": "1"})
    assert rc == 2072 and "unknown MIG profile 'bogus'" in told     # ESLURM_INVALID_GRES
    assert submit(lua_files, {"comment": "x", "modify": "1"}) == (0, "nil", "")


def test_sbatch_admits_exactly_what_an_empty_gpu_holds_and_the_shards_admit(lua_files):
    """Every request of up to 8 instances of the H100's profiles: accepted
    iff the planner's exact search places it on an empty GPU and its shard
    units fit the GPU's Count; every accepted one is placeable."""
    units = shards.shard_units([H100])[H100.layout]
    names = [p.name for p in H100.profiles]
    requests = [dict((n, combo.count(n)) for n in set(combo))
                for r in range(1, 9) for combo in itertools.combinations_with_replacement(names, r)]
    got = submit_many(lua_files, [",".join(f"gres/mig:{n}:{c}" for n, c in sorted(r.items()))
                                  for r in requests])
    accepted = placeable = 0
    for request, (rc, _, told) in zip(requests, got):
        fits = planner.never_fits(H100, request) is None
        cost = sum(units.units[H100.find_profile(n).enum] * c for n, c in request.items())
        assert (rc == 0) == (fits and cost <= units.count), (request, told)
        accepted += rc == 0
        placeable += fits
    assert (len(requests), placeable, accepted) == (6434, 127, 78)


def test_placement_rules_refuse_what_slices_and_slots_allow(tmp_path):
    """A model whose 1-slice instances may start only in slots 0-3: five fit
    the slice and slot totals but not the placements."""
    raw = json.load(open(catalog.DATA_FILE))
    raw = copy.deepcopy(raw)
    raw["layouts"]["narrow"] = copy.deepcopy(raw["layouts"]["8-slot"])
    raw["layouts"]["narrow"]["gi_profiles"]["0"]["starts"] = [0, 1, 2, 3]
    del raw["layouts"]["narrow"]["shard_weights"]       # measured for the 8-slot placements only
    raw["models"] = {"NARROW-80GB": dict(raw["models"]["H100-SXM5-80GB"], layout="narrow",
                                         aliases=[], nvml_names=["narrow"], pci_device_ids=["0x0"])}
    model = catalog.Catalog.from_dict(raw).model("NARROW-80GB")
    files = lua_script(tmp_path, [confgen.GpuDesc(0, 0, model)])
    assert submit(files, "gres:mig:1g.10gb:4")[0] == 0
    assert submit(files, "gres:mig:1g.10gb:5")[2] == \
        "slurm-mig: 5 x 1g.10gb cannot be placed together on one NARROW-80GB (MIG placement rules)"


def test_one_script_serves_every_model_of_the_cluster(tmp_path):
    files = lua_script(tmp_path, confgen.from_spec("2xH100-80GB"),
                       cluster_models=[catalog.load().model("A30-24GB")])
    ok, too_many, h100 = submit_many(files, ["gres/mig:1g.6gb:4", "gres/mig:1g.6gb:5", "gres/mig:3g.40gb:2"])
    assert ok[0] == 0 and h100[0] == 0
    assert too_many[:1] == (-1,) and too_many[2] == "slurm-mig: at most 4 x 1g.6gb on one A30-24GB"


MIXED = ["H100-80GB", "A100-40GB", "A100-80GB", "H200"]


def test_one_script_for_mixed_models_admits_what_one_of_them_holds_at_its_own_units(tmp_path):
    """H100-80GB, A100-40GB, A100-80GB and H200 in one job_submit.lua: every
    request of up to 3 instances of their profiles is accepted iff some
    model offering all its profiles places it on an empty GPU within that
    model's shards, and the shard units it is given are that model's own
    (scaled) price on every model that can hold it: '1g.10gb' is one memory
    slot on an H100 and two on an A100-40GB, and costs each its own weight."""
    cat = catalog.load()
    models = [cat.model(k) for k in MIXED]
    gpus = [confgen.GpuDesc(i, i, m) for i, m in enumerate(models)]
    files = lua_script(tmp_path, gpus)
    gres = confgen.render([confgen.NodeGroup(None, gpus)], "dynamic", "/dev", "test", "test")["gres.conf"]
    layouts = shards.shard_units(models)
    counts = {m.key: int(re.search(rf"Name=gpu Type={confgen.gpu_type(m)} File=/dev/nvidia{i}\n"
                                   r"Name=shard Count=(\d+)", gres).group(1))
              for i, m in enumerate(models)}
    names = sorted({p.name for m in models for p in m.profiles})
    requests = [dict((n, combo.count(n)) for n in set(combo))
                for r in range(1, 4) for combo in itertools.combinations_with_replacement(names, r)]
    got = submit_many(files, [",".join(f"gres/mig:{n}:{c}" for n, c in sorted(r.items())) for r in requests])
    accepted = 0
    for request, (rc, new, told) in zip(requests, got):
        holders = []
        for m in models:
            if all(m.find_profile(n) for n in request) and planner.never_fits(m, request) is None:
                base = layouts[m.layout]
                cost = sum(base.units[m.find_profile(n).enum] * c for n, c in request.items())
                if cost <= base.count:
                    holders.append(cost * counts[m.key] // base.count)
        assert (rc == 0) == bool(holders), (request, told)
        if holders:
            assert {int(new.rsplit("shard:", 1)[1])} == set(holders), (request, new, holders)
            accepted += 1
    assert (len(requests), accepted) == (1770, 144)


def test_every_catalog_model_fits_one_script():
    """All ten models together: their shard units reconcile, so one file serves them."""
    models = list(catalog.load().models.values())
    gpus = [confgen.GpuDesc(i, i, m) for i, m in enumerate(models)]
    files = confgen.render([confgen.NodeGroup(None, gpus)], "dynamic", "/dev", "test", "test")
    assert all(f'key = "{m.key}"' in files["job_submit.lua"] for m in models)


def test_jobs_for_static_partitions_keep_their_request(tmp_path):
    """Static-mode nodes' partitions: Slurm allocates their instances as GRES,
    so their jobs pass as they are; a job naming both kinds is refused."""
    files = confgen.render([confgen.NodeGroup(None, confgen.from_spec("1xH100-80GB"))], "dynamic", "/dev",
                           "test", "test", static_partitions=("fixed", "fixed2"))
    (tmp_path / "job_submit.lua").write_text(files["job_submit.lua"])
    (tmp_path / "driver.lua").write_text(DRIVER)
    static, both_static, dynamic, default, mixed = submit_many(tmp_path, [
        {"tres_per_node": "gres/mig:3g.40gb:1", "partition": "fixed"},
        {"tres_per_node": "gres/mig:3g.40gb:9", "partition": "fixed2,fixed"},
        {"tres_per_node": "gres/mig:3g.40gb:1", "partition": "gpu", "script": "#!"},
        "gres/mig:3g.40gb:1",
        {"tres_per_node": "gres/mig:3g.40gb:1", "partition": "gpu,fixed"}])
    assert static == (0, "gres/mig:3g.40gb:1", "") and both_static == (0, "gres/mig:3g.40gb:9", "")
    assert dynamic == default == (0, "gres/mig:3g.40gb:1,gres/shard:25", "")
    assert mixed == (-1, "gres/mig:3g.40gb:1", "slurm-mig: partition(s) fixed run fixed MIG layouts "
                     "and gpu per-job MIG: ask for one kind only")
    update = ("slurm-mig: requeued 99/100: x", 0, 0, "gres/mig:3g.40gb:1")     # no recharge of their request
    assert recharge(tmp_path, [update], partition="fixed") == [("0", "nil")]
    assert recharge(tmp_path, [update], partition="gpu") == [("0", "gres/mig:3g.40gb:1,gres/shard:41")]


def test_interactive_jobs_are_charged_their_share_of_the_guarantee(lua_files):
    """No batch script (srun, salloc): the shards job_submit.lua adds are the
    product's interactive_units for the whole set (Config's default shares:
    a tenth of the way to the guarantee, the issue's 3g.40gb case 27 > the 26
    free next to two 2g.20gb, and the whole guarantee, 49, for a 4g.40gb,
    whose one start an instance can block for hours); a batch job and a
    modification are charged the weights."""
    from slurm_mig.config import Config
    from slurm_mig.core import guarantee
    units = shards.shard_units([H100])[H100.layout]
    geometry = units.geometry
    cfg = Config()
    for request in ({"3g.40gb": 1}, {"4g.40gb": 1}, {"2g.20gb": 1, "1g.10gb": 2}, {"7g.80gb": 1},
                    {"4g.40gb": 1, "1g.10gb": 1}):
        tres = ",".join(f"gres/mig:{n}:{c}" for n, c in sorted(request.items()))
        want = guarantee.interactive_units(geometry, units.result.weights, units.count,
                                           geometry.counts(request), cfg.interactive_charge,
                                           cfg.interactive_charge_one_start)
        rc, new, _ = submit(lua_files, {"tres_per_node": tres})
        assert rc == 0 and new == f"{tres},gres/shard:{want}", request
    assert submit(lua_files, {"tres_per_node": "gres/mig:3g.40gb:1"})[1].endswith("shard:27")
    assert submit(lua_files, {"tres_per_node": "gres/mig:4g.40gb:1"})[1].endswith("shard:49")
    assert submit(lua_files, "gres/mig:4g.40gb:1")[1].endswith("shard:29")


def test_gres_conf_writes_the_configured_interactive_charges(tmp_path):
    """Both settings reach job_submit.lua's table: a share of 0 charges a
    3g.40gb srun its batch units, 25, a one-start share of 0.6 a 4g.40gb 41
    (29 + 0.6 x 20); the defaults 27 and 49. The guarantees, 41 and 49, stay."""
    files = confgen.render([confgen.NodeGroup(None, confgen.from_spec("2xH100-80GB"))], "dynamic", "/dev",
                           "gres-conf", "test", interactive_charge=0, interactive_charge_one_start=0.6)
    lua = files["job_submit.lua"]
    assert '["3g.40gb:1"] = { 25, 41 },' in lua and '["4g.40gb:1"] = { 41, 49 },' in lua
    default = confgen.render([confgen.NodeGroup(None, confgen.from_spec("2xH100-80GB"))], "dynamic", "/dev",
                             "gres-conf", "test")["job_submit.lua"]
    assert '["3g.40gb:1"] = { 27, 41 },' in default and '["4g.40gb:1"] = { 49, 49 },' in default


def test_a_modification_is_charged_as_a_batch_job(lua_files):
    p = subprocess.run([LUA, "-e", 'slurm = { SUCCESS = 0, ERROR = -1, log_user = function() end }; '
                        f'dofile("{lua_files / "job_submit.lua"}"); '
                        'local d = { tres_per_node = "gres/mig:3g.40gb:1" }; '
                        'print(slurm_job_modify(d, {}, {}, 0), d.tres_per_node)'],
                       capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["0", "gres/mig:3g.40gb:1,gres/shard:25"], p.stderr


RECHARGE = """
slurm = { SUCCESS = 0, ERROR = -1, log_user = function() end }
dofile(arg[1])
for line in io.lines() do
    local mark, state, uid, partition, tres = string.match(line, "^(.-)\\t(%d+)\\t(%d+)\\t(.-)\\t(.*)$")
    local d = { admin_comment = mark ~= "" and mark or nil }
    local rc = slurm_job_modify(d, { job_state = tonumber(state), tres_per_node = tres, partition = partition },
                                {}, tonumber(uid))
    print(rc .. "\\t" .. tostring(d.tres_per_node))
end
"""


def recharge(lua_files, updates, partition="gpu"):
    """slurm_job_modify for each (mark root's update sets, job_state, uid,
    the pending job's tres_per_node) of a job in `partition`: (rc,
    tres_per_node it sets or 'nil')."""
    (lua_files / "recharge.lua").write_text(RECHARGE)
    p = subprocess.run([LUA, str(lua_files / "recharge.lua"), str(lua_files / "job_submit.lua")],
                       input="".join("\t".join(map(str, u[:3] + (partition,) + u[3:])) + "\n" for u in updates),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [tuple(line.split("\t")) for line in p.stdout.splitlines()]


def test_a_batch_job_sent_back_guarantee_after_times_is_charged_its_guarantee(lua_files):
    """From the guarantee_after-th requeue mark (Config's default) in root's
    update of a pending job, job_submit.lua recharges the job's own request
    its guarantee (core/guarantee.py, the oracle), keeping Slurm's prefix;
    nothing else: an earlier round, a user's update, a running job (Slurm
    would refuse the whole update), a text that is not slurm-mig's mark."""
    from slurm_mig.config import Config
    from slurm_mig.core import guarantee
    units = shards.shard_units([H100])[H100.layout]
    geometry = units.geometry
    after = Config().guarantee_after
    mark = "slurm-mig: requeued {}/100, kept off n1: does not fit"
    pending, completing, running = 0, 0x8000, 1
    cases = []                  # (tres_per_node of the pending job, what lua sets: 'nil' when no change)
    for request in ({"4g.40gb": 1}, {"3g.40gb": 1}, {"2g.20gb": 1, "1g.10gb": 2}, {"7g.80gb": 1}):
        counts = tuple(geometry.counts(request))
        own = sum(w * n for w, n in zip(units.result.weights, counts))
        want = guarantee.guarantee(geometry, tuple(units.result.weights), units.count, counts)
        for prefix in ("gres:", "gres/"):
            tres = ",".join(f"{prefix}mig:{n}:{c}" for n, c in sorted(request.items()))
            cases.append((f"{tres},{prefix}shard:{own}", f"{tres},{prefix}shard:{want}" if want > own else "nil"))
    got = recharge(lua_files, [(mark.format(after), pending, 0, stored) for stored, _ in cases])
    assert got == [("0", expected) for _, expected in cases]
    assert ("0", "gres:mig:4g.40gb:1,gres:shard:49") in got and ("0", "nil") in got    # 7g.80gb: its own units
    stored = "gres/mig:4g.40gb:1,gres/shard:29"
    assert recharge(lua_files, [
        (mark.format(after), completing, 0, stored),                # pending, still completing elsewhere
        (mark.format(after + 7), pending, 0, stored),
        (mark.format(after - 1), pending, 0, stored),
        (mark.format(after), pending, 1000, stored),                # not root
        (mark.format(after), running, 0, stored),
        ("site note: requeued 20/100", pending, 0, stored),
        ("", pending, 0, stored),
        (mark.format(after), pending, 0, "gres/gpu:h100:1"),        # not a MIG job
    ]) == [("0", "gres/mig:4g.40gb:1,gres/shard:49")] * 2 + [("0", "nil")] * 6


def test_guarantee_after_reaches_job_submit_lua_and_zero_turns_it_off(tmp_path):
    from slurm_mig.config import Config
    files = confgen.render([confgen.NodeGroup(None, confgen.from_spec("2xH100-80GB"))], "dynamic", "/dev",
                           "gres-conf", "test", guarantee_after=0)
    assert "local guarantee_after = 0\n" in files["job_submit.lua"]
    (tmp_path / "job_submit.lua").write_text(files["job_submit.lua"])
    assert recharge(tmp_path, [("slurm-mig: requeued 99/100: x", 0, 0, "gres/mig:4g.40gb:1,gres/shard:29")]) \
        == [("0", "nil")]
    default = confgen.render([confgen.NodeGroup(None, confgen.from_spec("2xH100-80GB"))], "dynamic", "/dev",
                             "gres-conf", "test")["job_submit.lua"]
    assert f"local guarantee_after = {Config().guarantee_after}\n" in default and '["4g.40gb:1"] = { 49, 49 },' in default
