"""A Prolog waiting for room holds the place it waits for (core/reservation.py,
node/reservations.py): jobs arriving meanwhile are planned around it."""
import json
import os
import threading
import time

from harness.calls import prolog
from slurm_mig.core import catalog, planner, reservation
from slurm_mig.core.view import GpuView, Occupied, job_owner
from slurm_mig.errors import NoFit
from slurm_mig.hooks.epilog import epilog
from slurm_mig.node import reservations
from slurm_mig.node.jobfiles import task_prolog

H100 = catalog.load().model("H100-80GB")


def inst(profile, start, job):
    p = H100.find_profile(profile)
    return Occupied(gpu=0, profile_id=p.id, start=start, size=p.mem_slots, slices=p.slices, gi_id=job,
                    owner=job_owner(str(job)))


# GPU 0 with 2g.20gb at 4 (job 1) and at 2 (job 2): a 3g.40gb (starts 0 and 4) has no place.
BLOCKED = GpuView(0, H100, occupied=(inst("2g.20gb", 4, 1), inst("2g.20gb", 2, 2)))


def test_the_place_the_fewest_instances_block_lowest_first():
    r = reservation.target(BLOCKED, "3", {"3g.40gb": 1})
    assert r == reservation.Reservation("3", 0, ((0, 4),), 3)
    view = BLOCKED._replace(occupied=BLOCKED.occupied + (inst("1g.10gb", 0, 5),))
    assert reservation.target(view, "3", {"3g.40gb": 1}).starts == ((4, 4),)


def test_others_are_planned_around_it_its_owner_is_not():
    r = reservation.target(BLOCKED, "3", {"3g.40gb": 1})
    assert planner.plan([BLOCKED], {"2g.20gb": 1}, gpu=0).placements[0].start == 0
    try:
        planner.plan(reservation.apply([BLOCKED], [r], "4"), {"2g.20gb": 1}, gpu=0)
        raise AssertionError("a 2g.20gb was placed in the reserved slots 0-1")
    except NoFit:
        pass
    assert planner.plan(reservation.apply([BLOCKED], [r], "4"), {"1g.10gb": 1}, gpu=0).placements[0].start == 6
    freed = GpuView(0, H100, occupied=(inst("2g.20gb", 4, 1),))
    assert planner.plan(reservation.apply([freed], [r], "3"), {"3g.40gb": 1}, gpu=0).placements[0].start == 0
    # and its compute slices: 3, less what the instances blocking it give back
    assert [s.slices for s in reservation.held(BLOCKED, [r], "4") if s.size == 0] == [1]
    assert [s.slices for s in reservation.held(freed, [r], "4") if s.size == 0] == [3]


def test_entries_expire_and_malformed_ones_are_ignored(tmp_path):
    state = str(tmp_path)
    r = reservation.Reservation("3", 0, ((0, 4),), 3)
    reservations.hold(state, r, time.time() + 60)
    reservations.hold(state, r._replace(job="4"), time.time() - 1)
    assert reservations.load(state) == [r]
    path = os.path.join(state, reservations.FILE)
    doc = json.load(open(path))
    doc.append({"job": "../x", "gpu": 0, "starts": [[0, 4]], "slices": 3, "until": time.time() + 60})
    doc.append({"job": "9", "gpu": "0", "starts": [[0, 4]], "slices": 3, "until": time.time() + 60})
    doc.append({"job": "8", "gpu": 0, "starts": [[0, 4]], "slices": 3, "until": "inf"})
    json.dump(doc, open(path, "w"))
    assert reservations.load(state) == [r]
    reservations.drop(state, "3")
    assert reservations.load(state) == []


