"""Static mode on the node: Slurm's IDX numbers -> instances listed in gres.conf."""
import os

import pytest

from harness import calls as hooks
from slurm_mig.core.syntax import parse_idx
from slurm_mig.hooks import static
from slurm_mig.node.context import NodeContext
from slurm_mig.node.jobfiles import task_prolog
from slurm_mig.errors import BadInput
from slurm_mig.node.ledger import Ledger

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
    table = static.idx_table(cfg.gres_conf, cfg.proc_root)
    assert [t[0] for t in table] == ["4g.40gb", "3g.40gb"] + ["1g.10gb"] * 7
    assert table[1][1:] == (0, 2, 0)        # GPU minor 0, GI 2 (3g at 4:4), CI 0


def test_static_prolog_binds_by_idx_and_epilog_keeps_instances(static_node):
    cfg, state = static_node
    node = NodeContext(cfg)
    static.prolog(node, "21", [1], uid=None)
    text, code = task_prolog(cfg.run_dir, "21")
    live = {i.uuid: i for g in node.driver.gpus() for i in g.instances}
    (uuid,) = text.strip().split("=", 1)[1].split(",")
    assert code == 0 and live[uuid].profile == "3g.40gb" and live[uuid].start == 4
    hooks.epilog(cfg, "21")
    assert len({i.uuid for g in node.driver.gpus() for i in g.instances}) == 9
    assert Ledger(cfg.state_dir).get("21").state == "released"


def test_static_refuses_bad_or_taken_idx(static_node, cli):
    cfg, state = static_node
    node = NodeContext(cfg)
    static.prolog(node, "1", [2, 3], uid=None)
    static.prolog(node, "2", [3], uid=None)                    # Slurm would not do this; we check
    assert "in use by job 1" in task_prolog(cfg.run_dir, "2")[0]
    static.prolog(node, "3", [99], uid=None)
    assert "lists 9 instances" in task_prolog(cfg.run_dir, "3")[0]
    busy = next(i.uuid for g in node.driver.gpus() for i in g.instances if i.profile == "4g.40gb")
    cli("sim", "busy", state, "--uuid", busy, check=0)
    static.prolog(node, "4", [0], uid=None)
    assert "in use by pids" in task_prolog(cfg.run_dir, "4")[0]


def test_parse_idx():
    assert parse_idx("0-2,5") == [0, 1, 2, 5]
    for bad in ("a", "3-1", "0-99999"):
        with pytest.raises(BadInput):
            parse_idx(bad)
