"""What a hook or a verb holds on one node: the config, the ledger, the GPUs
(node/devices.py) and what the job is handed (node/handout.py); and the steps
of a job's bookkeeping that span the ledger and the handout: claiming its
record, binding again, failing it alone."""
from __future__ import annotations

import time
from typing import List, Optional

from ..config import Config
from ..core.lifecycle import IllegalTransition, Record, State
from ..log import JobLog
from . import counters
from .devices import NodeDevices
from .handout import Handout
from .ledger import Ledger

# The reason of the record an Epilog leaves for a job it found no record of:
# a Prolog still waiting for room sees it and gives up instead of binding.
EPILOG_FIRST = "the epilog ran before the prolog bound anything"


class NodeContext:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.devices = NodeDevices(cfg.backend)
        self.handout = Handout(cfg.run_dir, cfg.dcgm_job_mapping_dir)
        self.ledger = Ledger(cfg.state_dir, cfg.lock_timeout, local_gpus=self.devices.local_uuids)
        self.started = time.time()

    def rebind(self, rec: Record, uid: Optional[int], visible: Optional[List[str]] = None) -> None:
        """A prolog re-run for a bound job: the same devices (`visible`, default
        its instances), and the record touched (reconcile spares records
        written after its Slurm query started)."""
        self.handout.bind(rec.job, uid, visible or rec.uuids, rec)
        self.ledger.put(rec)

    def claim(self, job: str, uid: Optional[int], **ident) -> Optional[Record]:
        """The asking job's own record (Record.same_job), or None: a live record
        of an earlier job with this id is moved aside for reconcile, which
        releases its instances when idle. Under the node lock."""
        rec = self.ledger.get(job)
        if rec is None:
            return None
        if rec.same_job(job, uid, gpu_uuids=self.devices.local_uuids(), **ident):
            return rec
        if rec.live and rec.static:          # static instances stay: only the record closes
            self.ledger.put(rec.move(State.RELEASED, "job id reused by a newer job"))
        elif rec.live:
            JobLog(job).warning("the live record of an earlier job %s (uid %s, %s) is another "
                                "job's: moved aside for reconcile", job, rec.uid, rec.state.value)
            self.ledger.stash(rec)
        return None

    def ended_since_start(self, job: str) -> bool:
        """An Epilog for `job` ran after this context was made (see epilog.py)."""
        rec = self.ledger.get(job)
        return rec is not None and rec.state is State.RELEASED and rec.updated >= self.started \
            and rec.reason == EPILOG_FIRST

    def fail(self, job: str, uid: Optional[int], reason: str, record: Optional[Record] = None,
             keep_record: bool = False) -> None:
        """Fail only this job: record why; the TaskProlog prints it and exits 1.
        `record`: a new FAILED record naming what the job asked for;
        keep_record: the job's record still owns something to clean, so it
        stays as it is."""
        JobLog(job).error("job refused: %s", reason)
        counters.bump(self.cfg.state_dir, "jobs_failed")
        if not keep_record:
            rec = record or Record(job=job, state=State.FAILED, uid=uid)
            if rec.state is not State.FAILED or rec.instances:
                raise IllegalTransition(f"job {job}: a refused job's record is a new one, "
                                        f"not one in state {rec.state.name}")
            rec.reason = reason
            self.ledger.put(rec)
        self.handout.refuse(job, uid, reason)
