"""The package's layers import only downwards (docs/architecture.md).

Every import in every module, also the ones inside functions, is resolved to
the package module it names and checked against the layer table. Nothing
imports the CLI; only the NVML backend factory and the CLI's `sim` verbs
import the simulator; nothing in the package starts Slurm daemons.
"""
import ast
import os

import pytest

import slurm_mig

ROOT = os.path.dirname(slurm_mig.__file__)

# Lower number = lower layer. A module may import its own layer or below.
LAYERS = {
    "errors": 0, "log": 0, "fsutil": 0, "installed": 0, "__init__": 0,
    "core": 1,
    "config": 2, "sim": 2,
    "nvml": 3,
    "node": 4,
    "slurm": 5,
    "hooks": 6,
    "cli": 7, "__main__": 7,
}
SIM_IMPORTERS = {"slurm_mig.nvml.backend", "slurm_mig.cli.sim"}


def modules():
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__") if rel.endswith(".__init__") else rel, path


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__" if len(parts) == 1 else parts[1]]


def imports(module: str, path: str):
    """(line, imported package module) for every import of the package."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "slurm_mig":
                    yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "slurm_mig":
                target = node.module
            else:
                continue
            # `from . import x` names a submodule x where one exists
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield node.lineno, sub if _exists(sub) else target


def _exists(module: str) -> bool:
    rel = os.path.join(os.path.dirname(ROOT), *module.split("."))
    return os.path.exists(rel + ".py") or os.path.isdir(rel)


ALL = sorted(modules())


def test_the_table_covers_every_module():
    assert len(ALL) > 30
    for module, _ in ALL:
        layer(module)          # KeyError names a folder missing from LAYERS


@pytest.mark.parametrize("module,path", ALL, ids=[m for m, _ in ALL])
def test_imports_point_down(module, path):
    for line, target in imports(module, path):
        assert layer(target) <= layer(module), f"{path}:{line}: {module} imports {target}, a higher layer"
        if target.startswith("slurm_mig.cli"):
            assert module.startswith("slurm_mig.cli") or module == "slurm_mig.__main__", \
                f"{path}:{line}: only the CLI imports the CLI"
        if target.startswith("slurm_mig.sim") and not module.startswith("slurm_mig.sim"):
            assert module in SIM_IMPORTERS, f"{path}:{line}: {module} imports the simulator"


@pytest.mark.parametrize("module,path", ALL, ids=[m for m, _ in ALL])
def test_core_does_no_io(module, path):
    if not module.startswith("slurm_mig.core"):
        return
    banned = {"subprocess", "socket", "pynvml", "fcntl", "shutil"}
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for n in names:
            assert n.split(".")[0] not in banned, f"{path}:{node.lineno}: the pure core imports {n}"


def test_nothing_installed_starts_slurm_daemons():
    for _, path in ALL:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for daemon in ("slurmctld", "slurmd\"", "munged"):
            assert daemon not in text, f"{path} mentions {daemon}: the dev cluster is tests/harness"


def test_no_import_cycle():
    graph = {m: {t for _, t in imports(m, p) if t != m} for m, p in ALL}
    done, stack = set(), []

    def visit(m):
        if m in stack:
            cycle = stack[stack.index(m):] + [m]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if m in done:
            return
        stack.append(m)
        for t in graph.get(m, ()):
            visit(t)
        stack.pop()
        done.add(m)

    for m in graph:
        visit(m)
