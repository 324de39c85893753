"""Run-directory bookkeeping shared by the trainers: JSON-lines logs."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text

__all__ = ["append_log", "truncate_log"]


def append_log(path: Path, record: dict) -> None:
    """Append one JSON object as one line of ``path``."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int, *, drop_events: tuple[str, ...] = ()) -> None:
    """Keep only the records of ``path`` up to ``step`` (a resumed run writes the later ones again).

    Records without a ``step`` are kept; records whose ``event`` is in ``drop_events`` always go.
    """
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if rec.get("step", 0) <= step and rec.get("event") not in drop_events:
            keep.append(line)
    write_text(path, "".join(line + "\n" for line in keep))
