"""bench/cluster_sim.py: the model of Slurm's admission, on tiny traces."""
import importlib.util
import pathlib

import pytest

from slurm_mig.core import shards

_PATH = pathlib.Path(__file__).resolve().parent.parent / "bench" / "cluster_sim.py"
_spec = importlib.util.spec_from_file_location("cluster_sim", _PATH)
cs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cs)

LONG = 1e5      # seconds: longer than any requeue cycle in these traces


class Checked(cs.SlurmCluster):
    """Fails the test the moment Slurm's count on a GPU exceeds C."""

    def _check(self):
        assert all(0 <= u <= self.count for gpus in self.shards for u in gpus), self.shards

    def try_start(self, job):
        out = super().try_start(job)
        self._check()
        return out

    def finish(self, job):
        super().finish(job)
        self._check()


def run(jobs, cluster, setup=0.0):
    return cs.simulate(jobs, cluster, setup, seed=1)


def same_time(*profiles, duration=LONG, interactive=False):
    """One job per profile, a second apart, in that order."""
    return [cs.Job(i, float(i), p, 1, duration, interactive) for i, p in enumerate(profiles)]


@pytest.mark.parametrize("weights", sorted(cs.WEIGHTS))
def test_every_job_ends_one_way_and_counts_stay_within_c(weights):
    jobs = cs.synthetic("small", 150, 1, 2, 0.9, 30, seed=3, interactive=0.2)
    cluster = Checked(1, 2, cs.WEIGHTS[weights], max_requeues=3)
    r, done = run(jobs, cluster, setup=2.0)
    for j in done:
        assert (j.end is None) == (j.fate is not None), (j.id, j.end, j.fate)
        assert j.fate in (None, "failed")
        assert j.requeues <= 3 and not (j.interactive and j.requeues)
        if j.fate == "failed" and not j.interactive:
            assert j.requeues == 3          # only after the last requeue
        if j.end is not None:
            assert j.start >= j.arrival + j.requeues * (cs.REQUEUE_DELAY + cs.LATENCY[0])
            assert j.end == pytest.approx(j.start + 2.0 + j.duration)
    assert r["failed"] + r["failed_interactive"] == sum(j.fate == "failed" for j in done)
    assert cluster.shards == [[0, 0]] and not cluster.charged and not cluster.waiting
    assert all(not g for g in cluster.slots[0])


def test_exact_admission_never_fails_nor_requeues():
    jobs = cs.synthetic("mixed", 150, 1, 2, 0.9, 30, seed=3, interactive=0.2)
    r, done = run(jobs, cs.ExactCluster(1, 2))
    assert all(j.end is not None for j in done)
    assert r["failed"] == r["failed_interactive"] == r["requeues_max"] == 0


def test_searched_weights_start_every_set_an_empty_gpu_holds_biggest_first():
    plain = cs.geometry_of([n for n in cs.GEOMETRY.names if cs.shard_research.is_plain(n)])
    for counts in shards.placeable_sets(plain):
        names = [n for n, c in zip(plain.names, counts) for _ in range(c)]
        r, done = run(same_time(*names), Checked(1, 1, cs.WEIGHTS["searched"]))
        assert r["requeues_max"] == 0 and all(j.start == j.arrival for j in done), names


def test_eighth_1g10gb_memory_slots_requeue_then_fail_searched_waits_in_queue():
    eight = ["1g.10gb"] * 8
    r, done = run(same_time(*eight), Checked(1, 1, cs.WEIGHTS["memory-slots"], max_requeues=4))
    assert r["failed"] == 1 and done[7].fate == "failed" and done[7].requeues == 4
    r, done = run(same_time(*eight), Checked(1, 1, cs.WEIGHTS["searched"], max_requeues=4))
    assert r["failed"] == r["requeues_max"] == 0
    assert done[7].start == done[0].end          # Slurm held it until a shard range freed


def test_before_and_interactive_wait_then_fail_without_requeue():
    r, done = run(same_time(*["1g.10gb"] * 8), Checked(1, 1, cs.WEIGHTS["memory-slots"], max_requeues=0))
    assert r["failed"] == 1 and r["requeues_max"] == 0
    jobs = same_time(*["1g.10gb"] * 7) + [cs.Job(7, 7.0, "1g.10gb", 1, LONG, interactive=True)]
    r, done = run(jobs, Checked(1, 1, cs.WEIGHTS["memory-slots"]))
    assert (r["failed"], r["failed_interactive"], done[7].requeues) == (0, 1, 0)


