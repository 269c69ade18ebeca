"""An srun/salloc job sends young batch jobs back to make room (core/eviction.py)."""
import itertools

from hypothesis import given, settings, strategies as st

from slurm_mig.core import catalog, eviction, planner, reservation
from slurm_mig.core.policies import POLICIES
from slurm_mig.core.view import GpuView, Occupied, job_owner, overlaps
from slurm_mig.errors import NoFit

H100 = catalog.load().model("H100-80GB")
POLICY = POLICIES["most-room"]


def inst(profile, start, job):
    p = H100.find_profile(profile)
    return Occupied(gpu=0, profile_id=p.id, start=start, size=p.mem_slots, slices=p.slices, gi_id=int(job),
                    owner=job_owner(str(job)))


# The case: 2g.20gb at 4 (job 1, started at 100) and at 2 (job 2, at 200): no start for a 3g.40gb.
BLOCKED = GpuView(0, H100, occupied=(inst("2g.20gb", 4, 1), inst("2g.20gb", 2, 2)))


def victims(gpu, request, evictable, others=()):
    room = eviction.make_room(gpu, "9", request, evictable, others, POLICY)
    return None if room is None else room.victims


def test_the_youngest_job_whose_end_makes_room_goes_alone_and_its_place_is_held():
    room = eviction.make_room(BLOCKED, "9", {"3g.40gb": 1}, {"1": 100.0, "2": 200.0}, (), POLICY)
    assert room.victims == ["2"]                        # job 2's 2g.20gb at 2: start 0 (slots 0-3) frees
    assert room.hold == reservation.Reservation("9", 0, ((0, 4),), 3)
    assert victims(BLOCKED, {"3g.40gb": 1}, {"1": 300.0, "2": 200.0}) == ["1"]


def test_only_evictable_jobs_go_and_none_when_they_do_not_make_room():
    assert victims(BLOCKED, {"3g.40gb": 1}, {"1": 100.0}) == ["1"]
    assert victims(BLOCKED, {"7g.80gb": 1}, {"1": 100.0}) is None
    assert victims(BLOCKED, {"7g.80gb": 1}, {"1": 100.0, "2": 200.0}) == ["2", "1"]
    assert victims(BLOCKED, {"3g.40gb": 1}, {}) is None
    assert victims(BLOCKED, {"3g.40gb": 1}, {"7": 500.0}) is None      # not on this GPU


def test_nothing_goes_when_the_request_fits_already():
    assert victims(BLOCKED, {"1g.10gb": 1}, {"1": 100.0, "2": 200.0}) == []


def test_a_younger_job_that_the_others_make_unneeded_stays():
    # 1g.10gb at 0 (job 3) and a 2g.20gb at 2 (job 2) both block a 4g.40gb (start 0, slots 0-3);
    # job 4 (youngest, 1g.10gb at 6) is tried first, is not needed, and stays.
    gpu = GpuView(0, H100, occupied=(inst("1g.10gb", 0, 3), inst("2g.20gb", 2, 2), inst("1g.10gb", 6, 4)))
    assert sorted(victims(gpu, {"4g.40gb": 1}, {"2": 100.0, "3": 200.0, "4": 300.0})) == ["2", "3"]


def test_a_place_another_waiting_job_holds_is_never_freed_for_this_one():
    """Job 8 waits for start 4 (held); job 1's 2g.20gb blocks it. Sending job 1
    back would free job 8's place, not one this job may use: only job 2
    (blocking start 0) goes; with job 2 not evictable, nothing does."""
    others = [reservation.Reservation("8", 0, ((4, 4),), 3)]
    assert victims(BLOCKED, {"3g.40gb": 1}, {"1": 300.0, "2": 200.0}, others) == ["2"]
    assert victims(BLOCKED, {"3g.40gb": 1}, {"1": 300.0}, others) is None
    # job 5's 3g.40gb fills the whole place job 8 holds (no free slot of it to stand in for)
    gpu = GpuView(0, H100, occupied=(inst("2g.20gb", 0, 6), inst("3g.40gb", 4, 5)))
    assert victims(gpu, {"3g.40gb": 1}, {"5": 100.0}) == ["5"]
    assert victims(gpu, {"3g.40gb": 1}, {"5": 100.0}, others) is None


PLACES = [("1g.10gb", s) for s in range(7)] + [("2g.20gb", s) for s in (0, 2, 4)] + [("3g.40gb", s) for s in (0, 4)]


@st.composite
def busy_gpus(draw):
    """A GPU of up to 5 jobs' instances (one each), in any legal layout, and when each started."""
    order = draw(st.permutations(PLACES))
    taken, occupied = set(), []
    for profile, start in order[:draw(st.integers(0, 8))]:
        p = H100.find_profile(profile)
        slots = set(range(start, start + p.mem_slots))
        if slots & taken or len(occupied) == 5:
            continue
        taken |= slots
        occupied.append(inst(profile, start, len(occupied) + 1))
    started = {str(o.gi_id): draw(st.floats(0, 1000)) for o in occupied}
    evictable = {j: t for j, t in started.items() if draw(st.booleans())}
    return GpuView(0, H100, occupied=tuple(occupied)), evictable


def fits(gpu, request, gone):
    try:
        planner.plan([eviction.without(gpu, gone)], request, 0, POLICY)
        return True
    except NoFit:
        return False


@settings(max_examples=300, deadline=None)
@given(busy_gpus(), st.sampled_from(["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]))
def test_victims_make_room_each_is_needed_and_none_means_no_subset_does(drawn, profile):
    """Against a brute force over every subset of the evictable jobs: the
    victims free a place (the one held, which overlaps none of the
    survivors' instances), each of them is needed, and None means that no
    subset frees one."""
    gpu, evictable = drawn
    request = {profile: 1}
    room = eviction.make_room(gpu, "9", request, evictable, (), POLICY)
    subsets = [set(c) for k in range(len(evictable) + 1) for c in itertools.combinations(sorted(evictable), k)]
    if room is None:
        assert not any(fits(gpu, request, s) for s in subsets)
        return
    chosen = room.victims
    assert set(chosen) <= set(evictable) and len(set(chosen)) == len(chosen)
    assert fits(gpu, request, chosen)
    assert all(not fits(gpu, request, set(chosen) - {j}) for j in chosen)
    survivors = [o for o in gpu.busy if o.owner.job not in chosen]
    assert not any(overlaps(o.start, o.size, *place) for o in survivors for place in room.hold.starts)
