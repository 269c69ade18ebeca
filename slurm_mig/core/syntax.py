"""The syntax of values that come from users, jobs and admins, checked once.

SPEC (`mig:3g.40gb:2,mig:1g.10gb`, read into a MigRequest), job ids, IDX
lists (`0-2,5`) and GPU specs (`2xH100-80GB`). Pure: every value that becomes a file name or a count passes
through here first.
"""
from __future__ import annotations

import re
from typing import Dict, Iterator, List, Mapping

from ..errors import BadInput

MAX_COUNT = 64          # CUDA enumerates at most 64 MIG devices (MIG User Guide)
_PROFILE = re.compile(r"^\d+(c\.\d+)?g\.\d+gb(\+me|\+me\.all|\+gfx|-me)?$")
_JOB_ID = re.compile(r"[0-9]{1,10}")
_GPU_SPEC = re.compile(r"^(\d+)x([A-Za-z0-9.\-]+)$")
MAX_GPUS = 32           # GPUs per node, as in mig-minors


class MigRequest(Mapping[str, int]):
    """A job's MIG request, profile -> count: checked once where it comes in
    (Slurm's tres-per-node, SLURM_MIG_REQUEST, --request) and handed on in
    this form down to the planner. Immutable; str() is the SPEC form."""
    __slots__ = ("_counts",)

    def __init__(self, counts: Mapping[str, int]):
        from . import catalog      # not at import: job ids are checked on every hook's path
        names = catalog.load().all_profile_names()
        known = set(names) | {a for m in catalog.load().models.values() for p in m.profiles for a in p.aliases}
        for name, n in counts.items():
            if name not in known:
                raise BadInput(f"unknown MIG profile {name!r}; valid profiles: {', '.join(names)} "
                               "(and their other names, such as 3g.39gb)")
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_COUNT:
                raise BadInput(f"bad count {n!r} for {name}; expected 1..{MAX_COUNT}")
        if not counts:
            raise BadInput("empty MIG request; expected e.g. mig:3g.40gb:1")
        if sum(counts.values()) > MAX_COUNT:
            raise BadInput(f"request asks for {sum(counts.values())} MIG devices; at most {MAX_COUNT}")
        self._counts: Dict[str, int] = dict(sorted(counts.items()))

    @classmethod
    def parse(cls, spec: str) -> "MigRequest":
        """'mig:3g.40gb:2,mig:1g.10gb' -> {'1g.10gb': 1, '3g.40gb': 2}.

        The 'mig:' / 'gres:mig:' prefixes are optional; other GRES (e.g. shard)
        are ignored, as a request copied from Slurm holds them too.
        """
        if not isinstance(spec, str) or not spec.strip():
            raise BadInput("empty MIG request; expected e.g. mig:3g.40gb:1")
        counts: Dict[str, int] = {}
        for item in spec.split(","):
            parts = item.strip().lower().split(":")
            if parts and parts[0] in ("gres", "gres/mig"):
                parts = parts[1:] if parts[0] == "gres" else ["mig"] + parts[1:]
            if parts and parts[0] == "mig":
                parts = parts[1:]
            elif len(parts) >= 2 and not _PROFILE.match(parts[0]):
                continue     # another GRES in the same request
            if not parts or not parts[0] or len(parts) > 2:
                raise BadInput(f"malformed MIG request {item.strip()!r}; expected mig:PROFILE[:COUNT]")
            count_s = parts[1] if len(parts) == 2 else "1"
            if not count_s.isdigit() or not 1 <= int(count_s) <= MAX_COUNT:
                raise BadInput(f"bad count {count_s!r} for {parts[0]}; expected 1..{MAX_COUNT}")
            counts[parts[0]] = counts.get(parts[0], 0) + int(count_s)
        if not counts:
            raise BadInput(f"no MIG profile in request {spec!r}; expected e.g. mig:3g.40gb:1")
        return cls(counts)

    def __getitem__(self, name: str) -> int:
        return self._counts[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __hash__(self) -> int:
        return hash(tuple(self._counts.items()))

    def __str__(self) -> str:
        return ",".join(f"mig:{name}:{n}" for name, n in self._counts.items())

    def __repr__(self) -> str:
        return f"MigRequest({self._counts!r})"


def check_job_id(job: object) -> str:
    """Job ids are digits only: they become file names under root-owned dirs."""
    s = str(job) if job is not None else ""
    if not _JOB_ID.fullmatch(s):
        raise BadInput(f"invalid job id {job!r}; a job id is 1-10 digits")
    return s


def parse_idx(text: str) -> List[int]:
    """Slurm's index lists: '0-2,5' -> [0, 1, 2, 5]."""
    out = []
    for part in filter(None, text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if not m:
            raise BadInput(f"bad IDX list {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo or hi - lo > 1024:
            raise BadInput(f"bad IDX range {part!r}")
        out.extend(range(lo, hi + 1))
    return out


def parse_gpu_spec(spec: str) -> List[str]:
    """'2xH100-SXM5-80GB,1xA100-40GB' -> catalog model keys, one per GPU, in order."""
    from . import catalog
    cat = catalog.load()
    models: List[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _GPU_SPEC.match(part)
        if not m or int(m.group(1)) < 1:
            raise BadInput(f"bad GPU spec {part!r}; expected COUNTxMODEL, e.g. 2xH100-SXM5-80GB")
        model = cat.model(m.group(2))
        models.extend([model.key] * int(m.group(1)))
    if not models:
        raise BadInput("no GPUs given; expected e.g. --gpus 2xH100-SXM5-80GB")
    if len(models) > MAX_GPUS:
        raise BadInput(f"at most {MAX_GPUS} GPUs per node (as in mig-minors)")
    return models
