"""The catalog against the placement tables of docs/facts.md (MIG: profiles and placements)."""
import pytest

from slurm_mig.core import catalog
from slurm_mig.errors import BadInput

CAT = catalog.load()

# `nvidia-smi mig -lgipp`: (profile id) -> (starts, size) on 8-slot GPUs (A100/H100 family).
EIGHT_SLOT = {19: ((0, 1, 2, 3, 4, 5, 6), 1), 20: ((0, 1, 2, 3, 4, 5, 6), 1),
              15: ((0, 2, 4, 6), 2), 14: ((0, 2, 4), 2), 9: ((0, 4), 4), 5: ((0,), 4), 0: ((0,), 8)}
A30 = {14: ((0, 1, 2, 3), 1), 21: ((0, 1, 2, 3), 1), 5: ((0, 2), 2), 6: ((0, 2), 2), 0: ((0,), 4)}
RTX = {**{i: ((0, 3, 6, 9), 3) for i in (14, 21, 47, 65, 67)},
       **{i: ((0, 6), 6) for i in (5, 35, 64, 66)}, **{i: ((0,), 12) for i in (0, 32)}}
EXPECTED = {"A30-24GB": A30, "RTX-PRO-6000-96GB": RTX}

REQUIRED_MODELS = ["A100-40GB", "A100-80GB", "A30-24GB", "H100-SXM5-80GB", "H100-PCIE-80GB",
                   "H100-NVL-94GB", "H200-141GB", "GH200-144GB", "B200-180GB", "RTX-PRO-6000-96GB"]


def test_required_models_present():
    assert set(REQUIRED_MODELS) <= set(CAT.models)


@pytest.mark.parametrize("key", REQUIRED_MODELS)
def test_placements_match_reference_tables(key):
    model = CAT.model(key)
    table = EXPECTED.get(key, EIGHT_SLOT)
    assert {p.id: (p.starts, p.mem_slots) for p in model.profiles} == table


@pytest.mark.parametrize("key", REQUIRED_MODELS)
def test_profiles_are_consistent(key):
    m = CAT.model(key)
    names = [p.name for p in m.profiles] + [a for p in m.profiles for a in p.aliases]
    assert len(names) == len(set(names)), "a name or alias is used twice"
    assert len({p.id for p in m.profiles}) == len(m.profiles)
    for p in m.profiles:
        assert p.name.startswith(f"{p.slices}g."), p.name
        assert all(s + p.mem_slots <= m.memory_slots for s in p.starts)
        assert 1 <= p.max <= len(p.starts)
        assert p.slices <= m.compute_slices
        # A full-size compute instance exists for every GI profile.
        assert any(c.slices == p.slices for c in m.ci_profiles_for(p))
    full = max(m.profiles, key=lambda p: p.mem_slots)
    assert full.mem_slots == m.memory_slots and full.slices == m.compute_slices


def test_profile_ids_differ_from_enums_as_nvml_reports():
    h100 = CAT.model("H100-80GB")
    assert h100.find_profile("1g.10gb").id == 19 and h100.find_profile("1g.10gb").enum == 0
    assert h100.find_profile("3g.40gb").id == 9 and h100.find_profile("3g.40gb").enum == 2
    assert CAT.model("A30").find_profile("1g.6gb").id == 14


def test_aliases_and_lookup():
    h100 = CAT.model("h100-80gb")
    assert h100.key == "H100-SXM5-80GB"
    assert h100.find_profile("3g.39gb") is h100.find_profile("3g.40gb")
    assert h100.find_profile("5g.50gb") is None
    assert CAT.identify("NVIDIA H100 80GB HBM3").key == "H100-SXM5-80GB"
    assert CAT.identify("something", "0x20B7").key == "A30-24GB"
    assert CAT.identify("NVIDIA GeForce RTX 4090") is None


def test_unknown_model_is_bad_input():
    with pytest.raises(BadInput, match="known models"):
        CAT.model("H900")


def test_unverified_values_are_marked():
    assert "placements" in CAT.model("H200").find_profile("3g.71gb").unverified
    assert "id" in CAT.model("B200").find_profile("7g.180gb").unverified
    assert not CAT.model("H100-80GB").find_profile("3g.40gb").unverified


def test_ampere_needs_reset_hopper_does_not():
    assert CAT.model("A100-40GB").mig_toggle_needs_reset
    assert not CAT.model("H100-80GB").mig_toggle_needs_reset


def test_arch_codes_are_nvmls():
    import pynvml
    assert catalog.ARCH_CODES == {"ampere": pynvml.NVML_DEVICE_ARCH_AMPERE,
                                  "hopper": pynvml.NVML_DEVICE_ARCH_HOPPER,
                                  "blackwell": pynvml.NVML_DEVICE_ARCH_BLACKWELL}
    assert {m.arch for m in CAT.models.values()} <= set(catalog.ARCH_CODES)
