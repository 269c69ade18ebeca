"""Steering a requeued job (slurm/requeue.py): which nodes it is kept off,
when they are given back, and what is never touched."""
import os
import pytest
from hypothesis import given, strategies as st

from slurm_mig.slurm.jobinfo import NodeConstraints
from slurm_mig.errors import BadInput
from slurm_mig.slurm.requeue import Steering, folded, kept_off_before, steer, steer_request, steer_when_pending

GPU_NODES = ["n1", "n2", "n3", "n4"]


def constraints(nodes=("n1",), excluded=(), mark="", **fields):
    return NodeConstraints(list(nodes), "gpu", list(excluded), admin_comment=mark, **fields)


def mark(kept):
    return f"slurm-mig: requeued 1/30, kept off {folded(kept)}: 7g.80gb:1 does not fit"


def test_the_first_requeue_keeps_the_job_off_its_node_and_lets_it_start_soon():
    assert steer(constraints(), GPU_NODES) == Steering(["n1"], ["n1"], True)


def test_later_requeues_add_nodes_and_keep_the_users_exclusions():
    got = steer(constraints(["n2"], ["n1", "n9"], mark(["n1"])), GPU_NODES)
    assert got == Steering(["n1", "n2", "n9"], ["n1", "n2"], True)


def test_a_multi_node_job_is_kept_off_every_node_that_ran_it():
    assert steer(constraints(["n1", "n3"]), GPU_NODES) == Steering(["n1", "n3"], ["n1", "n3"], True)


def test_once_every_gpu_node_turned_it_away_they_are_given_back_with_slurms_delay():
    got = steer(constraints(["n4"], ["n1", "n2", "n3", "n9"], mark(["n1", "n2", "n3"])), GPU_NODES)
    assert got == Steering(["n9"], [], False)
    # the user's own exclusions count: n4 is the last node left to it, nothing to give back
    assert steer(constraints(["n4"], ["n1", "n2", "n3"]), GPU_NODES) is None
    # a one-node partition: nothing to steer to
    assert steer(constraints(), ["n1"]) is None


def test_a_node_someone_took_out_of_the_exclusion_is_not_ours_any_more():
    got = steer(constraints(["n2"], [], mark(["n1"])), GPU_NODES)
    assert got == Steering(["n2"], ["n2"], True)


@pytest.mark.parametrize("fields", [dict(required="n[1-2]"), dict(features="a100")])
def test_jobs_with_a_nodelist_or_constraint_are_never_steered(fields):
    assert steer(constraints(**fields), GPU_NODES) is None


def test_unknown_gpu_nodes_mean_no_steering():
    assert steer(constraints(), None) is None


@pytest.mark.parametrize("comment, nodes", [
    ("slurm-mig: requeued 2/30, kept off n[1-3],gpu7: x", ["gpu7", "n1", "n2", "n3"]),
    ("slurm-mig: requeued 2/30: x", []),
    ("slurm-mig: requeued 2/30, kept off n[1-: x", []),
    ("slurm-mig: requeued 2/30, kept off a;b: x", []),
    ("site note, kept off n1: x", []),
    ("", []),
])
def test_the_mark_names_the_nodes_slurm_mig_added(comment, nodes):
    assert sorted(kept_off_before(comment)) == nodes


node = st.sampled_from(["n1", "n2", "n3", "n4", "n5"])


@given(st.sets(node, min_size=1), st.sets(node), st.sets(node), st.sets(node, min_size=1))
def test_steering_never_strands_a_job_nor_drops_a_users_exclusion(ran_on, users, ours_before, gpu_nodes):
    """Oracle: after steering, some GPU node is still open to the job unless
    it is given everything slurm-mig added back; the user's exclusions always
    stay; the nodes that just ran it are excluded whenever it may start soon;
    nothing is returned only when nothing would change."""
    ours_before -= users
    got = steer(constraints(sorted(ran_on), sorted(users | ours_before), mark(sorted(ours_before))
                          if ours_before else ""), sorted(gpu_nodes))
    if got is None:
        assert not ours_before and not gpu_nodes - users - ran_on
        return
    assert users <= set(got.exclude)
    assert set(got.kept_off) == set(got.exclude) - users
    if got.soon:
        assert ran_on <= set(got.exclude) and set(gpu_nodes) - set(got.exclude)
    else:
        assert got.kept_off == [] and set(got.exclude) == users and ours_before


GPU_SINFO = "n1 gpu:h100:2(S:0),shard:112(S:0)\nn2 gpu:h100:2(S:0),shard:112(S:0)\ncpu1 (null)\n"


