"""The simulated NVML: rules from docs/facts.md (MIG), and invariants under random use."""
import ctypes
import json

import pynvml
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from slurm_mig.core import catalog
from slurm_mig.errors import BadInput, StateCorrupt
from slurm_mig.sim import SimNvml, init_state
from slurm_mig.sim.nvml import driver_order, gi_id_for

H100 = catalog.load().model("H100-80GB")


def nvml_for(tmp_path, gpus="1xH100-80GB", mig=True):
    path = str(tmp_path / "n.json")
    init_state(path, gpus, mig_enabled=mig)
    n = SimNvml(path)
    n.nvmlInit()
    return n, path


def place(n, h, profile_id, start, size):
    p = pynvml.c_nvmlGpuInstancePlacement_t()
    p.start, p.size = start, size
    return n.nvmlDeviceCreateGpuInstanceWithPlacement(h, profile_id, ctypes.byref(p))


def code_of(fn, *args):
    with pytest.raises(pynvml.NVMLError) as e:
        fn(*args)
    return e.value.value


def test_overlap_is_insufficient_resources(tmp_path):
    n, _ = nvml_for(tmp_path)
    h = n.nvmlDeviceGetHandleByIndex(0)
    place(n, h, 9, 0, 4)
    assert code_of(place, n, h, 19, 2, 1) == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
    assert code_of(place, n, h, 9, 0, 4) == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
    assert code_of(place, n, h, 9, 2, 4) == pynvml.NVML_ERROR_INVALID_ARGUMENT   # not a legal start
    assert code_of(place, n, h, 9, 4, 3) == pynvml.NVML_ERROR_INVALID_ARGUMENT   # wrong size
    assert code_of(place, n, h, 777, 0, 1) == pynvml.NVML_ERROR_INVALID_ARGUMENT


def test_gi_destroy_with_ci_or_process_is_in_use(tmp_path):
    n, path = nvml_for(tmp_path)
    h = n.nvmlDeviceGetHandleByIndex(0)
    gi = place(n, h, 19, 0, 1)
    ci = n.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    assert code_of(n.nvmlGpuInstanceDestroy, gi) == pynvml.NVML_ERROR_IN_USE
    uuid = n.nvmlDeviceGetUUID(n.nvmlComputeInstanceGetInfo(ci).device)
    assert uuid.startswith("MIG-") and len(uuid) == 40
    with open(path) as f:
        state = json.load(f)
    state["processes"].append({"pid": 1, "gpu": 0, "gi": n.nvmlGpuInstanceGetInfo(gi).id, "ci": 0})
    with open(path, "w") as f:
        json.dump(state, f)
    assert code_of(n.nvmlComputeInstanceDestroy, ci) == pynvml.NVML_ERROR_IN_USE
    assert [p.pid for p in n.nvmlDeviceGetComputeRunningProcesses(n.nvmlDeviceGetHandleByUUID(uuid))] == [1]


def test_mig_off_is_not_supported(tmp_path):
    n, _ = nvml_for(tmp_path, mig=False)
    h = n.nvmlDeviceGetHandleByIndex(0)
    assert n.nvmlDeviceGetMigMode(h) == [0, 0]
    assert code_of(n.nvmlDeviceCreateGpuInstance, h, 19) == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert code_of(n.nvmlDeviceGetGpuInstanceProfileInfo, h, 0) == pynvml.NVML_ERROR_NOT_SUPPORTED
    # Possible placements answer regardless of MIG mode.
    count = ctypes.c_uint(0)
    n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 9, None, ctypes.byref(count))
    assert count.value == 2


def test_profile_info_enum_vs_id(tmp_path):
    n, _ = nvml_for(tmp_path)
    h = n.nvmlDeviceGetHandleByIndex(0)
    info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, pynvml.NVML_GPU_INSTANCE_PROFILE_3_SLICE)
    assert (info.id, info.sliceCount, info.memorySizeMB, info.name) == (9, 3, 40448, "MIG 3g.40gb")
    assert code_of(n.nvmlDeviceGetGpuInstanceProfileInfo, h, 0x12) == pynvml.NVML_ERROR_INVALID_ARGUMENT
    assert code_of(n.nvmlDeviceGetGpuInstanceProfileInfo, h, 0x5) == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_mig_mode_hopper_immediate_ampere_pending_when_unresettable(tmp_path):
    n, path = nvml_for(tmp_path, "1xH100-80GB,1xA100-40GB", mig=False)
    hop, amp = n.nvmlDeviceGetHandleByIndex(0), n.nvmlDeviceGetHandleByIndex(1)
    assert n.nvmlDeviceSetMigMode(hop, 1) == pynvml.NVML_SUCCESS
    assert n.nvmlDeviceGetMigMode(hop) == [1, 1]
    with open(path) as f:
        state = json.load(f)
    state["gpus"][1]["reset_capable"] = False      # e.g. a pass-through VM
    with open(path, "w") as f:
        json.dump(state, f)
    assert n.nvmlDeviceSetMigMode(amp, 1) == pynvml.NVML_ERROR_RESET_REQUIRED
    assert n.nvmlDeviceGetMigMode(amp) == [0, 1]
    gi = n.nvmlDeviceCreateGpuInstance(hop, 19)
    assert n.nvmlDeviceSetMigMode(hop, 0) == pynvml.NVML_ERROR_IN_USE   # instances exist
    assert n.nvmlDeviceGetMigMode(hop) == [1, 0]
    assert gi is not None


