"""The simulated node's state file: one JSON document under an flock.

Every simulated NVML call is one transaction on this file, so separate
processes (concurrent prologs) see one consistent node.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Iterator, List

from ..core import catalog
from ..core.syntax import parse_gpu_spec
from ..errors import BadInput, StateCorrupt
from ..fsutil import atomic_write, locked, read_json, write_json

STATE_VERSION = 1


def random_uuid() -> str:
    """A random (version 4) UUID string, without importing uuid (hooks start fast)."""
    h = bytearray(os.urandom(16))
    h[6], h[8] = (h[6] & 0x0F) | 0x40, (h[8] & 0x3F) | 0x80
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def init_state(path: str, gpus: str, mig_enabled: bool = True, driver: str = "580.65.06") -> dict:
    models = parse_gpu_spec(gpus)
    cat = catalog.load()
    state = {
        "version": STATE_VERSION,
        "driver": driver,
        "gpus": [],
        "processes": [],
        "faults": [],
        "calls": {},
        "next_pid": 40000,
    }
    for i, key in enumerate(models):
        model = cat.model(key)
        mode = 1 if mig_enabled else 0
        state["gpus"].append({
            "model": model.key,
            "name": model.nvml_names[0],
            "pci_device_id": model.pci_device_ids[0],
            "uuid": "GPU-" + random_uuid(),
            "minor": i,
            "mig_current": mode,
            "mig_pending": mode,
            "reset_capable": True,
            "gis": [],
        })
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with locked(path + ".lock"):
        write_json(path, state, mode=0o644)
    from .devtree import make_tree
    make_tree(path, [g["minor"] for g in state["gpus"]])
    return state


class SimStore:
    """Locked read-modify-write access to a state file."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._cache_key = None
        self._cache = None
        self._depth = 0

    def check_exists(self) -> None:
        if not os.path.exists(self.path):
            raise BadInput(f"simulated node state {self.path} does not exist; "
                           "create it with `slurm-mig sim init STATE.json --gpus 2xH100-SXM5-80GB`")

    def _load(self) -> dict:
        state = read_json(self.path, "simulated node state",
                          "recreate it with `slurm-mig sim init`")
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION \
                or not isinstance(state.get("gpus"), list):
            raise StateCorrupt(f"simulated node state {self.path} is not a version-"
                               f"{STATE_VERSION} slurm-mig state file")
        return state

    @staticmethod
    def _key(st: os.stat_result) -> tuple:
        return st.st_ino, st.st_mtime_ns, st.st_size

    @contextlib.contextmanager
    def transaction(self) -> Iterator[dict]:
        """Yield the state; write it back if the caller set state['_dirty'],
        also when the call then raises (fault counters must persist).
        Inside session() the lock is already held; otherwise each transaction
        takes it. The parsed document is reused while the file is unchanged.
        Writes are atomic but not fsynced: this is a simulation."""
        if self._depth:
            yield from self._run(self._cache)
            return
        with self.session():
            yield from self._run(self._cache)

    def save(self, state: dict) -> None:
        """Write now (the lock is held by the caller's transaction): compact and
        without fsync, as every simulated NVML change rewrites the file."""
        state.pop("_dirty", None)
        atomic_write(self.path, json.dumps(state, separators=(",", ":")).encode(), mode=0o644,
                     durable=False)
        self._cache_key = self._key(os.stat(self.path))

    def _run(self, state: dict) -> Iterator[dict]:
        try:
            yield state
        finally:
            if state.pop("_dirty", False):
                self.save(state)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold the state lock across many calls (a batch of NVML reads)."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.check_exists()
        with locked(self.path + ".lock"):
            key = self._key(os.stat(self.path))
            if key != self._cache_key:
                self._cache, self._cache_key = self._load(), key
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0

    def read(self) -> dict:
        with self.transaction() as state:
            return state
