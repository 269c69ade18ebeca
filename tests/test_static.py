"""Static mode on the node: Slurm's IDX numbers -> instances listed in gres.conf,
read as Slurm reads it."""
import os
import re

import pytest

from harness import calls as hooks
from slurm_mig.core.syntax import parse_idx
from slurm_mig.hooks import static
from slurm_mig.node.context import NodeContext
from slurm_mig.node.jobfiles import task_prolog
from slurm_mig.errors import BadInput, NodeProblem
from slurm_mig.node.ledger import Ledger
from slurm_mig.slurm.gresconf import node_records

LAYOUTS = os.path.join(os.path.dirname(__file__), "data", "mig-parted-h100.yaml")


@pytest.fixture
def static_node(make_node, cli, tmp_path):
    cfg, state = make_node("2xH100-80GB")
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir}
    cli("apply", "-f", LAYOUTS, "-c", "custom-config", env=env, check=0)
    cli("gres-conf", "--mode", "static", "--output", str(tmp_path / "etc"),   # no --proc-root:
        "--node-name", "n1", env=env, check=0)                                # the sim node's own
    cfg = cfg._replace(mode="static", gres_conf=str(tmp_path / "etc" / "gres.conf"))
    return cfg, state


def test_idx_table_follows_gres_conf_order(static_node):
    cfg, _ = static_node
    table = static.idx_table(cfg.gres_conf, cfg.proc_root, "n1")
    assert [t[0] for t in table] == ["4g.40gb", "3g.40gb"] + ["1g.10gb"] * 7
    assert table[1][1:] == (0, 2, 0)        # GPU minor 0, GI 2 (3g at 4:4), CI 0


def test_static_prolog_binds_by_idx_and_epilog_keeps_instances(static_node):
    cfg, state = static_node
    node = NodeContext(cfg)
    static.prolog(node, "21", [1], None, "n1")
    text, code = task_prolog(cfg.run_dir, "21")
    live = {i.uuid: i for g in node.devices.driver.gpus() for i in g.instances}
    (uuid,) = text.strip().split("=", 1)[1].split(",")
    assert code == 0 and live[uuid].profile == "3g.40gb" and live[uuid].start == 4
    hooks.epilog(cfg, "21")
    assert len({i.uuid for g in node.devices.driver.gpus() for i in g.instances}) == 9
    assert Ledger(cfg.state_dir).get("21").state == "released"


def test_static_refuses_bad_or_taken_idx(static_node, cli):
    cfg, state = static_node
    node = NodeContext(cfg)
    static.prolog(node, "1", [2, 3], None, "n1")
    static.prolog(node, "2", [3], None, "n1")                   # Slurm would not do this; we check
    assert "in use by job 1" in task_prolog(cfg.run_dir, "2")[0]
    static.prolog(node, "3", [99], None, "n1")
    assert "lists 9 instances for node n1" in task_prolog(cfg.run_dir, "3")[0]
    static.prolog(node, "5", [0], None, "vm")                   # a host name gres.conf does not know
    assert "lists 0 instances for node vm" in task_prolog(cfg.run_dir, "5")[0]
    busy = next(i.uuid for g in node.devices.driver.gpus() for i in g.instances if i.profile == "4g.40gb")
    cli("sim", "busy", state, "--uuid", busy, check=0)
    static.prolog(node, "4", [0], None, "n1")
    assert "in use by pids" in task_prolog(cfg.run_dir, "4")[0]


def test_parse_idx():
    assert parse_idx("0-2,5") == [0, 1, 2, 5]
    for bad in ("a", "3-1", "0-99999"):
        with pytest.raises(BadInput):
            parse_idx(bad)


def test_gres_conf_is_read_as_slurm_reads_it(tmp_path):
    """Comments anywhere (also indented, also after a record), keys in any
    case, continued lines, only this node's NodeName= records (hostlists), the
    lines without NodeName first, then counted type by type."""
    path = tmp_path / "gres.conf"
    path.write_text("""\
    # Name=mig Type=3g.40gb MultipleFiles=/dev/c0   (an indented comment: no record)
NodeName=n[1-3] Name=mig Type=1g.10gb MultipleFiles=/dev/a   # for n1, n2 and n3
NodeName=other Name=mig Type=1g.10gb MultipleFiles=/dev/x
nodename=n2 name=MIG type=3g.40gb \\
    multiplefiles=/dev/b
\tNODENAME=n[2,4] NAME=mig TYPE=1g.10gb MULTIPLEFILES=/dev/c#comment
Name=mig Type=3g.40gb MultipleFiles=/dev/d    # no NodeName: every node, counted first
Name=shard Count=8 File=/dev/nvidia0
NodeName=n2 Name=mig Type=2g.20gb MultipleFiles="/dev/e"
""")
    files = [r["multiplefiles"] for r in node_records(str(path), "n2", "mig")]
    assert files == ["/dev/d", "/dev/b", "/dev/a", "/dev/c", "/dev/e"]
    assert [r["multiplefiles"] for r in node_records(str(path), "n1", "mig")] == ["/dev/d", "/dev/a"]