def test_driver_chosen_placement_follows_observed_order(tmp_path):
    assert driver_order(H100.find_profile("1g.10gb").starts, 1, 8) == [6, 4, 5, 0, 1, 2, 3]
    n, _ = nvml_for(tmp_path)
    h = n.nvmlDeviceGetHandleByIndex(0)
    # the User Guide: -cgi 19,19,14,9 fails on the last one; 9,19,14,19 succeeds.
    for pid in (19, 19, 14):
        n.nvmlDeviceCreateGpuInstance(h, pid)
    assert code_of(n.nvmlDeviceCreateGpuInstance, h, 9) == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES


def test_gi_ids_in_swizzle_ranges():
    assert [gi_id_for(s, 1, 8) for s in range(7)] == [7, 8, 9, 10, 11, 12, 13]
    assert [gi_id_for(s, 4, 8) for s in (0, 4)] == [1, 2]
    assert gi_id_for(0, 8, 8) == 0
    assert [gi_id_for(s, 3, 12) for s in (0, 3, 6, 9)] == [3, 4, 5, 6]


def test_fault_injection_fails_nth_call_k_times(tmp_path):
    n, path = nvml_for(tmp_path)
    with open(path) as f:
        state = json.load(f)
    state["faults"] = [{"call": "nvmlDeviceGetCount", "error": 999, "after": 1, "times": 2, "fired": 0}]
    with open(path, "w") as f:
        json.dump(state, f)
    results = []
    for _ in range(4):
        try:
            results.append(n.nvmlDeviceGetCount())
        except pynvml.NVMLError as e:
            results.append(e.value)
    assert results == [1, 999, 999, 1]


def test_corrupt_state_is_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(StateCorrupt, match="bad.json"):
        SimNvml(str(path)).nvmlInit()
    with pytest.raises(BadInput, match="does not exist"):
        SimNvml(str(tmp_path / "missing.json")).nvmlInit()


@pytest.mark.parametrize("spec", ["2xH900", "H100", "0xH100-80GB", ""])
def test_bad_gpu_spec(tmp_path, spec):
    with pytest.raises(BadInput):
        init_state(str(tmp_path / "x.json"), spec)


# -- property: any sequence of calls keeps the node valid --------------------
MODELS = ["H100-80GB", "A100-40GB", "A30", "RTX-PRO-6000-96GB"]
ops = st.lists(st.tuples(st.sampled_from(["place", "auto", "destroy"]),
                         st.integers(0, 20), st.integers(0, 12)), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=st.sampled_from(MODELS), seq=ops)
def test_random_sequences_keep_invariants(tmp_path_factory, model, seq):
    tmp = tmp_path_factory.mktemp("prop")
    n, path = nvml_for(tmp, f"1x{model}")
    m = catalog.load().model(model)
    h = n.nvmlDeviceGetHandleByIndex(0)
    shadow = {}   # gi id -> (start, size, profile id): what must be there
    for op, a, b in seq:
        p = m.profiles[a % len(m.profiles)]
        if op == "destroy":
            if not shadow:
                continue
            gi_id = sorted(shadow)[a % len(shadow)]
            n.nvmlGpuInstanceDestroy(n.nvmlDeviceGetGpuInstanceById(h, gi_id))
            del shadow[gi_id]
            continue
        start = p.starts[b % len(p.starts)]
        free = (sum(1 for v in shadow.values() if v[2] == p.id) < p.max
                and sum(m.profile_by_id(v[2]).slices for v in shadow.values()) + p.slices <= m.compute_slices)
        overlap = any(start < s + z and s < start + p.mem_slots for s, z, _ in shadow.values())
        try:
            gi = place(n, h, p.id, start, p.mem_slots) if op == "place" else n.nvmlDeviceCreateGpuInstance(h, p.id)
        except pynvml.NVMLError as e:
            assert e.value == pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES
            assert op == "auto" or overlap or not free
            continue
        assert op == "auto" or (free and not overlap)
        info = n.nvmlGpuInstanceGetInfo(gi)
        assert info.id not in shadow
        shadow[info.id] = (info.placement.start, info.placement.size, info.profileId)
    # What NVML lists is exactly the shadow, non-overlapping and within limits.
    with open(path) as f:
        gis = json.load(f)["gpus"][0]["gis"]
    assert {g["id"]: (g["start"], g["size"], g["profile_id"]) for g in gis} == shadow
    spans = sorted((s, s + z) for s, z, _ in shadow.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    assert sum(m.profile_by_id(pid).slices for *_, pid in shadow.values()) <= m.compute_slices
    for p in m.profiles:
        assert sum(1 for v in shadow.values() if v[2] == p.id) <= p.max