def test_waiting_prolog_starts_when_room_frees_in_time():
    jobs = same_time(*["1g.10gb"] * 7, duration=20.0) + [cs.Job(7, 7.0, "1g.10gb", 1, 60.0, True)]
    r, done = run(jobs, Checked(1, 1, cs.WEIGHTS["memory-slots"]))
    assert r["failed_interactive"] == 0 and done[7].start == done[0].end == 20.0


def test_requeued_job_comes_back_after_slurms_delay_and_starts():
    jobs = same_time(*["1g.10gb"] * 7, duration=1000.0) + [cs.Job(7, 7.0, "1g.10gb", 1, 10.0)]
    r, done = run(jobs, Checked(1, 1, cs.WEIGHTS["memory-slots"]))
    back = done[7]
    assert back.fate is None and back.requeues >= 1 and r["failed"] == 0
    lo, hi = cs.REQUEUE_DELAY + cs.LATENCY[0], cs.REQUEUE_DELAY + cs.LATENCY[1]
    assert 1000.0 <= back.start <= 1000.0 + hi
    assert back.requeues * lo <= back.start - back.arrival <= back.requeues * hi


@pytest.mark.parametrize("weights", sorted(cs.WEIGHTS))
def test_sbatch_refuses_what_no_gpu_holds(weights):
    jobs = [cs.Job(0, 0.0, "1g.10gb", 8, 10.0), cs.Job(1, 0.0, "7g.80gb", 2, 10.0),
            cs.Job(2, 0.0, "3g.40gb", 2, 10.0)]
    r, done = run(jobs, Checked(1, 2, cs.WEIGHTS[weights]))
    assert [j.fate for j in done] == ["refused", "refused", None]


def test_lowest_index_gpu_gets_the_shards():
    cluster = Checked(1, 2, cs.WEIGHTS["searched"])
    for j in same_time("4g.40gb", "3g.40gb", "2g.20gb"):
        assert cluster.try_start(j) == "started"
    assert cluster.shards == [[16 + 15, 8]]


def test_fallback_places_on_another_gpu_of_the_node():
    """GPU 0 holds 1g.20gb at slot 0 and 1g.10gb at 2-6: Slurm's count has 4
    shards left, a 1g.10gb, but no start does (slot 7 only). Without
    gpu_fallback the job is requeued; with it, it goes on GPU 1."""
    trap = [("1g.20gb", 0)] + [("1g.10gb", s) for s in range(2, 7)]
    for fallback, outcome, gpu in ((False, "requeued", None), (True, "started", 1)):
        cluster = Checked(1, 2, cs.WEIGHTS["searched"], fallback=fallback)
        for i, (name, start) in enumerate(trap):
            p = cs.MODEL.find_profile(name)
            cluster.slots[0][0].append(cs.Occupied(gpu=0, profile_id=p.id, start=start, size=p.mem_slots,
                                                   slices=p.slices, gi_id=i, owner=cs.job_owner(str(i))))
        cluster.shards[0][0] = 7 + 5 * 4
        job = cs.Job(9, 9.0, "1g.10gb", 1, 1.0)
        assert cluster.try_start(job) == outcome
        assert cluster.shards == [[27 + 4 * fallback, 0]]
        assert [s.gpu for s in cluster.held.get(job.id, (0, []))[1]] == ([gpu] if gpu else [])


def trapped(cluster, node):
    """GPU 0 of `node` holds 1g.20gb at slot 0 and 1g.10gb at 2-6 (searched
    weights: 27 of 31 shards, 4 left look like a 1g.10gb; no start has room)."""
    for i, (name, start) in enumerate([("1g.20gb", 0)] + [("1g.10gb", s) for s in range(2, 7)]):
        p = cs.MODEL.find_profile(name)
        cluster.slots[node][0].append(cs.Occupied(gpu=0, profile_id=p.id, start=start, size=p.mem_slots,
                                                  slices=p.slices, gi_id=100 * node + i, owner=cs.job_owner("x")))
    cluster.shards[node][0] = 7 + 5 * 4