@pytest.mark.parametrize("line,needle", [
    ("Name=mig NodeName=n2 Type=1g.10gb", "NodeName= must come first"),
    ("  include /etc/slurm/more.conf", "include is not supported"),
    ("Name=mig Type", "cannot parse 'Type'"),
])
def test_gres_conf_lines_slurm_refuses_are_node_problems(tmp_path, line, needle):
    (tmp_path / "gres.conf").write_text(line + "\n")
    with pytest.raises(NodeProblem, match=needle):
        node_records(str(tmp_path / "gres.conf"), "n2", "mig")


def test_comments_and_other_nodes_records_shift_no_idx(static_node):
    """An indented '# Name=mig ...' line used to count as a record and shift
    every IDX after it; so would another node's records in a cluster-wide file."""
    cfg, _ = static_node
    before = static.idx_table(cfg.gres_conf, cfg.proc_root, "n1")
    with open(cfg.gres_conf) as f:
        text = f.read()
    record = re.search(r"^NodeName=n1 (Name=mig .*)$", text, re.M).group(1)
    with open(cfg.gres_conf, "w") as f:
        f.write(f"  # {record}\nNodeName=n[2-3] {record}\n" + text.replace("\n", "  # a note\n", 3))
    assert static.idx_table(cfg.gres_conf, cfg.proc_root, "n1") == before


def test_idx_is_counted_type_by_type(make_node, cli, tmp_path):
    """Slurm numbers a node's mig records type by type in the order of its
    Gres= (tried on 22.05 and 24.11: with 1g,1g,2g,3g on each of two GPUs a
    2g.20gb job got IDX 4). gres.conf lists them in that order, and an IDX
    whose type is not the one Slurm allocated fails the job, never binds."""
    cfg, state = make_node("2xH100-80GB")
    env = {"SLURM_MIG_BACKEND": cfg.backend, "SLURM_MIG_STATE_DIR": cfg.state_dir}
    cli("apply", "-f", LAYOUTS, "-c", "all-balanced", env=env, check=0)
    cli("gres-conf", "--mode", "static", "--output", str(tmp_path / "etc"), "--node-name", "n1",
        env=env, check=0)
    cfg = cfg._replace(mode="static", gres_conf=str(tmp_path / "etc" / "gres.conf"))
    table = static.idx_table(cfg.gres_conf, cfg.proc_root, "n1")
    assert [t[0] for t in table] == ["1g.10gb"] * 4 + ["2g.20gb"] * 2 + ["3g.40gb"] * 2
    assert [t[1] for t in table] == [0, 0, 1, 1, 0, 1, 0, 1]
    gres = (tmp_path / "etc" / "slurm.conf.node").read_text()
    assert "Gres=mig:1g.10gb:4,mig:2g.20gb:2,mig:3g.40gb:2" in gres
    commented = re.findall(r"^# IDX (\d+): GPU (\d+) .*\n.* Type=(\S+) ", open(cfg.gres_conf).read(), re.M)
    assert commented == [(str(i), str(t[1]), t[0]) for i, t in enumerate(table)]   # the file says it too
    node = NodeContext(cfg)
    static.prolog(node, "5", [4], None, "n1", {4: "2g.20gb"})
    live = {i.uuid: i for g in node.devices.driver.gpus() for i in g.instances}
    (uuid,) = task_prolog(cfg.run_dir, "5")[0].strip().split("=", 1)[1].split(",")
    assert live[uuid].profile == "2g.20gb"
    static.prolog(node, "6", [0], None, "n1", {0: "3g.40gb"})
    assert "Slurm allocated IDX 0 as mig:3g.40gb" in task_prolog(cfg.run_dir, "6")[0]
