"""The driver layer, run on the simulator always and, read-only, on a real
MIG-capable GPU when one is present (never changing its MIG settings)."""
import pytest

from slurm_mig import catalog
from slurm_mig.driver import Driver


def real_driver():
    try:
        import pynvml
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        return Driver(pynvml)
    except Exception:
        return None


@pytest.fixture(params=["sim", "nvml"])
def driver(request, make_node, driver_for):
    if request.param == "sim":
        _, state = make_node("1xH100-80GB,1xA30")
        d = driver_for(state)
        d.create(0, catalog.load().model("H100-80GB").find_profile("3g.40gb"), 4)
        return d
    d = real_driver()
    if d is None:
        pytest.skip("no NVIDIA GPU with NVML here")
    return d


# -- read-only half: safe on a real GPU ---------------------------------------
def test_enumerates_gpus(driver):
    gpus = driver.gpus()
    assert gpus and [g.index for g in gpus] == list(range(len(gpus)))
    for g in gpus:
        assert g.uuid.startswith("GPU-") and g.mig_current in (-1, 0, 1)


def test_instances_have_uuids_and_placements(driver):
    for g in driver.gpus():
        spans = sorted((i.start, i.start + i.size) for i in g.instances)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        for i in g.instances:
            assert i.uuid is None or i.uuid.startswith("MIG-")


def test_placements_agree_with_catalog(driver):
    for g in driver.gpus():
        if g.model is None:
            continue
        h = driver.handle(g.index)
        for p in g.model.profiles:
            if "placements" in p.unverified or "id" in p.unverified:
                continue
            assert driver.placements(h, p.id) == [(s, p.mem_slots) for s in p.starts], p.name


def test_live_profiles_agree_with_catalog(driver):
    for g in driver.gpus():
        if g.model is None or g.mig_current != 1:
            continue
        for enum, info in driver.gi_profiles(driver.handle(g.index)):
            p = g.model.profile_by_enum(enum)
            assert p is not None and (info.id, info.sliceCount, info.instanceCount) == (p.id, p.slices, p.max)


# -- changing half: simulator only ---------------------------------------------
def test_create_and_destroy(make_node, driver_for):
    _, state = make_node("1xA30")
    d = driver_for(state)
    p = catalog.load().model("A30").find_profile("2g.12gb")
    inst = d.create(0, p, 2)
    assert (inst.start, inst.size, inst.ci_count) == (2, 2, 1) and inst.uuid.startswith("MIG-")
    assert d.gpu(0).instances == [inst]
    assert d.destroy(0, inst.gi_id) is True
    assert d.destroy(0, inst.gi_id) is False
    assert d.gpu(0).instances == []
