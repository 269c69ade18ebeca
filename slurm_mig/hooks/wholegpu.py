"""Dynamic mode: a job given whole GPUs (`--gres=gpu:N`). Slurm does not share
such a GPU with shard jobs; the prolog makes it usable: MIG off where the GPU
switches without a reset (Hopper and later; back on at release), else one
full-size instance (destroyed at release like any other). While another job's
instances, or an instance a process still uses, are on the GPU (22.05 hands a
GPU to a whole-GPU job while a shard of it is still allocated), a batch job
goes back to the queue and any other waits, as a MIG job does
(hooks/admission.py)."""
from __future__ import annotations

from typing import Callable, List, Optional

from ..core.view import Held
from ..errors import NodeProblem
from ..log import JobLog
from ..node.context import NodeContext
from ..node.occupancy import owner_of
from ..node.isolation import hand_over
from ..core.lifecycle import Record, State
from ..node.reconcile import reconcile, release
from ..nvml.errors import NVMLError
from .admission import Interactive, admit


def prolog(node: NodeContext, job: str, gpus: List[int], uid: Optional[int], wait_for_room: float = 0.0,
           send_back: Optional[Callable[[str], Optional[str]]] = None,
           user: Optional[Interactive] = None) -> None:
    """Hand the GPUs over; an NVML error undoes what was done (what cannot be
    undone stays owned by the record for reconcile), then is tried again once
    and means what nvml/errors.py says (hooks/admission.py).
    `send_back`, `wait_for_room` and `user` as for a MIG job (hooks/admission.py)."""
    def attempt() -> Optional[str]:
        rec = Record(job=job, state=State.PREPARE_STARTED, whole_gpus=gpus, uid=uid)
        try:
            return _hand_over(node, job, gpus, uid, rec)
        except NVMLError:
            if rec.updated:                  # written as intent (put sets updated): undo through it
                release(node, rec, retries=0, delay=0)
            raise

    admit(node, job, uid, wait_for_room, send_back, attempt,
          lambda **fields: Record(job=job, whole_gpus=gpus, uid=uid, **fields), "preparing the GPU",
          user=user)


def _hand_over(node: NodeContext, job: str, gpus: List[int], uid: Optional[int], rec: Record) -> Optional[str]:
    """Bind the job to its GPUs, or fail it with the reason; `rec` is written
    (as intent) before the first change. Returns why it must wait instead:
    another job's instances, or one a process still uses, are on a GPU."""
    d = node.devices.driver
    refused = Record(job=job, state=State.FAILED, whole_gpus=gpus, uid=uid)
    old = node.claim(job, uid, whole_gpus=gpus)
    if old is not None and old.state is State.PREPARE_COMPLETED:
        node.rebind(old, uid, old.uuids or [g.uuid for g in d.gpus(False) if g.index in gpus])
        return None
    live_gpus = d.gpus()
    if reconcile(node, gpus=live_gpus):
        live_gpus = d.gpus()
    by_index = {g.index: g for g in live_gpus}
    records = node.ledger.live()
    for n in gpus:
        g = by_index.get(n)
        if g is None or g.model is None:
            node.fail(job, uid, f"GPU {n} is not a known MIG-capable GPU here", refused)
            return None
        in_use = node.devices.in_use([g], records)
        busy = next((i for i in g.instances if i.uuid in in_use), None)
        if busy is not None:                      # also next to other jobs' instances (22.05)
            from .stuckgpu import ask
            ask(node.cfg, job, n, busy.uuid)      # so that later whole-GPU jobs go elsewhere
        owner = next((o for i in g.instances if (o := owner_of(i, records))), None)
        if owner is not None:
            return f"GPU {n} still holds MIG instances of {owner}"
        unknown = [i for i in g.instances if not i.known]
        if unknown:
            node.fail(job, uid, f"GPU {n} holds an instance of a profile the catalog does not "
                      f"know ({unknown[0].profile}); slurm-mig leaves it alone", refused)
            return None
        if busy is not None:
            return (f"GPU {n} holds {busy.profile} {busy.uuid}, which no job owns and processes "
                    f"still use (pids {', '.join(map(str, d.busy_pids(busy.uuid)))})")
    rec.gpu_uuids = [by_index[n].uuid for n in gpus]
    node.ledger.put(rec)
    visible = []
    for n in gpus:
        g = by_index[n]
        for i in g.instances:                     # idle leftovers: nobody owns them
            d.destroy(n, i.gi_id)
        if not g.mig_on:
            visible.append(g.uuid)
        elif not g.model.mig_toggle_needs_reset:
            rec.mig_off_gpus.append(n)            # intent first: release turns it back on
            node.ledger.put(rec)
            status = d.set_mig_mode(n, False)
            if status != 0:
                raise NodeProblem(f"GPU {n}: turning MIG mode off left it pending (NVML status "
                                  f"{status}); something still uses the GPU")
            visible.append(g.uuid)
        else:                                    # Ampere: one instance spanning the GPU
            full = max(g.model.profiles, key=lambda p: (p.mem_slots, p.slices))
            inst = d.create(n, full, full.starts[0])
            rec.instances.append(Held.of(inst))
            node.ledger.put(rec)
            visible.append(inst.uuid)
    if not hand_over(node, rec):            # isolate_devices: an Ampere instance's cap nodes
        return None
    node.handout.bind(job, uid, visible, rec)
    node.ledger.put(rec.move(State.PREPARE_COMPLETED))
    JobLog(job).info("whole GPU(s) %s bound: %s", ",".join(map(str, gpus)), ",".join(visible))
    return None
