"""Steering a requeued job (slurm/requeue.py): which nodes it is kept off,
when they are given back, and what is never touched."""
import pytest
from hypothesis import given, strategies as st

from slurm_mig.slurm.jobinfo import Placement
from slurm_mig.slurm.requeue import Steering, folded, kept_off_before, steer

GPU_NODES = ["n1", "n2", "n3", "n4"]


def placement(nodes=("n1",), excluded=(), mark="", **fields):
    return Placement(list(nodes), "gpu", list(excluded), admin_comment=mark, **fields)


def mark(kept):
    return f"slurm-mig: requeued 1/30, kept off {folded(kept)}: 7g.80gb:1 does not fit"


def test_the_first_requeue_keeps_the_job_off_its_node_and_lets_it_start_soon():
    assert steer(placement(), GPU_NODES) == Steering(["n1"], ["n1"], True)


def test_later_requeues_add_nodes_and_keep_the_users_exclusions():
    got = steer(placement(["n2"], ["n1", "n9"], mark(["n1"])), GPU_NODES)
    assert got == Steering(["n1", "n2", "n9"], ["n1", "n2"], True)


def test_a_multi_node_job_is_kept_off_every_node_that_ran_it():
    assert steer(placement(["n1", "n3"]), GPU_NODES) == Steering(["n1", "n3"], ["n1", "n3"], True)


def test_once_every_gpu_node_turned_it_away_they_are_given_back_with_slurms_delay():
    got = steer(placement(["n4"], ["n1", "n2", "n3", "n9"], mark(["n1", "n2", "n3"])), GPU_NODES)
    assert got == Steering(["n9"], [], False)
    # the user's own exclusions count: n4 is the last node left to it
    assert steer(placement(["n4"], ["n1", "n2", "n3"]), GPU_NODES) == Steering(["n1", "n2", "n3"], [], False)
    # a one-node partition: nothing to steer to
    assert steer(placement(), ["n1"]) == Steering([], [], False)


def test_a_node_someone_took_out_of_the_exclusion_is_not_ours_any_more():
    got = steer(placement(["n2"], [], mark(["n1"])), GPU_NODES)
    assert got == Steering(["n2"], ["n2"], True)


@pytest.mark.parametrize("fields", [dict(required="n[1-2]"), dict(features="a100")])
def test_jobs_with_a_nodelist_or_constraint_are_never_steered(fields):
    assert steer(placement(**fields), GPU_NODES) is None


def test_unknown_gpu_nodes_mean_no_steering():
    assert steer(placement(), None) is None


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
    it is given everything back; the user's exclusions always stay; the
    nodes that just ran it are excluded whenever it may start soon."""
    ours_before -= users
    got = steer(placement(sorted(ran_on), sorted(users | ours_before), mark(sorted(ours_before))
                          if ours_before else ""), sorted(gpu_nodes))
    assert users <= set(got.exclude)
    assert set(got.kept_off) == set(got.exclude) - users
    if got.soon:
        assert ran_on <= set(got.exclude) and set(gpu_nodes) - set(got.exclude)
    else:
        assert got.kept_off == [] and set(got.exclude) == users
