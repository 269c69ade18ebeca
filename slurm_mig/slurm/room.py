"""Free slices for users: each node publishes its summary (core/roomtext.py)
into one of its Slurm node fields, and anyone reads every node's with one
`sinfo` (one controller request for the whole cluster, no root, no request
per job or per node).

Publishing costs one `scontrol update NodeName=... Extra=...` when the
summary changed: a detached process after a GPU job's Prolog or Epilog
(never the hook itself, so no job waits for it), serialised per node by a
lock under which the summary is computed, so the last one to run publishes
the newest state; of a burst, one runs, one waits and the rest leave. A node
sends at most one summary per `room_interval` seconds (30): the one waiting
waits out the interval, then reads the node, so what the controller pays is
bounded per node and not per job, however many jobs start and end.
`slurm-mig publish-room` (the reconcile timer) sends it again whatever the
last one was, for a controller that lost it. Only Slurm
administrators (root on the node) may set node fields, so users cannot
forge a summary; readers still accept only what the encoder writes.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import List, NamedTuple, Optional

from ..config import Config
from ..core.roomtext import NodeRoom, decode, encode
from ..errors import NodeProblem
from ..fsutil import atomic_write, locked, read_text, safe_dir
from .jobinfo import check_node_name, run_slurm, slurm_command

FIELDS = {"extra": "Extra", "comment": "Comment"}     # room_field -> Slurm's name (scontrol and sinfo -O)
USABLE = ("idle", "mixed")                             # node states in which a job can start
PUBLISH_TIMEOUT = 10.0


def publish(cfg: Config, node: str, force: bool = False) -> str:
    """Publish this node's summary when it changed (always with `force`);
    says what it did. SlurmUnavailable when scontrol failed."""
    from ..node.context import NodeContext
    from ..node.room import node_room
    check_node_name(node)
    if cfg.mode != "dynamic" or not cfg.room_field:
        return "not published (static mode, or room_field is empty)"
    last = os.path.join(cfg.state_dir, "room.published")
    safe_dir(cfg.state_dir, 0o700, "state_dir")
    with contextlib.ExitStack() as queued:
        try:           # one publisher waits, the others leave: the one waiting reads the node later
            queued.enter_context(locked(os.path.join(cfg.state_dir, "room.queue.lock"),
                                        timeout=cfg.lock_timeout if force else 0))
        except NodeProblem:
            return "left to the publisher already waiting"
        if not force:
            _wait_out_interval(last, cfg.room_interval)
        with locked(os.path.join(cfg.state_dir, "room.lock"), timeout=cfg.lock_timeout):
            queued.close()
            return _send(cfg, node, encode(node_room(NodeContext(cfg))), last, force)


def _wait_out_interval(last: str, interval: float) -> None:
    """Sleep until `interval` seconds after the last summary sent (`last`'s time)."""
    try:
        delay = os.lstat(last).st_mtime + interval - time.time()
    except FileNotFoundError:
        return
    if delay > 0:
        time.sleep(min(delay, interval))


def _send(cfg: Config, node: str, text: str, last: str, force: bool) -> str:
    body = text.split(";", 2)[-1]                      # what changed, not when
    if not force and read_text(last) == body:
        return "unchanged"
    run_slurm([slurm_command("scontrol", cfg.slurm_bin_dir), "update", f"NodeName={node}",
               f"{FIELDS[cfg.room_field]}={text}"], attempts=1, timeout=PUBLISH_TIMEOUT)
    atomic_write(last, body.encode(), durable=False)
    return f"published {len(text)} bytes"


class NodeLine(NamedTuple):
    node: str
    state: str
    mig: bool                      # the node offers mig GRES
    room: Optional[NodeRoom]       # None: nothing published (or not slurm-mig's)

    @property
    def usable(self) -> bool:
        return self.state.rstrip("+").lower() in USABLE


def parse_sinfo(text: str) -> List[NodeLine]:
    """`sinfo -h -N -O NodeList:|,StateLong:|,Gres:|,<field>:|` -> one line per
    node (sinfo repeats a node once per partition)."""
    lines, seen = [], set()
    for row in text.splitlines():
        cells = row.split("|")
        if len(cells) < 4 or cells[0] in seen:
            continue
        seen.add(cells[0])
        lines.append(NodeLine(cells[0], cells[1], "mig:" in cells[2], decode("|".join(cells[3:-1]))))
    return sorted(lines)


def cluster_room(field: str, bin_dir: str = "", partition: Optional[str] = None,
                 nodes: Optional[str] = None) -> List[NodeLine]:
    argv = [slurm_command("sinfo", bin_dir), "-h", "-N", "-O",
            f"NodeList:|,StateLong:|,Gres:|,{FIELDS[field]}:|"]
    argv += ["-p", partition] if partition else []
    argv += ["-n", nodes] if nodes else []
    return parse_sinfo(run_slurm(argv, attempts=2))


def age(room: NodeRoom, now: Optional[float] = None) -> int:
    return max(0, int((now or time.time()) - room.time))