def test_a_requeued_job_is_kept_off_its_node_and_starts_at_once_on_another():
    cluster = Checked(2, 1, cs.WEIGHTS["searched"])
    trapped(cluster, 0)
    r, done = run([cs.Job(0, 0.0, "1g.10gb", 1, 10.0)], cluster)
    job = done[0]
    assert job.requeues == 1 and cluster.kept_off == {}
    assert cs.STEER_DELAY + cs.WAKE_LATENCY[0] <= job.start <= cs.STEER_DELAY + cs.WAKE_LATENCY[1]
    assert cluster.shards == [[27], [0]]        # it ran on node 1, and is gone


def test_once_every_node_turned_it_away_slurms_delay_applies():
    class Recording(Checked):
        def requeue_delay(self, job, rng):
            self.delays.append(super().requeue_delay(job, rng))
            return self.delays[-1]
    cluster = Recording(2, 1, cs.WEIGHTS["searched"], max_requeues=2)
    cluster.delays = []
    trapped(cluster, 0)
    trapped(cluster, 1)
    r, done = run([cs.Job(0, 0.0, "1g.10gb", 1, 10.0)], cluster)
    assert done[0].fate == "failed" and done[0].requeues == 2 and cluster.kept_off == {}
    steered, given_back = cluster.delays     # node 0 kept off; node 1 gives both back
    assert cs.STEER_DELAY + cs.WAKE_LATENCY[0] <= steered <= cs.STEER_DELAY + cs.WAKE_LATENCY[1]
    assert cs.REQUEUE_DELAY + cs.LATENCY[0] <= given_back <= cs.REQUEUE_DELAY + cs.LATENCY[1]


@pytest.mark.parametrize("steer_return", [121.0, 0.0])
def test_a_node_that_turned_a_job_away_is_given_back_after_steer_return(steer_return):
    """Node 1 is full by count; on node 0 two 2g.20gb split GPU 0's halves
    (26 of 56 shards free: a 3g.40gb is sent there and turned away), the one
    in the upper half ends at 50 s. Given back 121 s after its Epilog, the
    job starts on node 0; kept off until every node turned it away, it
    waits for node 1, which never frees."""
    cluster = Checked(2, 2, cs.WEIGHTS["conservative56"], steer_return=steer_return)
    cluster.shards[1] = [56, 56]
    jobs = [cs.Job(0, 0.0, "2g.20gb", 1, 50.0), cs.Job(1, 1.0, "2g.20gb", 1, LONG),
            cs.Job(2, 2.0, "3g.40gb", 1, 10.0)]
    r, done = run(jobs, cluster)
    assert done[2].requeues == 1
    if steer_return:
        assert done[2].start == pytest.approx(2.0 + cs.STEER_DELAY + steer_return)
    else:
        assert done[2].start is None and cluster.kept_off == {2: {0}}


def test_without_steering_the_job_loops_on_the_trapped_node():
    cluster = Checked(2, 1, cs.WEIGHTS["searched"], max_requeues=3, steer=False)
    trapped(cluster, 0)
    r, done = run([cs.Job(0, 0.0, "1g.10gb", 1, 10.0)], cluster)
    assert done[0].fate == "failed" and done[0].requeues == 3 and cluster.shards == [[27], [0]]


@pytest.mark.parametrize("guarantee_after", [0, 2])
def test_a_job_sent_back_guarantee_after_times_is_charged_the_guarantee(guarantee_after):
    """One node, GPU 0 holds a 1g.10gb no job owns at start 2 (48 of 56
    shards free: a 4g.40gb's 29 fit by count, its one start is blocked), GPU
    1 is empty. Slurm keeps picking GPU 0; from the guarantee_after-th
    requeue on the job is charged its guarantee, 49, which only GPU 1
    shows, and starts there; never recharged, it is sent back until
    max_requeues and fails."""
    cluster = Checked(1, 2, cs.WEIGHTS["conservative56"], max_requeues=5, guarantee_after=guarantee_after)
    p = cs.MODEL.find_profile("1g.10gb")
    cluster.slots[0][0].append(cs.Occupied(gpu=0, profile_id=p.id, start=2, size=p.mem_slots, slices=p.slices,
                                           gi_id=1, owner=cs.job_owner("x")))
    cluster.shards[0][0] = 8
    r, done = run([cs.Job(0, 0.0, "4g.40gb", 1, 10.0)], cluster)
    if guarantee_after:
        assert done[0].requeues == 2 and done[0].start is not None and done[0].fate is None
        assert cluster.charged == {} and r["failed"] == 0
    else:
        assert done[0].requeues == 5 and done[0].fate == "failed"


