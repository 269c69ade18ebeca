"""The wait-or-requeue loop every dynamic-mode Prolog runs (MIG instances and
whole GPUs alike): try under the node lock; when what the job needs is held
by other jobs now, a batch job goes back to the queue (`send_back`), any other
waits up to `wait_for_room` seconds for an Epilog to free it, then fails alone
with the reason. An Epilog that ran meanwhile (the job was cancelled) ends it.
An srun or salloc job's user is told that it waits, and why it gave up; then
it is revoked (`Interactive`, slurm/notice.py), never left a dead allocation.
"""
from __future__ import annotations

import time
from typing import Callable, NamedTuple, Optional

from ..log import JobLog
from ..node import counters
from ..node.context import NodeContext
from ..node.handout import refusal
from ..nvml.errors import NVMLError, explain, node_problem
from ..core.lifecycle import Record, State

POLL_INTERVAL = 0.5
NVML_TRIES = 2            # an NVML error is retried once from a fresh read before it counts


class Interactive(NamedTuple):
    """An srun or salloc job, whose user waits at a terminal: `waiting(reason)`
    once when it starts to wait, `gave_up(text)` when it failed (it is then revoked)."""
    waiting: Callable[[str], None]
    gave_up: Callable[[str], None]


def admit(node: NodeContext, job: str, uid: Optional[int], wait_for_room: float,
          send_back: Optional[Callable[[str], Optional[str]]],
          attempt: Callable[[], Optional[str]], record: Callable[..., Record], doing: str,
          hold: Optional[Callable[[], Optional[Callable[[], None]]]] = None,
          user: Optional[Interactive] = None) -> None:
    """Run `attempt()` (under the node lock; None: the job is settled, bound
    or failed; or a string: why it must wait) until the job is settled. An
    NVML error `attempt` lets out (while `doing`) is tried again once, then
    means what nvml/errors.py says: a node problem, or the job fails.
    `record(state=..., reason=...)` makes the job's record; `hold()` runs
    once, under the lock, when the job starts to wait, and what it returns
    (if anything) right after, outside it; `user` is told then, and when
    the job fails."""
    jl = JobLog(job)
    deadline = time.monotonic() + wait_for_room
    reason_tail, nvml_errors, waited = "", 0, False
    while True:
        with node.ledger.lock():
            node.devices.driver                      # NVML that cannot even start is a node problem
            if node.ended_since_start(job):
                jl.info("the job ended (its epilog ran) while waiting for room; nothing bound")
                return
            try:
                reason = attempt()
            except NVMLError as e:
                nvml_errors += 1
                reason = explain(e, doing)
                jl.warning("%s (%d/%d)", reason, nvml_errors, NVML_TRIES)
                if nvml_errors < NVML_TRIES:
                    continue
                problem = node_problem(e, doing)
                if problem is not None:
                    raise problem from e
                break
            if reason is None:
                return
        if send_back is not None:
            not_requeued = send_back(reason)
            if not_requeued is None:
                with node.ledger.lock():
                    node.ledger.put(record(state=State.RELEASED, reason=f"requeued: {reason}"))
                counters.bump(node.cfg.state_dir, "requeues")
                jl.info("sent back to the queue: %s", reason)
                return
            jl.info("not sent back to the queue: %s", not_requeued)
            reason_tail, send_back = f"; not requeued: {not_requeued}", None
        if time.monotonic() >= deadline:
            break
        if not waited:
            waited = True
            then = None
            if hold is not None:
                with node.ledger.lock():
                    then = hold()
            if then is not None:
                then()
            if user is not None:
                user.waiting(reason)
        jl.info("waiting for room: %s", reason)
        time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
    with node.ledger.lock():
        if node.ended_since_start(job):
            return
        node.fail(job, uid, reason + reason_tail, record(state=State.FAILED))
    if user is not None:
        user.gave_up(refusal(job, reason + reason_tail))
