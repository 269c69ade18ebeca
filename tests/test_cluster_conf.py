"""One cluster description -> every generated file (`slurm-mig gres-conf
--cluster FILE`): node groups as hostlists, Features= per model, one
job_submit.lua for mixed models, the accounting lines; and the scaling that
lets one shard price serve every model sharing a profile name."""
import re

import pytest

from slurm_mig.core import shards
from slurm_mig.errors import BadInput
from slurm_mig.slurm import clusterdesc

MIXED = """
[[group]]
nodes = "h100-[01-20]"
gpus = "8xH100-80GB"

[[group]]
nodes = "a100s-[01-10],a100s-x"
gpus = "8xA100-40GB"

[[group]]
nodes = "a100l-[01-10]"
gpus = "4xA100-80GB"

[[group]]
nodes = "h200-[01-04]"
gpus = "8xH200"
features = ["ib", "h200"]
"""


def test_scales_make_shared_names_cost_alike():
    assert shards.common_scales({"A": {"x": 13, "y": 8}, "B": {"x": 8}, "C": {"z": 5}}) == \
        {"A": 8, "B": 13, "C": 1}
    assert shards.common_scales({"A": {"x": 2}, "B": {"x": 4, "y": 6}}) == {"A": 2, "B": 1}


def test_scales_refuse_names_no_factor_reconciles():
    with pytest.raises(ValueError, match="profile y costs 3 shards on A and 1 on B"):
        shards.common_scales({"A": {"x": 2, "y": 3}, "B": {"x": 1, "y": 1}})


@pytest.fixture
def generated(tmp_path, cli):
    (tmp_path / "cluster.toml").write_text(MIXED + '\n[accounting]\nweights = { "7g.80gb" = 10 }\n')
    cli("gres-conf", "--cluster", str(tmp_path / "cluster.toml"), "--output", str(tmp_path / "gen"), check=0)
    return {p.name: p.read_text() for p in (tmp_path / "gen").iterdir()}


def test_one_gres_conf_with_hostlist_records_for_every_group(generated):
    gres = generated["gres.conf"]
    assert "NodeName=h100-[01-20] Name=shard Count=728 File=/dev/nvidia7\n" in gres
    assert "NodeName=a100s-[01-10],a100s-x Name=shard Count=448 File=/dev/nvidia0\n" in gres
    assert "NodeName=a100l-[01-10] Name=gpu Type=a100_80gb File=/dev/nvidia3\n" in gres
    assert "NodeName=a100l-[01-10] Name=gpu Type=a100_80gb File=/dev/nvidia4\n" not in gres
    assert "NodeName=h200-[01-04] Name=mig Type=1g.18gb Count=56 Flags=CountOnly\n" in gres
    assert all(line.startswith(("#", "NodeName=")) for line in gres.splitlines())
    assert "# Shard units priced for the GPU models A100-40GB, A100-80GB, H100-SXM5-80GB, H200-141GB:" in gres


def test_node_lines_carry_gres_and_features_per_group(generated):
    lines = {m.group(1): (m.group(2), m.group(3)) for m in
             re.finditer(r"^NodeName=(\S+) Gres=(\S+) Features=(\S+)$", generated["slurm.conf.node"], re.M)}
    assert lines["h100-[01-20]"][1] == "h100_sxm5_80gb,h100_80gb,h100,hopper"
    assert lines["a100s-[01-10],a100s-x"][1] == "a100_40gb,a100,ampere"
    assert lines["h200-[01-04]"][1] == "h200_141gb,h200,hopper,ib"
    assert "gpu:a100_80gb:4,shard:2912,mig:1g.10gb:28," in lines["a100l-[01-10]"][0]
    assert "GresTypes=gpu,shard,mig\n" in generated["slurm.conf.node"]


def test_accounting_lines_track_each_profile_and_bill_slices(generated):
    text = generated["slurm.conf.accounting"]
    tres = re.search(r"^AccountingStorageTRES=(\S+)$", text, re.M).group(1).split(",")
    assert {"gres/mig:1g.5gb", "gres/mig:3g.40gb", "gres/mig:7g.141gb", "gres/gpu:a100_40gb"} <= set(tres)
    weights = dict(w.split("=") for w in re.search(r"^TRESBillingWeights=(\S+)$", text, re.M).group(1).split(","))
    assert (weights["CPU"], weights["GRES/mig:1g.10gb"], weights["GRES/mig:3g.71gb"]) == ("1", "1", "3")
    assert (weights["GRES/mig:7g.80gb"], weights["GRES/mig:7g.40gb"], weights["GRES/gpu:h200_141gb"]) == \
        ("10", "7", "7")
    assert "gres/shard" not in tres