def two_2g_then(job, charge, wait=LONG):
    """GPU 0 of two holds 2g.20gb at starts 4 and 2 (26 of 56 shards free);
    then `job` arrives. Returns (cluster, simulated jobs)."""
    jobs = same_time("2g.20gb", "2g.20gb", duration=100.0) + [job]
    cluster = Checked(1, 2, cs.WEIGHTS["conservative56"], interactive_charge=charge, interactive_wait=wait)
    return cluster, run(jobs, cluster)[1]


def test_an_interactive_job_is_charged_the_products_units_and_goes_where_it_fits():
    """The issue's case: charged 27 (share 0.1 of the way to 41), the srun
    skips GPU 0 and starts at once on GPU 1; charged its weight, 25, it
    waits on GPU 0 for a 2g.20gb to end."""
    srun = cs.Job(2, 2.0, "3g.40gb", 1, 10.0, interactive=True)
    cluster, done = two_2g_then(srun, 0.1)
    assert done[2].start == 2.0 and cluster.held == {}
    cluster, done = two_2g_then(srun, 0.0)
    assert done[2].start == 100.0


def test_the_shipped_charges_send_a_4g_srun_to_an_empty_gpu():
    """The product's defaults (Config: interactive_charge 0.1,
    interactive_charge_one_start 1), as run_all builds the cluster: a
    4g.40gb srun is charged its guarantee, 49, so it skips GPU 0 (a 1g.10gb
    there leaves 48 free) and starts at once on the empty GPU 1; a 3g.40gb
    srun is charged 27 (25 + 0.1 of the way to 41) and goes to GPU 0."""
    d = cs.DEFAULTS
    cluster = Checked(1, 2, cs.WEIGHTS["conservative56"], interactive_charge=d.interactive_charge,
                      interactive_wait=d.interactive_wait,
                      interactive_charge_one_start=d.interactive_charge_one_start)
    assert cluster.try_start(cs.Job(0, 0.0, "1g.10gb", 1, LONG)) == "started"
    assert cluster.shards == [[8, 0]]
    assert cluster.try_start(cs.Job(1, 1.0, "4g.40gb", 1, 10.0, interactive=True)) == "started"
    assert cluster.charged[1] == (0, 1, 49) and cluster.shards == [[8, 49]]
    assert cluster.try_start(cs.Job(2, 2.0, "3g.40gb", 1, 10.0, interactive=True)) == "started"
    assert cluster.charged[2] == (0, 0, 27)


def test_a_waiting_prolog_keeps_later_jobs_off_the_place_it_waits_for():
    """The srun waits on GPU 0 for start 0 (blocked by the 2g.20gb at 2): a
    2g.20gb planned there meanwhile would take start 0; with the hold it
    finds no place, without it it does."""
    for reserve, later_start in ((True, None), (False, 0)):
        cluster = Checked(1, 2, cs.WEIGHTS["conservative56"], reserve=reserve)
        for j in same_time("2g.20gb", "2g.20gb"):
            assert cluster.try_start(j) == "started"
        assert cluster.try_start(cs.Job(2, 2.0, "3g.40gb", 1, 10.0, interactive=True)) == "waiting"
        plan = cluster.plan(0, cs.Job(3, 3.0, "2g.20gb", 1, 10.0), 0)
        assert (plan and plan.placements[0].start) == later_start, reserve


def test_grid_json_prints_one_object_per_trace_and_policy(tmp_path):
    import json
    import subprocess
    import sys
    p = subprocess.run([sys.executable, str(_PATH), "--grid", "--json", "--jobs", "60", "--workloads", "small",
                        "--loads", "0.6", "--seed-list", "7,8", "--interactive", "0.1,0.3",
                        "--weights", "conservative56", "--interactive-charge", "0,0.1"],
                       capture_output=True, text=True, timeout=300, check=True)
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(rows) == 2 * 2 * 2
    assert {(r["seed"], r["interactive_share"]) for r in rows} == {(7, 0.1), (7, 0.3), (8, 0.1), (8, 0.3)}
    for r in rows:
        assert r["mix"] == "small" and r["load"] == 0.6 and r["batch_failed"] == 0
        assert 0 <= r["interactive_failed"] <= r["interactive_total"] and abs(r["jct_vs_exact"]) < 1
        assert r["jct_vs_exact"] == pytest.approx(r["batch_jct_min"] / r["exact_batch_jct_min"] - 1, abs=1e-3)


