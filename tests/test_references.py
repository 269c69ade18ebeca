"""Every file, section and link the repository's text names is in the
repository: docs, comments and docstrings never send a reader elsewhere."""
import os
import re

import pytest

from harness import slurms

REPO = slurms.REPO
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist", "data"}
TEXT = (".py", ".md", ".j2", ".sh", ".toml", ".cfg", ".lua", ".service", ".timer")
FOREIGN = re.compile(r"mig-facts|slurm-facts|DESIGN\.md|style-anchors|shared/reference|\.\./shared")
PATH = re.compile(r"(?<![\w/.<>$-])((?:docs|slurm_mig|tests|bench|prolog|epilog|demo)/[\w./-]*[\w/])")
SECTION = re.compile(r"docs/facts\.md, ((?:MIG|Slurm): [^;)`\n]+)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def text_files():
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(TEXT) or name in ("run.sh", "run") or "slurm-mig-" in name:
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    yield os.path.relpath(path, REPO), f.read()


FILES = {name: text for name, text in text_files() if name != "tests/test_references.py"}


def facts_sections():
    with open(os.path.join(REPO, "docs", "facts.md"), encoding="utf-8") as f:
        return {m.group(1).strip() for m in re.finditer(r"^### (.+)$", f.read(), re.M)}


@pytest.mark.parametrize("name", sorted(FILES))
def test_references_resolve(name):
    text = FILES[name]
    assert not FOREIGN.search(text), f"{name} points outside the repository: {FOREIGN.search(text).group(0)}"
    missing = [p for p in PATH.findall(text) if not os.path.exists(os.path.join(REPO, p.rstrip(".")))]
    assert not missing, f"{name} names files that are not in the repository: {missing}"
    sections = facts_sections()
    cited = [" ".join(s.split()).rstrip(".") for s in SECTION.findall(text)]
    assert set(cited) <= sections, f"{name} cites missing docs/facts.md sections: {set(cited) - sections}"
    if name.endswith(".md"):
        here = os.path.dirname(os.path.join(REPO, name))
        links = [u for u in LINK.findall(text) if "://" not in u]
        assert all(os.path.exists(os.path.join(here, u)) for u in links), (name, links)