def test_one_job_submit_lua_prices_each_model(generated):
    lua = generated["job_submit.lua"]
    assert '["1g.10gb"] = { "1g.10gb", 104 },' in lua       # 8 x 13 (H100) = 13 x 8 (A100-40GB)
    assert re.search(r'key = "A100-40GB", slices = 7, slots = 8, shards = 448', lua)


@pytest.mark.parametrize("text, error", [
    ("", "no [[group]] of nodes"),
    ('[[group]]\nnodes = "a[1-2]"\ngpus = "1xH100"\ncolour = "red"\n', "unknown key(s) colour"),
    ('[[group]]\nnodes = "a[1-2]"\ngpus = "1xH100"\n[[group]]\nnodes = "a2"\ngpus = "1xA30"\n',
     "group 2: node a2 is in group 1 too"),
    ('[[group]]\nnodes = "a[1-2] b"\ngpus = "1xH100"\n', "is no Slurm hostlist"),
    ('[[group]]\nnodes = "a[2-1"\ngpus = "1xH100"\n', "cannot read Slurm's node list"),
    ('[[group]]\nnodes = "a1"\ngpus = "1xV100"\n', "unknown GPU model 'V100'"),
    ('[[group]]\nnodes = "a1"\ngpus = "1xH100"\nmode = "static"\n', "run `slurm-mig gres-conf --mode static`"),
    ('[[group]]\nnodes = "a1"\n', "`gpus` is missing, e.g. gpus = \"8xH100-80GB\""),
    ('[[group]]\nnodes = "a1"\ngpus = 8\n', "`gpus` must be a string"),
    ('[[group]]\nnodes = "a1"\ngpus = "1xH100"\nfeatures = ["a b"]\n', "`features` must be a list of names"),
    ('[[group]]\nnodes = "a1"\ngpus = "1xH100"\n[accounting]\nweights = { "1g.10gb" = -1 }\n',
     "weight of 1g.10gb must be a number >= 0"),
    ('[[group]]\nnodes = "a1"\ngpus = "1xH100"\n[accounting]\nalso = "CPU=1;rm"\n', "`also` must be"),
    ("[[group]\n", "is not valid TOML"),
    ('static_partitions = "fixed"\n[[group]]\nnodes = "a1"\ngpus = "1xH100"\n', "must be a list of partition"),
])
def test_a_bad_description_is_refused_naming_file_and_group(tmp_path, text, error):
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    with pytest.raises(BadInput) as e:
        clusterdesc.load(str(path))
    assert str(path) in str(e.value) and error in str(e.value), str(e.value)


def test_static_partitions_reach_job_submit_lua(tmp_path, cli):
    (tmp_path / "c.toml").write_text('static_partitions = ["fixed", "old-a100"]\n' + MIXED)
    p = cli("gres-conf", "--cluster", str(tmp_path / "c.toml"), check=0)
    assert '    ["fixed"] = true,\n    ["old-a100"] = true,\n' in p.stdout


def test_weights_of_profiles_the_cluster_lacks_are_refused(tmp_path, cli):
    (tmp_path / "c.toml").write_text('[[group]]\nnodes = "a1"\ngpus = "1xH100"\n'
                                     '[accounting]\nweights = { "1g.5gb" = 1 }\n')
    p = cli("gres-conf", "--cluster", str(tmp_path / "c.toml"), check=2)
    assert "billing weights for unknown profile(s) 1g.5gb" in p.stderr


def test_cluster_excludes_per_node_options(tmp_path, cli):
    (tmp_path / "c.toml").write_text(MIXED)
    p = cli("gres-conf", "--cluster", str(tmp_path / "c.toml"), "--node-name", "x", "--from-spec", "1xA30",
            check=2)
    assert "drop --node-name, --from-spec" in p.stderr
    p = cli("gres-conf", "--cluster", str(tmp_path / "c.toml"), "--cluster-models", "A30", check=0)
    assert 'key = "A30-24GB"' in p.stdout and "gres/mig:1g.6gb," in p.stdout      # e.g. static nodes' models