def test_a_job_of_several_profiles_is_charged_and_placed_as_one_set():
    """An srun asking for a 3g.40gb and two 1g.10gb: charged the product's
    units for the set, its three instances on one GPU."""
    from slurm_mig.core import guarantee
    srun = cs.Job(0, 0.0, "3g.40gb", 1, 10.0, interactive=True, extra=(("1g.10gb", 2),))
    cluster = Checked(1, 2, cs.WEIGHTS["conservative56"], interactive_charge=0.1)
    assert cluster.try_start(srun) == "started"
    w = cs.WEIGHTS["conservative56"]
    want = guarantee.interactive_units(cs.GEOMETRY, w.weights, w.count,
                                       cs.GEOMETRY.counts({"3g.40gb": 1, "1g.10gb": 2}), 0.1, 1)
    assert cluster.charged[0] == (0, 0, want) and want > 25 + 2 * 8
    n, held = cluster.held[0]
    assert sorted(s.size for s in held) == [1, 1, 4] and {s.gpu for s in held} == {0}


def test_synthetic_multi_profile_jobs_fit_one_empty_gpu():
    jobs = cs.synthetic("mixed", 400, 1, 2, 0.9, 30, seed=3, interactive=0.2, multi=0.5)
    several = [j for j in jobs if j.extra]
    assert 0.3 < len(several) / len(jobs) < 0.6
    assert all(shards.placeable(cs.GEOMETRY, j.request) for j in several)
    assert not any(j.profile == "7g.80gb" for j in several)


def _jct_gap():
    """bench/jct_gap.py, loaded as a module."""
    path = pathlib.Path(__file__).resolve().parent.parent / "bench" / "jct_gap.py"
    spec = importlib.util.spec_from_file_location("jct_gap", path)
    jg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jg)
    return jg


def test_jct_gap_requeue_srun_sends_an_srun_back_as_a_batch_job_instead_of_waiting():
    """bench/jct_gap.py's not-real variant: the srun of the issue's case,
    charged its batch units, is requeued off GPU 0 where the shipped model
    keeps it waiting in its Prolog; the job stays an srun for the results."""
    jg = _jct_gap()
    outcomes = {}
    for requeue_srun in (False, True):
        jobs = same_time("2g.20gb", "2g.20gb", duration=100.0) + [cs.Job(2, 2.0, "3g.40gb", 1, 10.0, True)]
        cluster = jg.Traced(1, 2, jg.cs.WEIGHTS["conservative56"], interactive_charge=0.0, interactive_wait=LONG)
        cluster.requeue_srun = requeue_srun
        done = jg.cs.simulate(jobs, cluster, 0.0, seed=1)[1]
        assert done[2].interactive and done[2].end is not None
        outcomes[requeue_srun] = (cluster.seen["waiting"], cluster.seen["requeued"], done[2].requeues)
    assert outcomes == {False: (1, 0, 0), True: (0, 1, 1)}


@pytest.mark.parametrize("age", [5.0, 0.5])
def test_jct_gap_evict_young_requeues_the_youngest_batch_job_blocking_an_srun(age):
    """interactive_evict_age in the simulator (bench/jct_gap.py counts it): the srun of the issue's case,
    charged its batch units, finds no start on GPU 0 beside the two 2g.20gb
    batch jobs (started 2 s and 1 s before it); allowed to, it requeues the
    younger one alone (that makes room) and runs at once, and that job runs
    again after Slurm's delay. Allowed half a second only, the srun waits."""
    jg = _jct_gap()
    jobs = same_time("2g.20gb", "2g.20gb", duration=100.0) + [cs.Job(2, 2.0, "3g.40gb", 1, 10.0, True)]
    cluster = jg.Traced(1, 2, jg.cs.WEIGHTS["conservative56"], interactive_charge=0.0, interactive_wait=LONG)
    cluster.interactive_evict_age = age
    done = jg.cs.simulate(jobs, cluster, 0.0, seed=1)[1]
    assert all(j.end is not None for j in done)
    if age > 2.0:
        assert cluster.seen["evicted"] == 1 and cluster.seen["waiting"] == 0
        assert done[2].start == 2.0
        assert [j.requeues for j in done[:2]] == [0, 1]
        assert done[0].start == 0.0 and done[1].start >= 2.0 + jg.cs.REQUEUE_DELAY
    else:
        assert cluster.seen["evicted"] == 0 and cluster.seen["waiting"] == 1
        assert done[2].start == 100.0 and [j.requeues for j in done[:2]] == [0, 0]
