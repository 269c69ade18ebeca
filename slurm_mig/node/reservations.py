"""Places that Prologs waiting for room hold (core/reservation.py), kept in
`state_dir/reservations.json` so that every Prolog plans around them. Read
and written under the node lock. An entry past its `until` (a Prolog killed
while it waited) is ignored and dropped at the next write; an entry that is
not well formed is ignored: a reservation only ever narrows where others
may go, so losing one costs a wait, never a wrong placement.
"""
from __future__ import annotations

import math
import os
import time
from typing import List, Optional

from ..core.reservation import Reservation
from ..core.syntax import check_job_id
from ..errors import BadInput, StateCorrupt
from ..fsutil import read_json, write_json
from ..log import log

FILE = "reservations.json"


def load(state_dir: str, now: Optional[float] = None) -> List[Reservation]:
    """The reservations in force."""
    now = time.time() if now is None else now
    return [r for r, until in _entries(state_dir) if until > now]


def hold(state_dir: str, r: Reservation, until: float) -> None:
    """Record (or replace) job r.job's reservation until `until` (time.time())."""
    now = time.time()
    kept = [(x, u) for x, u in _entries(state_dir) if x.job != r.job and u > now]
    _write(state_dir, kept + [(r, until)])


def drop(state_dir: str, job: str) -> None:
    """Forget job's reservation (it bound, failed or went back to the queue)."""
    entries = _entries(state_dir)
    kept = [(x, u) for x, u in entries if x.job != job and u > time.time()]
    if len(kept) != len(entries):
        _write(state_dir, kept)


def _entries(state_dir: str) -> List[tuple]:
    path = os.path.join(state_dir, FILE)
    if not os.path.lexists(path):
        return []
    try:
        doc = read_json(path, "reservations", hint="")
    except StateCorrupt as e:
        log.warning("%s; ignored", e)
        return []
    out = []
    for e in doc if isinstance(doc, list) else []:
        try:
            starts = tuple((_int(s, 0, 63), _int(n, 1, 64)) for s, n in e["starts"])
            until = float(e["until"])
            if not math.isfinite(until):
                raise ValueError(until)
            out.append((Reservation(check_job_id(e["job"]), _int(e["gpu"], 0, 1023), starts,
                                    _int(e["slices"], 0, 64)), until))
        except (BadInput, KeyError, TypeError, ValueError):
            log.warning("reservation %r is not well formed; ignored", e)
    return out


def _int(value, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(value)
    return value


def _write(state_dir: str, entries: List[tuple]) -> None:
    write_json(os.path.join(state_dir, FILE),
               [{"job": r.job, "gpu": r.gpu, "starts": [list(s) for s in r.starts], "slices": r.slices,
                 "until": until} for r, until in entries])
