"""dcgm-exporter job mapping files: written by the Prolog, deleted by the Epilog."""
import os

import pytest

from harness import calls as hooks
from slurm_mig import config
from slurm_mig.errors import BadInput
from slurm_mig.node import dcgm
from slurm_mig.node.ledger import Ledger
from slurm_mig.sim import SimStore


def files(directory):
    return {n: open(os.path.join(directory, n)).read() for n in sorted(os.listdir(directory))}


def test_mig_instances_are_labelled_while_the_job_runs(make_node, tmp_path):
    mapping = str(tmp_path / "dcgm")
    cfg, state = make_node("2xH100-80GB", dcgm_job_mapping_dir=mapping)
    hooks.prolog(cfg, "11", "mig:3g.40gb:1,mig:1g.10gb:1", gpu=1)
    hooks.prolog(cfg, "12", "mig:2g.20gb:1", gpu=0)
    gis = {(g, gi["id"]) for g, gpu in enumerate(SimStore(state).read()["gpus"]) for gi in gpu["gis"]}
    rec11 = Ledger(cfg.state_dir).get("11")
    want = {f"{h.gpu}.{h.gi_id}": "11\n" for h in rec11.instances}
    want.update({f"{h.gpu}.{h.gi_id}": "12\n" for h in Ledger(cfg.state_dir).get("12").instances})
    assert files(mapping) == want and len(want) == 3
    assert {tuple(map(int, n.split("."))) for n in want} == gis
    assert oct(os.stat(os.path.join(mapping, next(iter(want)))).st_mode & 0o777) == "0o644"
    hooks.prolog(cfg, "11", "mig:3g.40gb:1,mig:1g.10gb:1", gpu=1)      # re-run: same files
    assert files(mapping) == want
    with open(os.path.join(mapping, "7"), "w") as f:                     # not ours: left alone
        f.write("999\n")
    hooks.epilog(cfg, "11")
    assert files(mapping) == {**{n: v for n, v in want.items() if v == "12\n"}, "7": "999\n"}
    hooks.epilog(cfg, "12")
    assert files(mapping) == {"7": "999\n"}                               # deleted, not emptied


def test_whole_gpu_is_labelled_by_gpu_index(make_node, tmp_path):
    mapping = str(tmp_path / "dcgm")
    cfg, _ = make_node("2xH100-80GB", dcgm_job_mapping_dir=mapping)
    hooks.run_prolog(cfg, "30", whole_gpus=[1])
    assert files(mapping) == {"1": "30\n"}
    hooks.epilog(cfg, "30")
    assert files(mapping) == {}


def test_reconcile_of_a_job_gone_without_epilog_removes_its_labels(make_node, tmp_path):
    mapping = str(tmp_path / "dcgm")
    cfg, _ = make_node("1xH100-80GB", dcgm_job_mapping_dir=mapping)
    hooks.prolog(cfg, "40", "mig:1g.10gb:1")
    assert list(files(mapping).values()) == ["40\n"]
    hooks.reconcile(cfg, active_jobs=set())
    assert files(mapping) == {}


def test_unsafe_directory_is_refused_and_the_job_still_runs(make_node, tmp_path, capsys):
    real = tmp_path / "elsewhere"
    real.mkdir()
    link = tmp_path / "dcgm"
    os.symlink(real, link)
    cfg, _ = make_node("1xH100-80GB", dcgm_job_mapping_dir=str(link))
    hooks.prolog(cfg, "50", "mig:1g.10gb:1")
    assert Ledger(cfg.state_dir).get("50").state == "bound"
    assert os.listdir(real) == [] and "is a symbolic link" in capsys.readouterr().err
    os.unlink(link)
    os.mkdir(link, 0o777)
    os.chmod(link, 0o777)
    hooks.prolog(cfg, "51", "mig:1g.10gb:1")
    assert os.listdir(link) == []


def test_a_mapping_file_that_cannot_be_written_does_not_fail_the_job(make_node, tmp_path, capsys):
    mapping = tmp_path / "dcgm"
    mapping.mkdir(mode=0o755)
    for gi in range(32):               # every name the job's instance could get is a directory
        (mapping / f"0.{gi}").mkdir()
    cfg, _ = make_node("1xH100-80GB", dcgm_job_mapping_dir=str(mapping))
    hooks.prolog(cfg, "52", "mig:1g.10gb:1")
    assert Ledger(cfg.state_dir).get("52").state == "bound"
    assert "DCGM job mapping not written" in capsys.readouterr().err


def test_config_key():
    assert config.Config().dcgm_job_mapping_dir == ""
    with pytest.raises(BadInput, match="absolute path"):
        config.load(os.devnull, dcgm_job_mapping_dir="relative/dir")
    with pytest.raises(ValueError):
        dcgm.write("/tmp", "1", ["../etc/passwd"])
