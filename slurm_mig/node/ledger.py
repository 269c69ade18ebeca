"""Where job records (core/lifecycle.py) live: one JSON file per job, and the
node lock.

`jobs/<id>.json` is the current job's record; a live record that a new job
with the same id would overwrite is moved aside first (`jobs/<id>~<nonce>.json`), where reconcile
treats it as a dead job's. Closed records (released, failed) live apart,
in `jobs/closed/`, so that what every hook reads (the open records) grows
with the jobs on the node, never with its history; `slurm-mig reconcile`
prunes closed records a day old by their files' times, without reading them.
A record that cannot be read (truncated, hand-edited) is moved to
`quarantine/` by the first hook or reconcile that meets it under the node
lock, never a reason to fail the node; while one is there, an instance no
readable record owns may be its job's, so nothing treats it as idle
(node/occupancy.py) until Slurm says every job on the node has a readable
record, or the admin says so (node/reconcile.py).
Records of another node (a state_dir shared or
copied) are never read as this node's: those whose GPUs are not here. GPU
UUIDs decide, not the node name, which differs between slurmd
(SLURMD_NODENAME) and an admin's shell.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Set, Tuple

from ..core.lifecycle import SCHEMA, Record
from ..core.syntax import check_job_id
from ..errors import BadInput, NodeProblem, StateCorrupt
from ..fsutil import locked, os_problem, read_json, safe_dir, write_json

# From schema 1.2 a record file carries the SHA-256 of its content, as the DRA
# driver checksums its checkpoint: one changed by hand or damaged without
# breaking the JSON is quarantined like an unreadable one. A record without one
# (written before 1.2) is read as it is, and so is one an older release
# rewrote: it keeps the checksum as an unknown field but writes its own schema.
SEALED_SINCE = (1, 2)
_FILE = re.compile(r"([0-9]{1,10})(~[0-9a-f]{1,32})?")
_SCHEMA = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}")


def this_node(env: Mapping[str, str] = os.environ) -> str:
    """The node's Slurm name: SLURMD_NODENAME under slurmd, else the short
    host name (os.uname: the hooks need not load the socket module)."""
    return env.get("SLURMD_NODENAME") or os.uname().nodename.split(".")[0]


def seal(raw: dict) -> dict:
    """`raw` with the checksum of its content."""
    return {**raw, "checksum": _digest(raw)}


def _digest(raw: dict) -> str:
    body = json.loads(json.dumps({k: v for k, v in raw.items() if k != "checksum"}))  # as read back
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Ledger:
    """`local_gpus`: the UUIDs of this node's GPUs (asked when needed); without
    it every record counts as this node's."""

    def __init__(self, state_dir: str, lock_timeout: float = 120.0, node: Optional[str] = None,
                 local_gpus: Optional[Callable[[], Optional[Set[str]]]] = None):
        self.dir = state_dir
        self.jobs_dir = os.path.join(state_dir, "jobs")
        self.closed_dir = os.path.join(self.jobs_dir, "closed")
        self.quarantine_dir = os.path.join(state_dir, "quarantine")
        self._locked = False
        self._skipped: Set[str] = set()     # unreadable records met without the lock
        self.lock_timeout = lock_timeout
        self.node = node or this_node()
        self.local_gpus = local_gpus

    def ours(self, rec: Record) -> bool:
        """The record is this node's: it names no GPU, or only GPUs present here
        (or the GPUs cannot be listed now: the hooks' NVML handling takes over)."""
        if not rec.gpu_uuids or self.local_gpus is None:
            return True
        local = self.local_gpus()
        return local is None or set(rec.gpu_uuids) <= local

    def ensure(self) -> None:
        """Create the root-only state directory, or refuse one others could write."""
        for d in (self.dir, self.jobs_dir, self.closed_dir):
            safe_dir(d, 0o700, "state_dir")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.ensure()
        with locked(os.path.join(self.dir, "node.lock"), self.lock_timeout):
            self._locked = True
            try:
                yield
            finally:
                self._locked = False

    def _readable(self, path: str) -> Optional[Record]:
        """The record at `path`, or None for an unreadable one: moved to
        quarantine/ when the node lock is held, else skipped and counted
        among the quarantined (the next hook moves it there)."""
        try:
            return self._parse(path)
        except StateCorrupt as e:
            if not self._locked:
                self._skipped.add(os.path.basename(path))
            else:
                safe_dir(self.quarantine_dir, 0o700, "state_dir")
                target = os.path.join(self.quarantine_dir, f"{os.path.basename(path)}.{time.time():.0f}")
                os.rename(path, target)
                from ..log import log
                log.warning("%s; moved to %s: instances no readable record owns are kept until "
                            "`slurm-mig reconcile` finds every job Slurm runs here recorded", e, target)
            return None

    def quarantined(self) -> List[str]:
        """Unreadable records, moved aside or about to be (their jobs'
        instances are unknown)."""
        return sorted(set(self._moved_aside()) | self._skipped)

    def _moved_aside(self) -> List[str]:
        try:
            return os.listdir(self.quarantine_dir)
        except FileNotFoundError:
            return []

    def forget_quarantined(self) -> List[str]:
        """Delete the quarantined records (their instances are then unowned)."""
        names = self._moved_aside()
        for name in names:
            os.unlink(os.path.join(self.quarantine_dir, name))
        return names

    def _path(self, name: str, closed: bool = False) -> str:
        if not _FILE.fullmatch(name):
            check_job_id(name)
        return os.path.join(self.closed_dir if closed else self.jobs_dir, name + ".json")

    def _exists(self, path: str) -> bool:
        try:
            os.lstat(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise os_problem(path, e, "read the ledger record") from e
        return True

    def has(self, job: str) -> bool:
        """Whether job id `job` has a record, open or closed, without reading it."""
        job = check_job_id(job)
        return self._exists(self._path(job)) or self._exists(self._path(job, closed=True))

    def _current(self, name: str) -> Optional[Record]:
        """The newer of the open and the closed record of `name` (both exist
        only after a crash between writing one and removing the other)."""
        found = [self._readable(p) for p in (self._path(name), self._path(name, closed=True)) if self._exists(p)]
        found = [r for r in found if r is not None]
        return max(found, key=lambda r: r.updated) if found else None

    def get(self, job: str) -> Optional[Record]:
        """The current record of job id `job` (of whichever job had it last)."""
        rec = self._current(check_job_id(job))
        if rec is None:
            return None
        path = self._path(rec.file, closed=not rec.live)
        if not self.ours(rec) and (not rec.live or self.lost_gpus(rec)):
            return None      # closed, or of GPUs this node lost (reconcile closes it): nothing held here
        if not self.ours(rec):
            raise NodeProblem(f"{path} belongs to node {rec.node or '?'} (its GPUs are not here): "
                              f"state_dir {self.dir} is shared or copied; give each node its own "
                              "local state_dir")
        return rec

    def _parse(self, path: str) -> Record:
        raw = read_json(path, "ledger record", hint="")      # the caller quarantines it
        schema = str(raw.get("schema", "1.0")) if isinstance(raw, dict) else "1.0"
        if not _SCHEMA.fullmatch(schema):
            raise StateCorrupt(f"ledger record {path} has no readable schema ({schema!r})")
        if schema.split(".")[0] != SCHEMA.split(".")[0]:
            raise NodeProblem(f"ledger record {path} has schema {schema}, which this slurm-mig "
                              f"(schema {SCHEMA}) cannot read: a newer slurm-mig wrote it; install "
                              "that version again (or a later one) on this node")
        if tuple(map(int, schema.split("."))) >= SEALED_SINCE and "checksum" in raw \
                and raw["checksum"] != _digest(raw):
            raise StateCorrupt(f"ledger record {path} does not match its checksum (changed by hand, "
                               "or damaged)")
        try:
            rec = Record.from_dict({k: v for k, v in raw.items() if k != "checksum"}
                                   if isinstance(raw, dict) else raw)
            check_job_id(rec.job)
        except (TypeError, ValueError, BadInput) as e:
            raise StateCorrupt(f"ledger record {path} is malformed ({e})") from e
        rec.file = os.path.basename(path)[:-len(".json")]
        return rec

    def put(self, rec: Record) -> None:
        """Write `rec`; a live record of another job with the same id is moved
        aside first, never overwritten. Callers hold the node lock."""
        rec.updated, rec.node = time.time(), rec.node or self.node
        path = self._path(rec.file)
        if not rec.aside and os.path.lexists(path):
            old = self._parse(path)
            if old.nonce != rec.nonce and old.live:
                self.stash(old)
        target, other = (path, self._path(rec.file, closed=True)) if rec.live else \
            (self._path(rec.file, closed=True), path)
        if not rec.live:
            safe_dir(self.closed_dir, 0o700, "state_dir")
        write_json(target, seal(rec.to_dict()))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(other)

    def put_as_is(self, rec: Record) -> None:
        """Move a closed record to closed/ keeping its time (prune goes by it)."""
        safe_dir(self.closed_dir, 0o700, "state_dir")
        target = self._path(rec.file, closed=True)
        write_json(target, seal(rec.to_dict()))
        os.utime(target, (rec.updated, rec.updated))
        os.unlink(self._path(rec.file))

    def stash(self, rec: Record) -> None:
        """Move `rec` (the current record of its id) aside: another job's now."""
        old = self._path(rec.file)
        rec.file = f"{rec.job}~{rec.nonce if re.fullmatch('[0-9a-f]{1,32}', rec.nonce) else os.urandom(8).hex()}"
        os.rename(old, self._path(rec.file))

    def lost_gpus(self, rec: Record) -> bool:
        """`rec` is this node's (by name) but names GPUs no longer here: one
        was replaced (a new UUID, as after an RMA) or is missing."""
        return not self.ours(rec) and rec.node in ("", self.node)

    def split(self) -> Tuple[List[Record], List[Record]]:
        """The open records, read once: (this node's, stranded). Stranded ones
        name GPUs that are not here: this node's lost GPUs (`lost_gpus`) or
        another node's records (a shared or copied state_dir)."""
        found = self._open_records()
        return [r for r in found if self.ours(r)], [r for r in found if not self.ours(r)]

    def stranded(self) -> List[Record]:
        return self.split()[1]

    def records(self) -> List[Record]:
        """This node's open records."""
        return self.split()[0]

    def _open_records(self) -> List[Record]:
        """Every record among the open ones; one whose job has a newer closed
        record (a crash between the two writes) is not open any more."""
        try:
            listing = os.listdir(self.jobs_dir)
        except FileNotFoundError:
            return []
        except OSError as e:       # never "no records": that would show busy instances idle
            raise os_problem(self.jobs_dir, e, "read the ledger") from e
        names = sorted(n for n in listing
                       if n.endswith(".json") and _FILE.fullmatch(n[:-len(".json")]))
        recs = [r for r in (self._readable(os.path.join(self.jobs_dir, n)) for n in names) if r is not None]
        return [r for r in recs if not self._exists(self._path(r.file, closed=True))
                or self._current(r.file).updated <= r.updated]

    def live(self) -> List[Record]:
        return [r for r in self.records() if r.live]

    def prune(self, older_than: float = 86400.0) -> int:
        """Drop closed records older than `older_than` seconds, by file time.
        Closed records an earlier version left among the open ones move to
        closed/ first. Callers hold the node lock."""
        for rec in self.records():
            if not rec.live:
                self.put_as_is(rec)
        now, n = time.time(), 0
        try:
            entries = list(os.scandir(self.closed_dir))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False) and \
                    now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                os.unlink(entry.path)
                n += 1
        return n
