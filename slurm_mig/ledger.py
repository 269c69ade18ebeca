"""Durable job -> instances records, one JSON file per job, and the node lock.

States: planned -> created -> bound -> released (or failed, for a job the
prolog refused). A record in planned/created seen while holding the node
lock belongs to a prolog that died: the lock is held from plan to bind.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator, List, Optional

from .errors import BadInput, StateCorrupt
from .fsutil import locked, read_json, write_json
from .request import check_job_id

LIVE = ("planned", "created", "bound", "releasing")
STATES = LIVE + ("released", "failed")


class Record:
    """One job's record. instances: dicts with gpu, gi_id, ci_id, uuid, profile,
    start, size; static: instances stay when the job ends (static mode);
    mig_off_gpus: GPUs given whole with MIG turned off (dynamic mode)."""

    FIELDS = ("job", "state", "request", "instances", "reason", "uid", "updated", "static",
              "mig_off_gpus")

    def __init__(self, job: str, state: str, request: Optional[dict] = None,
                 instances: Optional[List[dict]] = None, reason: str = "",
                 uid: Optional[int] = None, updated: float = 0.0, static: bool = False,
                 mig_off_gpus: Optional[List[int]] = None):
        self.job, self.state, self.request = job, state, request or {}
        self.instances: List[dict] = instances or []
        self.reason, self.uid, self.updated, self.static = reason, uid, updated, static
        # GPUs handed to this job whole with MIG switched off; switched back on at release.
        self.mig_off_gpus: List[int] = mig_off_gpus or []

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.FIELDS}

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def uuids(self) -> List[str]:
        return [i["uuid"] for i in self.instances if i.get("uuid")]


class Ledger:
    def __init__(self, state_dir: str, lock_timeout: float = 120.0):
        self.dir = state_dir
        self.jobs_dir = os.path.join(state_dir, "jobs")
        self.lock_timeout = lock_timeout

    def ensure(self) -> None:
        """Create the root-only state directory; tighten it if it exists."""
        for d in (self.dir, self.jobs_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.ensure()
        with locked(os.path.join(self.dir, "node.lock"), self.lock_timeout):
            yield

    def _path(self, job: str) -> str:
        return os.path.join(self.jobs_dir, check_job_id(job) + ".json")

    def get(self, job: str) -> Optional[Record]:
        path = self._path(job)
        if not os.path.exists(path):
            return None
        return self._parse(path)

    def _parse(self, path: str) -> Record:
        raw = read_json(path, "ledger record")
        try:
            rec = Record(**raw)
            check_job_id(rec.job)
            if rec.state not in STATES or not isinstance(rec.instances, list):
                raise ValueError(rec.state)
        except (TypeError, ValueError, BadInput) as e:
            raise StateCorrupt(f"ledger record {path} is malformed ({e}); "
                               "move it aside and run `slurm-mig reconcile`") from e
        return rec

    def put(self, rec: Record) -> None:
        rec.updated = time.time()
        write_json(self._path(rec.job), rec.to_dict())

    def records(self) -> List[Record]:
        if not os.path.isdir(self.jobs_dir):
            return []
        names = sorted(n for n in os.listdir(self.jobs_dir) if n.endswith(".json"))
        return [self._parse(os.path.join(self.jobs_dir, n)) for n in names]

    def live(self) -> List[Record]:
        return [r for r in self.records() if r.live]

    def prune(self, older_than: float = 86400.0) -> int:
        """Drop released/failed records older than `older_than` seconds."""
        now, n = time.time(), 0
        for r in self.records():
            if not r.live and now - r.updated > older_than:
                os.unlink(self._path(r.job))
                n += 1
        return n
