"""Guarantee units (core/guarantee.py): the free-shard count at which a
request fits whatever a GPU holds, checked against the planner itself."""
import pytest

from slurm_mig.core import catalog, guarantee, planner, shards
from slurm_mig.core.view import GpuView, Occupied, job_owner
from slurm_mig.errors import NoFit

H100 = catalog.load().model("H100-80GB")
UNITS = shards.shard_units([H100])[H100.layout]
GEOMETRY, WEIGHTS, COUNT = UNITS.geometry, UNITS.result.weights, UNITS.count


def one(name, n=1):
    return GEOMETRY.counts({name: n})


def test_single_profiles_on_conservative56():
    """The thresholds measured for issue 22 on the shipped weights."""
    assert {p: guarantee.guarantee(GEOMETRY, WEIGHTS, COUNT, one(p))
            for p in ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")} == \
        {"1g.10gb": 11, "1g.20gb": 25, "2g.20gb": 33, "3g.40gb": 41, "4g.40gb": 49, "7g.80gb": 56}


def states_with_placements():
    """Every set of non-overlapping instances the shard count admits, as
    (free shards, [(profile, start)])."""
    profs = [H100.find_profile(p.name) for p in GEOMETRY.profiles]
    places = [(i, s) for i, p in enumerate(profs) for s in p.starts]
    out = []

    def grow(chosen, used, slices, units, first):
        out.append((COUNT - units, list(chosen)))
        for j in range(first, len(places)):
            i, s = places[j]
            p = profs[i]
            m = ((1 << p.mem_slots) - 1) << s
            if used & m or slices + p.slices > GEOMETRY.compute_slices or units + WEIGHTS[i] > COUNT \
                    or sum(1 for c, _ in chosen if c == i) >= p.max:
                continue
            grow(chosen + [(i, s)], used | m, slices + p.slices, units + WEIGHTS[i], j + 1)

    grow([], 0, 0, 0, 0)
    return profs, out


@pytest.mark.parametrize("request_", [("3g.40gb",), ("2g.20gb",), ("1g.20gb",), ("2g.20gb", "1g.10gb"),
                                      ("1g.10gb", "1g.10gb")])
def test_the_planner_places_the_request_at_the_guarantee_and_not_always_below(request_):
    counts = GEOMETRY.counts({p: request_.count(p) for p in set(request_)})
    t = guarantee.guarantee(GEOMETRY, WEIGHTS, COUNT, counts)
    profs, states = states_with_placements()
    below = False
    for free, chosen in states:
        view = [GpuView(0, H100, occupied=tuple(
            Occupied(gpu=0, profile_id=profs[i].id, start=s, size=profs[i].mem_slots, slices=profs[i].slices,
                     gi_id=k, owner=job_owner(str(k))) for k, (i, s) in enumerate(chosen)))]
        try:
            planner.plan(view, {p: request_.count(p) for p in set(request_)}, gpu=0)
            fits = True
        except NoFit:
            fits = False
        assert fits or free < t, (chosen, free, t)
        below |= not fits and free == t - 1
    assert below or t == sum(w * n for w, n in zip(WEIGHTS, counts))


def test_interactive_units_run_from_own_units_to_the_guarantee():
    counts = one("3g.40gb")
    assert [guarantee.interactive_units(GEOMETRY, WEIGHTS, COUNT, counts, s, 1) for s in (0, 0.1, 0.5, 1)] == \
        [25, 27, 33, 41]


def test_a_profile_with_one_start_is_charged_its_own_share_whatever_interactive_charge():
    """4g.40gb starts only at slot 0: a wrong GPU means a wait as long as the
    instance in that place runs, so it has a share of its own
    (interactive_charge_one_start); a set with it too. Profiles with several
    starts never take that share."""
    four = one("4g.40gb")
    assert [guarantee.interactive_units(GEOMETRY, WEIGHTS, COUNT, four, s, o)
            for s, o in ((0, 0), (0, 0.6), (0.1, 0.6), (1, 0.6), (0, 1), (0.1, 0))] == [29, 41, 41, 41, 49, 29]
    with_small = GEOMETRY.counts({"4g.40gb": 1, "1g.10gb": 1})
    g = guarantee.guarantee(GEOMETRY, WEIGHTS, COUNT, with_small)
    assert guarantee.interactive_units(GEOMETRY, WEIGHTS, COUNT, with_small, 0, 1) == g > 29 + 8
    for name in ("1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"):
        own = guarantee.interactive_units(GEOMETRY, WEIGHTS, COUNT, one(name), 0, 0)
        assert guarantee.interactive_units(GEOMETRY, WEIGHTS, COUNT, one(name), 0, 1) == own, name


def test_the_shipped_charges():
    """Config's defaults (docs/performance.md, issue 22): srun/salloc jobs
    are charged their batch units plus a tenth of the way to the guarantee
    (the Prolog's long wait and hold serve the rest: a profile with several
    starts waits for the first of the instances blocking them), and a request
    with a one-start profile its whole guarantee: a 4g.40gb costs 49, so
    Slurm gives it only an empty GPU."""
    from slurm_mig.config import Config
    cfg = Config()
    assert (cfg.interactive_charge, cfg.interactive_charge_one_start) == (0.1, 1.0)
    charge = {p: guarantee.interactive_units(GEOMETRY, WEIGHTS, COUNT, one(p), cfg.interactive_charge,
                                             cfg.interactive_charge_one_start)
              for p in ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")}
    assert charge == {"1g.10gb": 9, "1g.20gb": 15, "2g.20gb": 17, "3g.40gb": 27, "4g.40gb": 49, "7g.80gb": 56}
    assert COUNT - charge["4g.40gb"] < min(charge.values())
