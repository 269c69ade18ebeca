"""Planner: complete (fits exactly when exhaustive search does) and safe."""
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from slurm_mig.core import catalog, planner as P
from slurm_mig.core.policies import POLICIES
from slurm_mig.core.view import GpuView, Occupied, job_owner
from slurm_mig.errors import NoFit

CAT = catalog.load()
H100 = CAT.model("H100-80GB")


def valid_layout(model, placed):
    """placed: [(profile, start)] -> obeys overlap, max and slice rules."""
    for (p, s), (q, t) in itertools.combinations(placed, 2):
        if set(range(s, s + p.mem_slots)) & set(range(t, t + q.mem_slots)):   # independent of the code
            return False
    counts = Counter(p.id for p, _ in placed)
    return (all(counts[p.id] <= p.max for p, _ in placed)
            and sum(p.slices for p, _ in placed) <= model.compute_slices)


def exhaustive_fits(views, request):
    """Brute force over every (gpu, start) per requested instance."""
    names = [n for n, c in request.items() for _ in range(c)]
    options = []
    for name in names:
        opts = [(v, p, s) for v in views if (p := v.model.find_profile(name)) for s in p.starts]
        options.append(opts)
    for combo in itertools.product(*options):
        ok = True
        for v in views:
            busy = [(v.model.profile_by_id(x.profile_id), x.start) for x in v.busy]
            mine = [(p, s) for w, p, s in combo if w is v]
            if not valid_layout(v.model, busy + mine):
                ok = False
                break
        if ok:
            return True
    return False


@st.composite
def node_states(draw):
    model = CAT.model(draw(st.sampled_from(["H100-80GB", "A100-40GB", "A30", "RTX-PRO-6000-96GB"])))
    views = []
    for g in range(draw(st.integers(1, 2))):
        placed = []
        for _ in range(draw(st.integers(0, 5))):
            p = draw(st.sampled_from(model.profiles))
            s = draw(st.sampled_from(p.starts))
            if valid_layout(model, placed + [(p, s)]):
                placed.append((p, s))
        occupied = tuple(Occupied(gpu=g, profile_id=p.id, start=s, size=p.mem_slots, slices=p.slices,
                                  gi_id=i, owner=draw(st.sampled_from([job_owner("7"), job_owner("8"), None])))
                         for i, (p, s) in enumerate(placed))
        views.append(GpuView(index=g, model=model, occupied=occupied))
    names = [p.name for p in model.profiles]
    request = draw(st.dictionaries(st.sampled_from(names), st.integers(1, 2), min_size=1, max_size=2))
    return views, request


@settings(max_examples=300, deadline=None)
@given(node_states(), st.sampled_from(list(POLICIES)))
def test_planner_complete_and_safe(state, policy):
    views, request = state
    expected = exhaustive_fits(views, request)
    try:
        plan = P.plan(views, request, policy=POLICIES[policy])
    except NoFit:
        assert not expected
        return
    assert expected
    busy = {(s.gpu, s.gi_id) for v in views for s in v.busy}
    assert not busy & {(s.gpu, s.gi_id) for s in plan.destroy}, "touched a busy instance"
    assert Counter(p.profile.name for p in plan.placements) == Counter(
        {CAT.model(views[0].model.key).find_profile(n).name: c for n, c in request.items()})
    for v in views:
        kept = [(v.model.profile_by_id(s.profile_id), s.start) for s in v.occupied
                if s not in plan.destroy and not any(p.reuse == s for p in plan.placements)]
        new = [(p.profile, p.start) for p in plan.placements if p.gpu == v.index]
        assert valid_layout(v.model, kept + new)


def busy(profile, start, gpu=0, gi=1, owner=job_owner("5")):
    p = H100.find_profile(profile)
    return Occupied(gpu=gpu, profile_id=p.id, start=start, size=p.mem_slots, slices=p.slices,
                    gi_id=gi, owner=owner)


def test_mixed_request_placed_around_a_running_job():
    view = GpuView(0, H100, occupied=(busy("2g.20gb", 2),))
    plan = P.plan([view], {"3g.40gb": 1, "1g.10gb": 2})
    assert sorted((p.profile.name, p.start) for p in plan.placements) == [
        ("1g.10gb", 0), ("1g.10gb", 1), ("3g.40gb", 4)]


def test_3g_plus_two_1g_cannot_sit_next_to_another_3g():
    # 3+3+1+1 = 8 compute slices > 7 and 4+4+1+1 = 10 memory slots > 8.
    view = GpuView(0, H100, occupied=(busy("3g.40gb", 0),))
    with pytest.raises(NoFit, match="does not fit"):
        P.plan([view], {"3g.40gb": 1, "1g.10gb": 2})


def test_idle_instance_of_right_profile_is_reused_and_others_destroyed():
    idle_3g = busy("3g.40gb", 4, gi=2, owner=None)
    idle_1g = busy("1g.10gb", 0, gi=7, owner=None)
    plan = P.plan([GpuView(0, H100, occupied=(idle_3g, idle_1g))], {"3g.40gb": 1})
    assert plan.placements[0].reuse == idle_3g
    assert plan.destroy == (idle_1g,)


def test_packed_keeps_big_holes_first_fit_does_not():
    view = GpuView(0, H100)
    packed = P.plan([view], {"1g.10gb": 1}, policy=POLICIES["packed"])
    first = P.plan([view], {"1g.10gb": 1}, policy=POLICIES["first-fit"])
    assert packed.placements[0].start == 6 and first.placements[0].start == 0


def test_best_fit_gpu_and_pinning():
    views = [GpuView(0, H100), GpuView(1, H100, occupied=(busy("3g.40gb", 0, gpu=1),))]
    assert P.plan(views, {"1g.10gb": 1}).gpus == [1]
    assert P.plan(views, {"1g.10gb": 1}, gpu=0).gpus == [0]
    with pytest.raises(NoFit, match="GPU 5 does not exist"):
        P.plan(views, {"1g.10gb": 1}, gpu=5)


def test_split_across_gpus_only_when_unpinned():
    views = [GpuView(0, H100), GpuView(1, H100)]
    assert P.plan(views, {"7g.80gb": 2}).gpus == [0, 1]
    with pytest.raises(NoFit):
        P.plan(views, {"7g.80gb": 2}, gpu=0)


def test_profile_not_offered():
    with pytest.raises(NoFit, match="no GPU here offers"):
        P.plan([GpuView(0, CAT.model("A30"))], {"3g.40gb": 1})


def test_capacity():
    assert P.capacity(GpuView(0, H100), H100.find_profile("1g.10gb")) == 7
    assert P.capacity(GpuView(0, H100, occupied=(busy("3g.40gb", 0),)), H100.find_profile("3g.40gb")) == 1


def test_default_policy_keeps_room_for_arrivals_shard_counts_admit():
    # 3g, 2g, then 1g, 1g on one GPU: 8 slots, 7 slices, so Slurm's shard count
    # admits all four. Only a start that uses slot 7 for the 3g keeps them placeable.
    view = GpuView(0, H100)
    placed = []
    for i, name in enumerate(["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]):
        pl = P.plan([view], {name: 1}, gpu=0).placements[0]
        placed.append((name, pl.start))
        view = GpuView(0, H100, occupied=view.occupied + (busy(name, pl.start, gi=i + 1, owner=job_owner(str(i))),))
    assert placed[0] == ("3g.40gb", 4)
    first_fit = P.plan([GpuView(0, H100)], {"3g.40gb": 1}, policy=POLICIES["first-fit"])
    assert first_fit.placements[0].start == 0
