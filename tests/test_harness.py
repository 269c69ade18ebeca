"""The harness's chroot builder: a Slurm version that cannot be had is a skip
with its reason, never a silent pass (tests/harness/slurms.py)."""
import shutil

import pytest

from harness import slurms


@pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap not installed")
def test_an_unreachable_mirror_is_unavailable_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_MIG_TEST_CACHE", str(tmp_path))
    monkeypatch.setattr(slurms, "mirror", lambda: "http://127.0.0.1:9/debian")
    with pytest.raises(slurms.Unavailable, match=r"mirror http://127.0.0.1:9/debian is unreachable"):
        slurms.ensure_chroot("trixie")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trixie.lock"]     # nothing half-built


def test_the_mirror_comes_from_the_apt_sources(tmp_path):
    """deb822 (URIs:) or one-line (deb [options] URI) sources; never the security archive."""
    deb822, one_line = tmp_path / "debian.sources", tmp_path / "sources.list"
    deb822.write_text("Types: deb\nURIs: http://security.example/debian-security\n\n"
                      "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    one_line.write_text("# deb http://old.example/debian bookworm main\n"
                        "deb [arch=amd64 signed-by=/k.gpg] http://other.example/debian bookworm main\n")
    assert slurms.mirror([str(deb822), str(one_line)]) == "http://mirror.example/debian"
    assert slurms.mirror([str(tmp_path / "missing"), str(one_line)]) == "http://other.example/debian"
    with pytest.raises(slurms.Unavailable, match="no Debian mirror"):
        slurms.mirror([str(tmp_path / "missing")])
