"""This node's GPUs through NVML, for a hook or a verb: the driver (opened on
first use), the UUIDs of the GPUs present, live instances, and which
instances processes use."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Set, Tuple

from ..errors import NodeProblem

if TYPE_CHECKING:      # imported where used: the epilog needs no planner
    from ..core.lifecycle import Record
    from ..core.view import Gpu, Instance
    from ..nvml.driver import Driver


class NodeDevices:
    def __init__(self, backend: str):
        self.backend = backend
        self._local: Optional[Set[str]] = None
        self._driver: Optional[Driver] = None

    @property
    def driver(self) -> "Driver":
        if self._driver is None:
            from ..nvml.backend import open_driver
            self._driver = open_driver(self.backend)
        return self._driver

    def local_uuids(self) -> Optional[Set[str]]:
        """UUIDs of this node's GPUs (read once), None while NVML cannot list them."""
        from ..nvml.errors import NVMLError
        if self._local is None:
            try:
                self._local = {g.uuid for g in self.driver.gpus(False)}
            except (NVMLError, NodeProblem):
                return None
        return self._local

    def live_instances(self, gpus: Optional[List[int]] = None) -> Dict[Tuple[int, int], "Instance"]:
        d = self.driver
        indices = range(d.count()) if gpus is None else gpus
        return {(i.gpu, i.gi_id): i for g in indices for i in d.gpu(g).instances}

    def in_use(self, gpus: List["Gpu"], records: List["Record"]) -> Set[str]:
        """UUIDs of instances no record owns that processes run on: never idle."""
        return {i.uuid for g in gpus for i in g.instances
                if i.uuid and not any(r.owns(i) for r in records) and self.driver.busy_pids(i.uuid)}
