"""Durable job -> instances records, one JSON file per job, and the node lock.

States: planned -> created -> bound -> released (or failed, for a job the
prolog refused). A record in planned/created seen while holding the node
lock belongs to a prolog that died: the lock is held from plan to bind.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Dict, Iterator, List, Optional

from ..core.syntax import check_job_id
from ..core.view import Held, Instance
from ..errors import BadInput, StateCorrupt
from ..fsutil import locked, read_json, write_json

LIVE = ("planned", "created", "bound", "releasing")
STATES = LIVE + ("released", "failed")


class Record:
    """One job's record.

    request: MIG profile -> count (dynamic mode); whole_gpus: GPUs the job got
    whole (--gres=gpu); static_idx: Slurm's IDX numbers (static mode).
    instances: what the job holds (core.view.Held); static: instances stay
    when the job ends; mig_off_gpus: GPUs handed over with MIG switched off,
    switched back on at release."""

    FIELDS = ("job", "state", "request", "whole_gpus", "static_idx", "instances", "reason",
              "uid", "updated", "static", "mig_off_gpus")

    def __init__(self, job: str, state: str, request: Optional[Dict[str, int]] = None,
                 whole_gpus: Optional[List[int]] = None, static_idx: Optional[List[int]] = None,
                 instances: Optional[List[Held]] = None, reason: str = "",
                 uid: Optional[int] = None, updated: float = 0.0, static: bool = False,
                 mig_off_gpus: Optional[List[int]] = None):
        self.job, self.state = job, state
        self.request: Dict[str, int] = request or {}
        self.whole_gpus: List[int] = whole_gpus or []
        self.static_idx: List[int] = static_idx or []
        self.instances: List[Held] = instances or []
        self.reason, self.uid, self.updated, self.static = reason, uid, updated, static
        self.mig_off_gpus: List[int] = mig_off_gpus or []

    def to_dict(self) -> dict:
        d = {name: getattr(self, name) for name in self.FIELDS}
        d["instances"] = [h._asdict() for h in self.instances]
        return d

    @classmethod
    def from_dict(cls, raw: dict) -> "Record":
        if not isinstance(raw, dict) or not isinstance(raw.get("instances", []), list):
            raise ValueError("not a record")
        return cls(**{**raw, "instances": [Held(**h) for h in raw.get("instances", [])]})

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def uuids(self) -> List[str]:
        return [i.uuid for i in self.instances if i.uuid]

    def owns(self, inst: Instance) -> bool:
        """The one ownership rule: one of this record's entries names `inst`."""
        return any(h.names(inst) for h in self.instances)


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
            rec = Record.from_dict(raw)
            check_job_id(rec.job)
            if rec.state not in STATES:
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
