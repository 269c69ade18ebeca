"""The one vocabulary for GPUs and instances, and who occupies them. Pure.

The NVML driver reads `Gpu` and `Instance` values; the ledger names what a job
holds with `Held` entries; the planner sees a `GpuView` of `Occupied` instances,
each with its `Owner` (None: idle).
Every "is this instance that job's?" question goes through `Held.names`, and
every overlap question through `overlaps`.
"""
from __future__ import annotations

from enum import Enum
from typing import NamedTuple, Optional, Tuple

from .catalog import GpuModel


class Holder(str, Enum):
    """Who keeps an instance from being reused or destroyed (the values are
    the status document's `owner_kind`)."""
    JOB = "job"                          # a live record of that job owns it
    IN_USE = "in_use"                    # no record owns it, processes run on it
    QUARANTINED = "quarantined"          # no readable record owns it, an unreadable one may
    UNKNOWN_PROFILE = "unknown_profile"  # a profile the catalog does not know: left alone
    UNREADABLE = "unreadable"            # the ledger cannot be read (status by a non-root user)


class Owner(NamedTuple):
    """An instance's owner: a job (`job` its id) or another reason it is taken."""
    holder: Holder
    job: Optional[str] = None

    def __str__(self) -> str:
        return f"job {self.job}" if self.holder is Holder.JOB else _SHOWN[self.holder]


_SHOWN = {Holder.IN_USE: "processes no job owns", Holder.QUARANTINED: "unknown (a ledger record is quarantined)",
          Holder.UNKNOWN_PROFILE: "unknown profile", Holder.UNREADABLE: "unknown (ledger unreadable)"}
IN_USE, QUARANTINED, UNKNOWN_PROFILE, UNREADABLE = (Owner(h) for h in _SHOWN)


def job_owner(job: str) -> Owner:
    return Owner(Holder.JOB, job)


def overlaps(a_start: int, a_size: int, b_start: int, b_size: int) -> bool:
    """Two placements (start, size in memory slots) share a memory slot."""
    return a_start < b_start + b_size and b_start < a_start + a_size


class Instance(NamedTuple):
    """One GPU instance as NVML reports it, with its (first) compute instance."""
    gpu: int
    profile_id: int
    profile: str          # catalog name, or NVML's for a profile the catalog lacks
    gi_id: int
    start: int
    size: int             # memory slots
    slices: int           # compute slices
    ci_id: Optional[int] = None
    uuid: Optional[str] = None
    ci_count: int = 0
    known: bool = True    # the catalog knows this profile on this GPU model


class Gpu(NamedTuple):
    """A GPU as NVML reports it. A GPU without MIG support has mig_capable False."""
    index: int
    name: str
    uuid: str
    minor: int
    pci_device_id: int    # NVML's pciDeviceId (device << 16 | vendor)
    model: Optional[GpuModel]
    mig_capable: bool
    mig_on: bool
    mig_pending_on: bool
    instances: Tuple[Instance, ...] = ()

    @property
    def model_key(self) -> str:
        return self.model.key if self.model else "unknown"


class Held(NamedTuple):
    """A ledger entry: an instance a job holds, or is about to (uuid and gi_id
    are None until creation finished)."""
    gpu: int
    profile_id: int
    profile: str
    start: int
    size: int
    gi_id: Optional[int] = None
    ci_id: Optional[int] = None
    uuid: Optional[str] = None

    @classmethod
    def of(cls, inst: Instance) -> "Held":
        return cls(gpu=inst.gpu, profile_id=inst.profile_id, profile=inst.profile,
                   start=inst.start, size=inst.size, gi_id=inst.gi_id, ci_id=inst.ci_id,
                   uuid=inst.uuid)

    def names(self, inst: Instance) -> bool:
        """This entry is that live instance: same UUID, or, for an entry written
        before creation finished or an instance whose CI is already gone (a
        destroy half done), the same profile at the same place (and GI id)."""
        if inst.gpu != self.gpu:
            return False
        if self.uuid and inst.uuid:
            return self.uuid == inst.uuid
        return self.profile_id == inst.profile_id and self.start == inst.start and (
            self.gi_id is None or self.gi_id == inst.gi_id)


class Occupied(NamedTuple):
    """An instance as the planner sees it; owner None means idle (reusable)."""
    gpu: int
    profile_id: int
    start: int
    size: int
    slices: int
    gi_id: int
    owner: Optional[Owner] = None
    uuid: Optional[str] = None


class GpuView(NamedTuple):
    """One GPU the planner may place on, with what occupies it; whole_by: the
    job holding it whole (nothing may be placed on it)."""
    index: int
    model: GpuModel
    mig_enabled: bool = True
    occupied: Tuple[Occupied, ...] = ()
    whole_by: Optional[str] = None

    @property
    def busy(self) -> Tuple[Occupied, ...]:
        return tuple(s for s in self.occupied if s.owner is not None)

    @property
    def idle(self) -> Tuple[Occupied, ...]:
        return tuple(s for s in self.occupied if s.owner is None)

    def free_memory_slots(self) -> int:
        return self.model.memory_slots - sum(s.size for s in self.busy)


def occupied(inst: Instance, owner: Optional[Owner]) -> Occupied:
    """`inst` for the planner; an instance of an unknown profile is never idle."""
    return Occupied(gpu=inst.gpu, profile_id=inst.profile_id, start=inst.start, size=inst.size,
                    slices=inst.slices, gi_id=inst.gi_id, uuid=inst.uuid,
                    owner=owner if inst.known or owner else UNKNOWN_PROFILE)
