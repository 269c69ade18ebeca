"""A job's record on a node, its states, and the one table of transitions
between them. Pure: node/ledger.py stores records, the hooks and reconcile
move them, always through `Record.move`.

States, as NVIDIA's Kubernetes DRA driver keeps a claim's in its checkpoint
(PrepareStarted, then PrepareCompleted once the devices are the workload's):

    PREPARE_STARTED   intent written before the first change to the node
    CREATED           instances made, not yet handed to the job
    PREPARE_COMPLETED the job's devices written: the job may use them
    RELEASING         the job is over (or its Prolog gave up); what it held
                      is being destroyed, and stays named here until it is
    RELEASED, FAILED  closed: nothing held (FAILED: the Prolog refused the job)

A record seen in PREPARE_STARTED or CREATED by a holder of the node lock
belongs to a Prolog that died (the lock is held from plan to bind):
reconcile undoes it, as the DRA driver rolls back a claim it finds
PrepareStarted. On disk a state keeps the name the releases before used
(planned, created, bound, ...), so the previous release reads what this
one writes.

A job id is not an identity (Slurm reuses ids): a record names its job by
id, uid, request, node and GPU UUIDs, and carries a nonce.
"""
from __future__ import annotations

import os
from enum import Enum
from typing import Dict, FrozenSet, List, Mapping, Optional

from .view import Held, Instance

# The record format: a minor version adds fields older readers keep and ignore;
# a major one changes what fields mean, and older readers refuse it. 1.2 added
# the checksum node/ledger.py seals each file with, 1.3 `requeueable_since`.
SCHEMA = "1.3"


class State(str, Enum):
    PREPARE_STARTED = "planned"
    CREATED = "created"
    PREPARE_COMPLETED = "bound"
    RELEASING = "releasing"
    RELEASED = "released"
    FAILED = "failed"


S = State
# Every state change there is: from -> the states it may move to. A record is
# made in any state (a Prolog's intent, a static job bound at once, an Epilog's
# or a requeue's mark, a refused job); RELEASED and FAILED are final.
TRANSITIONS: Mapping[State, FrozenSet[State]] = {
    S.PREPARE_STARTED: frozenset({S.CREATED, S.PREPARE_COMPLETED, S.RELEASING, S.RELEASED}),
    S.CREATED: frozenset({S.PREPARE_COMPLETED, S.RELEASING, S.RELEASED}),
    S.PREPARE_COMPLETED: frozenset({S.RELEASING, S.RELEASED}),
    S.RELEASING: frozenset({S.RELEASING, S.RELEASED}),     # a release retried stays releasing
    S.RELEASED: frozenset(),
    S.FAILED: frozenset(),
}
LIVE = frozenset(s for s, to in TRANSITIONS.items() if to)
# Live states no Prolog or Epilog is working on once the node lock is free:
# a hook died or gave up mid-way, and reconcile finishes them.
UNFINISHED = frozenset({S.PREPARE_STARTED, S.CREATED, S.RELEASING})


class IllegalTransition(RuntimeError):
    """A state change the table does not have: a bug, never a node's state."""


