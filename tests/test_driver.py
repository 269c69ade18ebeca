"""The driver layer, run on the simulator always and, read-only, on a real
MIG-capable GPU when one is present (never changing its MIG settings)."""
import pytest

from slurm_mig.core import catalog
from slurm_mig.nvml.driver import Driver


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
        assert g.uuid.startswith("GPU-") and (g.mig_capable or not g.mig_on)


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
        if g.model is None or not g.mig_on:
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
    assert d.gpu(0).instances == (inst,)
    assert d.destroy(0, inst.gi_id) is True
    assert d.destroy(0, inst.gi_id) is False
    assert d.gpu(0).instances == ()


def test_an_instance_of_a_profile_the_catalog_lacks_is_listed_and_left_alone(make_node, monkeypatch):
    """A newer driver's profile: NVML lists it, the catalog does not. It must be
    seen (status), planned around (never placed over) and never destroyed."""
    import types

    from harness import calls as hooks
    from slurm_mig.core import planner
    from slurm_mig.errors import NoFit
    from slurm_mig.node.context import NodeContext
    from slurm_mig.node.occupancy import read_view
    from slurm_mig.node.status import status_doc
    from slurm_mig.nvml import driver as driver_mod
    from slurm_mig.sim import SimNvml

    cfg, state = make_node("1xH100-80GB")
    full = catalog.load()
    h100 = full.model("H100-80GB")
    Driver(SimNvml(state)).create(0, h100.find_profile("1g.20gb"), 2)
    lacking = catalog.Catalog({k: (m._replace(profiles=tuple(p for p in m.profiles if p.name != "1g.20gb"))
                                   if k == h100.key else m) for k, m in full.models.items()})
    monkeypatch.setattr(driver_mod, "catalog", types.SimpleNamespace(
        load=lambda: lacking, GI_ENUM_COUNT=catalog.GI_ENUM_COUNT, CI_ENUM_COUNT=catalog.CI_ENUM_COUNT))

    ctx = NodeContext(cfg)
    (inst,) = ctx.devices.driver.gpu(0).instances
    assert (inst.known, inst.profile, inst.start, inst.size, inst.slices) == (False, "1g.20gb", 2, 2, 1)
    assert status_doc(ctx)[0][0]["instances"][0]["owner_kind"] == "unknown_profile"
    with pytest.raises(NoFit):
        planner.plan(read_view(ctx), {"7g.80gb": 1})
    assert all(not (s < 4 and 2 < s + p.mem_slots) for p, _, s in
               [(x.profile, x.gpu, x.start) for x in planner.plan(read_view(ctx), {"3g.40gb": 1}).placements])
    hooks.reconcile(cfg)
    assert [i.gi_id for i in ctx.devices.driver.gpu(0).instances] == [inst.gi_id]