def test_a_waiting_prolog_keeps_a_later_job_off_its_place_then_binds(make_node):
    """Job 3 (3g.40gb) waits on GPU 0; job 4 (2g.20gb) would go to start 0,
    the place job 3 waits for: it is refused there. When job 2 ends, job 3 binds."""
    cfg, _ = make_node()
    for job in ("1", "2"):
        prolog(cfg, job, "mig:2g.20gb:1", gpu=0)
    waiter = threading.Thread(target=prolog, args=(cfg._replace(wait_for_room=20), "3", "mig:3g.40gb:1", 0))
    waiter.start()
    deadline = time.monotonic() + 10
    while not reservations.load(cfg.state_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    prolog(cfg, "4", "mig:2g.20gb:1", gpu=0)
    assert task_prolog(cfg.run_dir, "4")[1] == 1
    epilog(cfg, "2")
    waiter.join()
    text, code = task_prolog(cfg.run_dir, "3")
    assert code == 0 and text.startswith("export CUDA_VISIBLE_DEVICES=MIG-")
    assert reservations.load(cfg.state_dir) == []


def test_a_place_another_waiting_job_holds_is_not_held_twice():
    """Two waiting jobs holding one place would each keep the other off it."""
    first = reservation.target(BLOCKED, "3", {"3g.40gb": 1})
    second = reservation.target(BLOCKED, "4", {"3g.40gb": 1}, [first])
    assert first.starts == ((0, 4),) and second.starts == ((4, 4),)
    assert reservation.target(BLOCKED, "5", {"3g.40gb": 1}, [first, second]) is None
    assert reservation.target(BLOCKED, "3", {"3g.40gb": 1}, [first]) == first      # its own hold is no other's


def test_a_request_of_several_profiles_holds_one_place_for_each_instance():
    """1g.20gb at 6 and 2g.20gb at 2: a 3g.40gb + 2x 1g.10gb request is
    blocked once wherever the 3g.40gb goes; on the tie the lowest places win:
    1g.10gb at 0 and 1, 3g.40gb at 4 (its free slots 4-5 held)."""
    view = GpuView(0, H100, occupied=(inst("1g.20gb", 6, 1), inst("2g.20gb", 2, 2)))
    r = reservation.target(view, "3", {"3g.40gb": 1, "1g.10gb": 2})
    assert r.starts == ((0, 1), (1, 1), (4, 4)) and r.slices == 5
    held = reservation.held(view, [r], "4")
    assert sorted(s.start for s in held if s.size) == [0, 1, 4, 5]


def _evicting_prolog(cfg, job, spec, sent, epilog_after=0.0):
    """An srun/salloc job's MIG Prolog on GPU 0 with interactive_evict_age: what
    it sends back is recorded and, as after Slurm's requeue, its Epilog runs
    (`epilog_after` seconds later)."""
    from slurm_mig.core.syntax import MigRequest
    from slurm_mig.hooks.dynamic import prolog as mig_prolog

    def evict(victims):
        sent.extend(victims)

        def requeued():
            time.sleep(epilog_after)
            for v in victims:
                epilog(cfg, v)
        threading.Thread(target=requeued).start()
    mig_prolog(cfg, job, MigRequest.parse(spec), 0, evict=evict)


def _batch_2g(cfg, job, requeueable=True):
    from slurm_mig.core.syntax import MigRequest
    from slurm_mig.hooks.dynamic import prolog as mig_prolog
    mig_prolog(cfg, job, MigRequest.parse("mig:2g.20gb:1"), 0, requeueable=requeueable)
    time.sleep(0.01)                # the next one is younger


def test_an_srun_without_a_start_sends_the_younger_batch_job_back_and_binds(make_node):
    """interactive_evict_age: jobs 1 and 2 (2g.20gb batch jobs Slurm may
    requeue) block a 3g.40gb srun on GPU 0; job 2, the younger, alone goes
    back to the queue, and the srun binds once its Epilog ran; job 1 keeps
    its instance."""
    cfg, _ = make_node()
    cfg = cfg._replace(interactive_evict_age=600, wait_for_room=20)
    for job in ("1", "2"):
        _batch_2g(cfg, job)
    sent = []
    _evicting_prolog(cfg, "3", "mig:3g.40gb:1", sent)
    assert sent == ["2"]
    text, code = task_prolog(cfg.run_dir, "3")
    assert code == 0 and text.startswith("export CUDA_VISIBLE_DEVICES=MIG-")
    assert task_prolog(cfg.run_dir, "1")[1] == 0


def test_an_srun_sends_back_no_job_too_old_or_that_slurm_may_not_requeue(make_node):
    """Job 2 may be requeued, job 1 (younger) may not (--no-requeue, an srun,
    or its last requeue left): a first srun, allowed 1 ms, sends nothing back
    and fails alone after its wait; a second, allowed 600 s, sends job 2."""
    cfg, _ = make_node()
    _batch_2g(cfg, "2")
    _batch_2g(cfg, "1", requeueable=False)
    time.sleep(0.05)
    sent = []
    _evicting_prolog(cfg._replace(interactive_evict_age=0.001, wait_for_room=0.5), "3", "mig:3g.40gb:1", sent)
    assert sent == []
    text, code = task_prolog(cfg.run_dir, "3")
    assert code == 1 and "could not get its MIG devices" in text and "3g.40gb" in text
    _evicting_prolog(cfg._replace(interactive_evict_age=600, wait_for_room=20), "4", "mig:3g.40gb:1", sent)
    assert sent == ["2"] and task_prolog(cfg.run_dir, "4")[1] == 0


def test_two_waiting_sruns_send_back_one_job_each_and_both_bind(make_node):
    """Job 3 sends back job 2 (the younger) and holds the place it frees;
    job 4, arriving before job 2's Epilog, may not count on that place: it
    sends back job 1 instead, and both bind."""
    cfg, _ = make_node()
    cfg = cfg._replace(interactive_evict_age=600, wait_for_room=20)
    for job in ("1", "2"):
        _batch_2g(cfg, job)
    sent3, sent4 = [], []
    first = threading.Thread(target=_evicting_prolog, args=(cfg, "3", "mig:3g.40gb:1", sent3, 2.0))
    first.start()
    deadline = time.monotonic() + 10
    while not sent3 and time.monotonic() < deadline:
        time.sleep(0.05)
    _evicting_prolog(cfg, "4", "mig:3g.40gb:1", sent4, 0.0)
    first.join()
    assert (sent3, sent4) == (["2"], ["1"])
    assert task_prolog(cfg.run_dir, "3")[1] == 0 and task_prolog(cfg.run_dir, "4")[1] == 0