class Record:
    """One job's record.

    request: MIG profile -> count (dynamic mode); whole_gpus: GPUs the job got
    whole (--gres=gpu); static_idx: Slurm's IDX numbers (static mode).
    instances: what the job holds (core.view.Held); static: instances stay
    when the job ends; mig_off_gpus: GPUs handed over with MIG switched off,
    switched back on at release. node, gpu_uuids and nonce tell two jobs with
    one id apart; requeueable_since: when (epoch seconds) a batch job Slurm
    may requeue was planned here, so that an srun/salloc job may send it
    back to the queue while it is young (core/eviction.py; 0: never); `file` is the record's file name (not stored in it). Fields
    this version does not know (a newer minor schema) are kept in `extra` and
    written back unchanged."""

    FIELDS = ("job", "state", "request", "whole_gpus", "static_idx", "instances", "reason",
              "uid", "updated", "static", "mig_off_gpus", "node", "gpu_uuids", "nonce", "requeueable_since")

    def __init__(self, job: str, state: State, request: Optional[Mapping[str, int]] = None,
                 whole_gpus: Optional[List[int]] = None, static_idx: Optional[List[int]] = None,
                 instances: Optional[List[Held]] = None, reason: str = "",
                 uid: Optional[int] = None, updated: float = 0.0, static: bool = False,
                 mig_off_gpus: Optional[List[int]] = None, node: str = "",
                 gpu_uuids: Optional[List[str]] = None, nonce: str = "", requeueable_since: float = 0.0):
        self.job, self._state = job, State(state)
        self.request: Dict[str, int] = dict(request or {})
        self.whole_gpus: List[int] = whole_gpus or []
        self.static_idx: List[int] = static_idx or []
        self.instances: List[Held] = instances or []
        self.reason, self.uid, self.updated, self.static = reason, uid, updated, static
        self.mig_off_gpus: List[int] = mig_off_gpus or []
        self.node, self.gpu_uuids = node, list(gpu_uuids or [])
        self.nonce = nonce or os.urandom(8).hex()
        self.requeueable_since = float(requeueable_since)
        self.file = job
        self.extra: Dict[str, object] = {}

    @property
    def state(self) -> State:
        return self._state

    def move(self, to: State, reason: Optional[str] = None) -> "Record":
        """Change state through TRANSITIONS (IllegalTransition otherwise);
        `reason`, when given, replaces the record's."""
        if to not in TRANSITIONS[self._state]:
            raise IllegalTransition(f"job {self.job}: record {self.file} cannot go from "
                                    f"{self._state.name} to {State(to).name}")
        self._state = State(to)
        if reason is not None:
            self.reason = reason
        return self

    def to_dict(self) -> dict:
        d = {**self.extra, "schema": SCHEMA}
        d.update({name: getattr(self, name) for name in self.FIELDS})
        d["state"] = self._state.value
        d["instances"] = [h._asdict() for h in self.instances]
        return d

    @classmethod
    def from_dict(cls, raw: dict) -> "Record":
        """A record of this schema, an older one (no `schema`: 1.0) or a newer
        minor one; ValueError for what is not a record."""
        if not isinstance(raw, dict) or not isinstance(raw.get("instances", []), list):
            raise ValueError("not a record")
        known = {k: v for k, v in raw.items() if k in cls.FIELDS}
        rec = cls(**{**known, "instances": [Held(**h) for h in raw.get("instances", [])]})
        rec.extra = {k: v for k, v in raw.items() if k not in cls.FIELDS and k != "schema"}
        return rec

    @property
    def live(self) -> bool:
        return self._state in LIVE

    @property
    def uuids(self) -> List[str]:
        return [i.uuid for i in self.instances if i.uuid]

    @property
    def aside(self) -> bool:
        """Moved aside for a newer job with the same id: a dead job's record."""
        return self.file != self.job

    def owns(self, inst: Instance) -> bool:
        """The one ownership rule: one of this record's entries names `inst`."""
        return any(h.names(inst) for h in self.instances)

    def same_job(self, job: str, uid: Optional[int], request: Optional[Mapping[str, int]] = None,
                 whole_gpus: Optional[List[int]] = None, static_idx: Optional[List[int]] = None,
                 gpu_uuids: Optional[set] = None) -> bool:
        """Is this the record of the job asking (a re-run of its prolog), not
        of an earlier job that had the same id? `gpu_uuids`: the GPUs present.
        `node` is not compared: slurmd and a shell name the node differently."""
        return (self.job == job and self.uid == uid
                and self.request == dict(request or {}) and self.whole_gpus == (whole_gpus or [])
                and self.static_idx == (static_idx or [])
                and (gpu_uuids is None or set(self.gpu_uuids) <= gpu_uuids))