@pytest.fixture
def fake_bin(tmp_path):
    """squeue's one-job read printing the next of `states` ('STATE|excluded')
    at each call (the last one repeats), sinfo printing `sinfo`, scontrol
    logging its calls."""
    calls = tmp_path / "calls"

    def make(*states, sinfo=GPU_SINFO):
        for i, state in enumerate(states):
            (tmp_path / f"state{i}").write_text(state if "|" in state else f"{state}|\n")
        (tmp_path / "squeue").write_text(
            f"#!/bin/sh\necho squeue \"$@\" >> {tmp_path}/squeue-calls\n"
            f"n=$(cat {tmp_path}/n 2>/dev/null || echo 0)\n"
            f"[ -e {tmp_path}/state$((n+1)) ] && echo $((n+1)) > {tmp_path}/n\n"
            f"cat {tmp_path}/state$n\n")
        (tmp_path / "sinfo").write_text(f"#!/bin/sh\necho sinfo \"$@\" >> {calls}\ncat <<'EOF'\n{sinfo}EOF\n")
        (tmp_path / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
        for tool in ("squeue", "sinfo", "scontrol"):
            (tmp_path / tool).chmod(0o755)
        return str(tmp_path)
    make.calls = lambda: calls.read_text().splitlines() if calls.exists() else []
    make.squeue_calls = lambda: (tmp_path / "squeue-calls").read_text().splitlines()
    return make


def request(keep_off=True, **constraint_fields):
    fields = dict(nodes=["n1"], partition="gpu", excluded=[], required="", features="", admin_comment="")
    return steer_request(NodeConstraints(**{**fields, **constraint_fields}), 2, 30, "7g.80gb:1 does not fit",
                         keep_off=keep_off)


SINFO_CALL = "sinfo -h -N -p gpu -o %N %G"


MARK_2 = "AdminComment=slurm-mig: requeued 2/30, kept off n1: 7g.80gb:1 does not fit"


@pytest.mark.parametrize("states", [("COMPLETING", "COMPLETING", "PENDING"), ("REQUEUED", "PENDING")])
def test_where_squeue_cannot_print_excnodes_one_job_is_read_until_pending(fake_bin, states):
    """22.05: the Prolog's read had no ExcNodeList (excluded None): one-job
    reads of state and ExcNodeList, then one update that marks, keeps off
    and starts the job."""
    bin_dir = fake_bin(*states)
    assert steer_when_pending("5", request(excluded=None), bin_dir, poll=0.01) == "kept off n1, started at once"
    assert fake_bin.calls() == [SINFO_CALL, f"update JobId=5 ExcNodeList=n1 {MARK_2} StartTime=now"]
    assert set(fake_bin.squeue_calls()) == {"squeue -h -j 5 -t all -o %T|%x"}     # one job, never the queue


def test_with_excnodes_from_the_prologs_read_one_update_is_all(fake_bin, tmp_path):
    """24.11 and later: after this node's Epilog (the marker gone), one
    command; the partition's GPU nodes come from the cache after the first."""
    bin_dir = fake_bin("RUNNING")          # never read
    marker = tmp_path / "5.requeued"
    for _ in range(2):
        assert steer_when_pending("5", request(), bin_dir, str(marker), str(tmp_path), poll=0.01) == \
            "kept off n1, started at once"
    assert fake_bin.calls() == [SINFO_CALL] + [f"update JobId=5 ExcNodeList=n1 {MARK_2} StartTime=now"] * 2
    assert not (tmp_path / "squeue-calls").exists()


def test_the_steerer_waits_for_this_nodes_epilog(fake_bin, tmp_path):
    import threading
    bin_dir = fake_bin("RUNNING")
    marker = tmp_path / "5.requeued"
    marker.write_text("")
    done = []
    t = threading.Thread(target=lambda: done.append(
        steer_when_pending("5", request(), bin_dir, str(marker), poll=0.01)))
    t.start()
    t.join(0.3)
    assert t.is_alive() and fake_bin.calls() == []
    marker.unlink()                        # the Epilog ran
    t.join(10)
    assert done == ["kept off n1, started at once"] and len(fake_bin.calls()) == 2


def test_an_epilog_that_never_comes_leaves_the_job_marked_with_slurms_delay(fake_bin, tmp_path):
    marker = tmp_path / "5.requeued"
    marker.write_text("")
    got = steer_when_pending("5", request(), fake_bin("PENDING"), str(marker), timeout=0.05, poll=0.01)
    assert got == "left alone: its Epilog had not run by the timeout"
    assert fake_bin.calls() == ["update JobId=5 AdminComment=slurm-mig: requeued 2/30: 7g.80gb:1 does not fit"]


def test_a_stale_or_foreign_partition_cache_is_read_again(fake_bin, tmp_path):
    bin_dir = fake_bin("RUNNING")
    cache = tmp_path / "partition-gpu-nodes.gpu"
    cache.write_text("n1\n")                          # would strand the job: only its own node
    os.utime(cache, (0, 0))
    assert steer_when_pending("5", request(), bin_dir, "", str(tmp_path)) == "kept off n1, started at once"
    assert fake_bin.calls()[0] == SINFO_CALL and cache.read_text() == "n1\nn2\n"
    cache.write_text("n1\n")
    os.chown(cache, 1000, 1000)                        # not root's: someone else wrote it
    steer_when_pending("5", request(), bin_dir, "", str(tmp_path))
    assert fake_bin.calls().count(SINFO_CALL) == 2


def test_the_users_own_exclusions_are_kept(fake_bin):
    bin_dir = fake_bin("PENDING|n7\n")
    assert steer_when_pending("5", request(excluded=None), bin_dir, poll=0.01) == "kept off n1, started at once"
    assert fake_bin.calls()[1].startswith("update JobId=5 ExcNodeList=n[1,7] AdminComment=slurm-mig: "
                                          "requeued 2/30, kept off n1: ")
    assert steer_when_pending("5", request(excluded=["n7"]), bin_dir) == "kept off n1, started at once"
    assert fake_bin.calls()[-1].startswith("update JobId=5 ExcNodeList=n[1,7] ")


def test_without_steer_return_giving_nodes_back_leaves_the_start_time_to_slurm(fake_bin):
    got = steer_when_pending("5", request(nodes=["n2"], excluded=["n1"], admin_comment=mark(["n1"])),
                             fake_bin("RUNNING"), poll=0.01)
    assert got == "given its nodes back (ExcNodeList=)"
    assert fake_bin.calls()[1:] == ["update JobId=5 ExcNodeList= AdminComment=slurm-mig: requeued 2/30: "
                                    "7g.80gb:1 does not fit"]


@pytest.mark.parametrize("fields, sinfo, steered", [
    (dict(nodes=["n2"], excluded=["n1"], admin_comment=mark(["n1"])), None, "ExcNodeList= "),   # nodes given back
    (dict(features="a100"), GPU_SINFO, ""),                                                   # left to Slurm
])
def test_a_job_that_may_come_back_here_starts_after_the_credential_cache(fake_bin, fields, sinfo, steered):
    """Slurm's own delay (cred_expire + 1 s, in whole seconds) can bring the
    job back here within 2 s of slurmd's cache entry expiring, before slurmd
    drops it: a job free to come back here starts steer_return after its Epilog."""
    bin_dir = fake_bin("RUNNING") if sinfo is None else fake_bin("PENDING", sinfo=sinfo)
    steer_when_pending("5", request(**fields), bin_dir, poll=0.01, return_after=121)
    assert [c for c in fake_bin.calls() if c.startswith("update")] == \
        [f"update JobId=5 {steered}AdminComment=slurm-mig: requeued 2/30: 7g.80gb:1 does not fit StartTime=now+121"]


def test_unsteered_the_job_is_only_marked_and_started_after_the_credential_cache(fake_bin):
    """steer = false: no read of the job or the partition, one update."""
    got = steer_when_pending("5", request(keep_off=False, excluded=None), fake_bin("COMPLETING"), poll=0.01,
                             return_after=121)
    assert got == "left to Slurm"
    assert fake_bin.calls() == ["update JobId=5 AdminComment=slurm-mig: requeued 2/30: 7g.80gb:1 does not fit "
                                "StartTime=now+121"]


@pytest.mark.parametrize("fields, sinfo", [
    (dict(features="a100"), GPU_SINFO), (dict(required="n1"), GPU_SINFO),
    ({}, "n1 gpu:h100:2(S:0),shard:112(S:0)\n"),      # its only GPU node: nowhere else to go
    ({}, ""),                                          # sinfo names no GPU node: nothing is known
])
def test_what_cannot_be_steered_is_only_marked(fake_bin, fields, sinfo):
    assert steer_when_pending("5", request(**fields), fake_bin("PENDING", sinfo=sinfo), poll=0.01) == \
        "left to Slurm"
    assert [c for c in fake_bin.calls() if not c.startswith("sinfo")] == \
        ["update JobId=5 AdminComment=slurm-mig: requeued 2/30: 7g.80gb:1 does not fit"]


@pytest.mark.parametrize("state, why", [("RUNNING", "the job is RUNNING"), ("CANCELLED", "the job is CANCELLED")])
def test_a_job_that_moved_on_is_left_alone(fake_bin, state, why):
    assert steer_when_pending("5", request(excluded=None), fake_bin("COMPLETING", state), poll=0.01) == \
        f"left alone: {why}"
    assert fake_bin.calls() == []


def test_a_job_still_completing_at_the_timeout_is_marked_and_left_to_slurm(fake_bin):
    got = steer_when_pending("5", request(excluded=None), fake_bin("COMPLETING"), timeout=0.05, poll=0.01)
    assert got == "left alone: still completing after the timeout"
    assert fake_bin.calls() == ["update JobId=5 AdminComment=slurm-mig: requeued 2/30: 7g.80gb:1 does not fit"]


@pytest.mark.parametrize("text, state", [("", "PENDING"), ("{}", "PENDING"), (request(nodes=["n1;reboot"]), "PENDING"),
                                         (request(excluded=["$(id)"]), "PENDING"), (request(excluded=None), "PENDING|n1;x\n"),
                                         (request().replace('"keep_off": true', '"keep_off": "no"'), "PENDING")])
def test_the_steerer_refuses_what_it_cannot_check(fake_bin, text, state):
    with pytest.raises(BadInput):
        steer_when_pending("5", text, fake_bin(state), poll=0.01)
    assert fake_bin.calls() == []


def steer_and_give_back(fake_bin, tmp_path, state, attempt_here="2"):
    """A steerer (attempt 2, this node n1) that gives its node back 0.05 s
    after the Epilog; the last requeue here was `attempt_here`."""
    round_file = tmp_path / "5.steered"
    round_file.write_text(attempt_here)
    got = steer_when_pending("5", request(), fake_bin(state), "", str(tmp_path), poll=0.01,
                             return_after=0.05, round_file=str(round_file))
    return got, round_file


def test_the_steerer_gives_its_node_back_to_a_job_still_pending_there(fake_bin, tmp_path):
    """After the credential cache let the job go (steer_return), one one-job
    read and one update that drops this node alone: the user's n7 stays."""
    got, round_file = steer_and_give_back(fake_bin, tmp_path, "PENDING|n[1,7]\n")
    assert got == "kept off n1, started at once; gave n1 back"
    assert fake_bin.calls()[1:] == [f"update JobId=5 ExcNodeList=n1 {MARK_2} StartTime=now",
                                    "update JobId=5 ExcNodeList=n7"]
    assert fake_bin.squeue_calls() == ["squeue -h -j 5 -t all -o %T|%x"] and not round_file.exists()


@pytest.mark.parametrize("state, why", [("RUNNING", "left alone after: the job is RUNNING"),
                                        ("PENDING|n7\n", "nothing to give back"),
                                        ("PENDING|n1\n|\n", "left alone after: the job is gone")])
def test_a_job_that_moved_on_or_left_this_node_is_not_updated(fake_bin, tmp_path, state, why):
    got, _ = steer_and_give_back(fake_bin, tmp_path, state)
    assert got == f"kept off n1, started at once; {why}"
    assert fake_bin.calls()[1:] == [f"update JobId=5 ExcNodeList=n1 {MARK_2} StartTime=now"]


def test_after_a_later_requeue_here_that_rounds_steerer_decides(fake_bin, tmp_path):
    """The job ran here again and was kept off anew: giving the node back now
    could let it return within cred_expire, so the older steerer leaves it."""
    got, round_file = steer_and_give_back(fake_bin, tmp_path, "PENDING|n1\n", attempt_here="3")
    assert got == "kept off n1, started at once; requeued here again since: left to that round"
    assert len(fake_bin.calls()) == 2 and not (tmp_path / "squeue-calls").exists()
    assert round_file.read_text() == "3"


def test_a_round_file_root_did_not_write_gives_nothing_back(fake_bin, tmp_path):
    round_file = tmp_path / "5.steered"
    round_file.write_text("2")
    os.chown(round_file, 1000, 1000)
    got = steer_when_pending("5", request(), fake_bin("PENDING|n1\n"), "", str(tmp_path), poll=0.01,
                             return_after=0.05, round_file=str(round_file))
    assert got.endswith("requeued here again since: left to that round") and len(fake_bin.calls()) == 2


@pytest.mark.parametrize("state, requeued", [("RUNNING", True), ("COMPLETING", False), ("", False)])
def test_make_room_requeues_only_a_job_that_still_runs(fake_bin, state, requeued):
    """An srun's young victims (interactive_evict_age): one one-job read and
    one requeue each, and none for a job that ended meanwhile (Slurm would
    requeue a finished batch job too, and run it again)."""
    from slurm_mig.slurm.requeue import make_room
    bin_dir = fake_bin(state + "|" if state else "")
    make_room(["5"], "9", "n1", bin_dir)
    assert fake_bin.calls() == (["requeue 5"] if requeued else [])
    assert [c.split()[:4] for c in fake_bin.squeue_calls()] == [["squeue", "-h", "-j", "5"]]


def test_make_room_lets_nothing_out_when_slurm_cannot_be_run(tmp_path):
    """A missing scontrol/squeue (slurm_bin_dir) is logged: the srun then
    waits for room as before; nothing escapes to drain the node."""
    from slurm_mig.slurm.requeue import make_room
    make_room(["5", "6"], "9", "n1", str(tmp_path))
