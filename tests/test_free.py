"""The free-slice summary: what a node publishes, how it is read back, and
when it is sent at all (tests/test_free_e2e.py runs it on real Slurm)."""
import subprocess
import sys

import pytest

from harness import calls as hooks
from slurm_mig.core.roomtext import GpuRoom, NodeRoom, decode, encode
from slurm_mig.node.context import NodeContext
from slurm_mig.node.room import node_room
from slurm_mig.slurm import room

H100 = "H100-SXM5-80GB"


def test_a_summary_reads_back_and_anything_else_is_no_summary():
    text = encode(NodeRoom(1765100000, [GpuRoom(0, H100, {"1g.10gb": 7, "7g.80gb": 0, "1g.24gb+me.all": 1}),
                                        GpuRoom(1, H100, {})]))
    assert text == f"slurm-mig:1;t=1765100000;0={H100}:1g.10gb*7,1g.24gb+me.all*1;1={H100}:-"
    assert decode(text) == NodeRoom(1765100000, [GpuRoom(0, H100, {"1g.10gb": 7, "1g.24gb+me.all": 1}),
                                                 GpuRoom(1, H100, {})])
    for other in ("", "(null)", "rack=12", text.replace("*7", "*x"), text.replace("*7", "*0"),
                  text.replace("1g.10gb", "1g.10gb;rm -rf"), text.replace("1g.10gb", "$(id)"),
                  text.replace(H100, "H100 80GB"), text + ";2=:-", "slurm-mig:2;t=1"):
        assert decode(other) is None, other


def test_room_is_what_placement_and_shard_units_both_allow(make_node):
    cfg, _ = make_node("2xH100-80GB")
    hooks.run_prolog(cfg, "7", "mig:3g.40gb:1", gpu=0, uid=1000)
    gpu0, gpu1 = node_room(NodeContext(cfg)).gpus
    # the 3g.40gb leaves four 1g.10gb places, but 56 - 25 shard units pay for three
    assert gpu0.can_start == {"1g.10gb": 3, "1g.10gb+me": 1, "1g.20gb": 2, "2g.20gb": 2, "3g.40gb": 1,
                              "4g.40gb": 1, "7g.80gb": 0}
    assert gpu1.can_start["7g.80gb"] == 1 and gpu1.can_start["1g.10gb"] == 7
    hooks.run_prolog(cfg, "8", whole_gpus=[1], uid=1000)
    assert node_room(NodeContext(cfg)).gpus[1].can_start == {}          # handed out whole


@pytest.fixture
def scontrol(tmp_path):
    """A Slurm bin dir whose scontrol logs its arguments; (dir, calls())."""
    log = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (bin_dir / "scontrol").chmod(0o755)
    return str(bin_dir), lambda: log.read_text().splitlines() if log.exists() else []


def test_published_only_when_it_changed_unless_forced(make_node, scontrol):
    bin_dir, calls = scontrol
    cfg, _ = make_node("1xH100-80GB", slurm_bin_dir=bin_dir)
    assert room.publish(cfg, "n1").startswith("published")
    assert room.publish(cfg, "n1") == "unchanged"
    hooks.run_prolog(cfg, "7", "mig:7g.80gb:1", gpu=0, uid=1000)
    room.publish(cfg, "n1")
    assert room.publish(cfg, "n1", force=True).startswith("published")
    first, changed, forced = calls()
    assert first.startswith(f"update NodeName=n1 Extra=slurm-mig:1;t=") and first.endswith(f"0={H100}:"
                                                                                            "1g.10gb*7,1g.10gb+me*1,1g.20gb*4,2g.20gb*3,3g.40gb*2,4g.40gb*1,7g.80gb*1")
    assert changed.endswith(f"0={H100}:-") and forced.endswith(f"0={H100}:-")
    assert room.publish(cfg._replace(room_field=""), "n1").startswith("not published")
    comment = cfg._replace(room_field="comment", state_dir=cfg.state_dir + "2")
    room.publish(comment, "n1")
    assert calls()[-1].startswith("update NodeName=n1 Comment=slurm-mig:1;")


