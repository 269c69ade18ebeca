"""gres.conf read the way Slurm reads it (src/common/parse_config.c and the
gres.conf loader in src/interfaces/gres.c, the same from 22.05 to 26.05), so
that static mode numbers the records as Slurm numbers its IDX.

- A `#` not escaped by a backslash starts a comment, anywhere on a line; a line
  ending in a backslash continues on the next one; keys are case-insensitive;
  a value is one word or "quoted".
- A line's first key says what it is: `Name=` lines apply to every node,
  `NodeName=<hostlist>` lines only to the nodes listed. Slurm puts all the
  `Name=` lines first and this node's `NodeName=` lines after them, each in
  file order.
- Slurm then counts a GRES's records type by type, in the order the node's
  `Gres=` in slurm.conf names the types. `slurm-mig gres-conf` writes that
  `Gres=` in the order the types first appear in gres.conf, which is the order
  used here; the static Prolog checks each IDX's type against the type Slurm
  allocated, so a hand-edited slurm.conf that differs fails the job instead of
  binding another instance.
"""
from __future__ import annotations

import re
from typing import Dict, List

from ..errors import NodeProblem
from .jobinfo import expand_hostlist

_PAIR = re.compile(r'\s*([A-Za-z0-9_.]+)\s*[-*+/]?=\s*(?:"([^"]*)"|(\S+))(?:\s|$)')
_ESCAPE = re.compile(r"\\(.)")


def logical_lines(text: str) -> List[str]:
    """Lines without comments, continued lines joined, escapes resolved."""
    out, pending = [], ""
    for raw in text.splitlines():
        line = _strip_comment(raw)
        stripped = line.rstrip()
        backslashes = len(stripped) - len(stripped.rstrip("\\"))
        if backslashes % 2:
            pending += stripped[:-1]
            continue
        out.append(_ESCAPE.sub(r"\1", pending + line))
        pending = ""
    if pending:
        out.append(_ESCAPE.sub(r"\1", pending))
    return out


def _strip_comment(line: str) -> str:
    """Up to the first '#' preceded by an even number of backslashes."""
    run = 0
    for i, ch in enumerate(line):
        if ch == "#" and run % 2 == 0:
            return line[:i]
        run = run + 1 if ch == "\\" else 0
    return line


def parse_line(line: str, where: str) -> List[tuple]:
    """[(lower-case key, value)] in line order; text that is no key=value is
    an error, as it is for Slurm."""
    pairs, rest = [], line
    while rest.strip():
        m = _PAIR.match(rest)
        if not m:
            raise NodeProblem(f"{where}: cannot parse {rest.strip()!r}")
        pairs.append((m.group(1).lower(), m.group(2) if m.group(2) is not None else m.group(3)))
        rest = rest[m.end():]
    return pairs


def node_records(path: str, node: str, name: str) -> List[Dict[str, str]]:
    """The `name` records that apply to `node`, in the order Slurm numbers
    their IDX. Each record maps lower-case keys to values."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise NodeProblem(f"cannot read {path}: {e.strerror}; set gres_conf in the config") from e
    return records_in(text, node, name, path)


def records_in(text: str, node: str, name: str, path: str) -> List[Dict[str, str]]:
    """node_records of a gres.conf's text (`path` names it in errors)."""
    lines = logical_lines(text)
    everywhere, here = [], []
    for line in lines:
        if re.match(r"\s*include\s", line, re.I):
            raise NodeProblem(f"{path}: include is not supported here; list the records in one file")
        pairs = parse_line(line, path)
        fields = dict(pairs)
        if not pairs:
            continue
        if pairs[0][0] == "nodename":
            if node in expand_hostlist(pairs[0][1]):
                here.append(fields)
        elif "nodename" in fields:
            raise NodeProblem(f"{path}: NodeName= must come first on its line (Slurm refuses {line.strip()!r})")
        elif pairs[0][0] == "name":
            everywhere.append(fields)
    records = [r for r in everywhere + here if r.get("name", "").lower() == name.lower()]
    types: List[str] = []
    for r in records:
        if r.get("type", "").lower() not in types:
            types.append(r.get("type", "").lower())
    return sorted(records, key=lambda r: types.index(r.get("type", "").lower()))