def test_of_a_burst_one_publisher_waits_and_the_others_leave(make_node, scontrol):
    import fcntl
    import os
    import threading
    bin_dir, calls = scontrol
    cfg, _ = make_node("1xH100-80GB", slurm_bin_dir=bin_dir)
    hooks.run_prolog(cfg, "7", "mig:7g.80gb:1", gpu=0, uid=1000)
    waiting = os.open(f"{cfg.state_dir}/room.queue.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(waiting, fcntl.LOCK_EX)                        # one is waiting already...
    release = threading.Timer(3, os.close, [waiting])          # ...for 3 s at most
    release.start()
    assert room.publish(cfg, "n1") == "left to the publisher already waiting"
    release.cancel()
    os.close(waiting)
    assert len(calls()) == 0
    assert room.publish(cfg, "n1").startswith("published") and len(calls()) == 1


def test_a_node_sends_at_most_one_summary_per_interval(make_node, scontrol, monkeypatch):
    """What the controller pays is bounded per node, not per job: a change
    soon after the last summary is sent once the interval is out."""
    bin_dir, calls = scontrol
    cfg, _ = make_node("1xH100-80GB", slurm_bin_dir=bin_dir, room_interval=30)
    slept = []
    monkeypatch.setattr(room.time, "sleep", slept.append)
    assert room.publish(cfg, "n1").startswith("published") and slept == []    # the first: at once
    hooks.run_prolog(cfg, "7", "mig:7g.80gb:1", gpu=0, uid=1000)
    assert room.publish(cfg, "n1").startswith("published")
    # it waited out the rest of the interval (less what the Prolog took: seconds on a loaded machine)
    assert len(slept) == 1 and 0 < slept[0] <= 30 and len(calls()) == 2
    room.publish(cfg, "n1", force=True)                                       # the timer's resend
    assert len(slept) == 1 and len(calls()) == 3


def test_sinfo_lines_one_per_node_whatever_its_partitions():
    summary = f"slurm-mig:1;t=5;0={H100}:3g.40gb*1"
    text = (f"n1|mixed|gpu:h100:1,shard:h100:56,mig:3g.40gb:2|{summary}|\n"
            f"n1|mixed|gpu:h100:1,shard:h100:56,mig:3g.40gb:2|{summary}|\n"
            "n2|drained|gpu:h100:1,mig:3g.40gb:2|(null)|\n"
            "cpu1|idle|(null)|rack=3|\n")
    cpu1, n1, n2 = room.parse_sinfo(text)                     # by name
    assert n1.usable and n1.room.gpus == [GpuRoom(0, H100, {"3g.40gb": 1})] and room.age(n1.room, 65) == 60
    assert not n2.usable and n2.mig and n2.room is None
    assert not cpu1.mig and cpu1.room is None


def test_the_hooks_leave_a_publisher_only_for_gpu_jobs(make_node, monkeypatch, tmp_path):
    from slurm_mig.hooks import detached, main
    left = []
    monkeypatch.setattr(detached, "spawn_detached", lambda verb, job, env=None: left.append((verb, job)))
    cfg, _ = make_node("1xH100-80GB")
    conf = tmp_path / "c.toml"
    conf.write_text(f'backend = "{cfg.backend}"\nstate_dir = "{cfg.state_dir}"\nrun_dir = "{cfg.run_dir}"\n')
    monkeypatch.setenv("SLURM_MIG_CONFIG", str(conf))
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    assert main.main(["epilog"]) == 0 and left == []                   # a CPU-only job
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    monkeypatch.setenv("SLURM_MIG_REQUEST", "mig:1g.10gb:1")
    assert main.main(["prolog"]) == 0 and main.main(["epilog"]) == 0
    assert left == [("publish", "9"), ("publish", "9")]
    conf.write_text(conf.read_text() + 'room_field = ""\n')
    assert main.main(["epilog"]) == 0 and len(left) == 2


def test_a_profile_asked_for_by_alias_or_unknown(cli):
    from slurm_mig.cli.free import _canonical
    assert _canonical("3g.39gb") == "3g.40gb" and _canonical("1G.10GB") == "1g.10gb"
    p = cli("free", "--profile", "3g.45gb", check=2)
    assert "unknown MIG profile '3g.45gb'; valid profiles: 1g.10gb," in p.stderr


def test_the_publish_verb_sends_this_nodes_room(make_node, scontrol, monkeypatch, tmp_path):
    from slurm_mig.hooks import main
    bin_dir, calls = scontrol
    cfg, _ = make_node("1xH100-80GB")
    conf = tmp_path / "c.toml"
    conf.write_text(f'backend = "{cfg.backend}"\nstate_dir = "{cfg.state_dir}"\nslurm_bin_dir = "{bin_dir}"\n')
    monkeypatch.setenv("SLURM_MIG_CONFIG", str(conf))
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu07")
    assert main.main(["publish"]) == 0
    assert calls()[0].startswith("update NodeName=gpu07 Extra=slurm-mig:1;")


@pytest.fixture
def shared_dir():
    """A folder another user may read (pytest's own tmp is root's alone)."""
    import os
    import shutil
    import tempfile
    where = tempfile.mkdtemp(prefix="free-")
    os.chmod(where, 0o755)
    yield where
    shutil.rmtree(where)


def test_any_user_reads_the_view_even_when_the_config_is_roots_alone(shared_dir):
    import json
    import os
    import stat
    where = shared_dir
    summary = f"slurm-mig:1;t=5;0={H100}:7g.80gb*1"
    sinfo = os.path.join(where, "sinfo")
    with open(sinfo, "w") as f:
        f.write("#!/bin/sh\nprintf '%s\\n' "
                f"'n1|mixed|gpu:h100:1,shard:h100:56,mig:7g.80gb:1|{summary}|' "
                "'n2|idle|gpu:h100:1,shard:h100:56,mig:7g.80gb:1|(null)|'\n")
    os.chmod(sinfo, 0o755)
    conf = os.path.join(where, "config.toml")
    with open(conf, "w") as f:
        f.write(f'slurm_bin_dir = "{where}"\n')
    os.chmod(conf, stat.S_IRUSR | stat.S_IWUSR)               # root's alone, as a site may keep it
    user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]

    def free(*args, as_user=True):
        env = {**os.environ, "SLURM_MIG_CONFIG": conf, "PATH": f"{where}:{os.environ['PATH']}"}
        p = subprocess.run((user if as_user else []) + [sys.executable, "-m", "slurm_mig", "free", "--json", *args],
                           capture_output=True, text=True, env=env, timeout=60, cwd="/")
        assert p.returncode == 0, p.stderr
        return p.stderr, {(r["node"], r["gpu"]) for r in json.loads(p.stdout)["gpus"]}
    err, rows = free()
    assert f"{conf} is not readable by you: using the defaults" in err and rows == {("n1", 0), ("n2", None)}
    assert free(as_user=False) == ("", rows)                  # root reads the config: no notice
    # Only GPUs where the profile can start: a node that published nothing is not one of them.
    assert free("--profile", "7g.80gb")[1] == {("n1", 0)}
