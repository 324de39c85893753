"""What a folder run records: per image an :class:`ImageRecord` (status, persons, wall and CPU seconds
per step), the run's :class:`BatchSummary`, and the one writer of ``OUT/manifest.jsonl``
(:class:`RunRecorder`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..inputs import InputImage
from .files import MANIFEST_NAME
from .plan import BatchPlan, output_folder


class Stopwatch:
    """Wall time (``time.perf_counter``) and the CPU time of the calling thread (``time.thread_time``)
    since creation: what a host step took, and what it cost the CPU whatever else was running."""

    __slots__ = ("wall", "cpu")

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.thread_time() - self.cpu


@dataclass
class ImageRecord:
    """What happened to one image. status: done | skipped (finished earlier) | failed."""

    image: InputImage
    status: str
    out: Path
    persons: int = 0
    error: str | None = None
    skipped_persons: list[tuple[int, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    focal_source: str | None = None
    warnings: list[str] = field(default_factory=list)

    def add_time(self, step: str, times: tuple[float, float], share: int = 1) -> None:
        """Add a step's (wall, thread CPU) seconds (:meth:`Stopwatch.read`), divided by ``share`` images."""
        wall, cpu = times
        self.seconds[step] = self.seconds.get(step, 0.0) + wall / share
        self.cpu_seconds[step] = self.cpu_seconds.get(step, 0.0) + cpu / share

    def to_json(self) -> dict:
        return {
            "image": self.image.name,
            "path": str(self.image.path),
            "output": self.image.rel,
            "status": self.status,
            "persons": self.persons,
            "skipped_persons": [{"index": int(i), "reason": r} for i, r in self.skipped_persons],
            "dropped_detections": self.dropped,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "cpu_seconds": {k: round(v, 5) for k, v in self.cpu_seconds.items()},
            "error": self.error,
            "focal_source": self.focal_source,
            "warnings": self.warnings,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


@dataclass
class BatchSummary:
    """All records of a run, in completion order; ``seconds`` is the wall time of the run."""

    records: list[ImageRecord] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: None, or the interrupt that stopped the run (KeyboardInterrupt for Ctrl-C, errors.Terminated for SIGTERM)
    interrupted: BaseException | None = None

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def new_persons(self) -> int:
        """Persons reconstructed in this run (done images)."""
        return sum(r.persons for r in self.records if r.status == "done")

    @property
    def failed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == "failed"]


def _end_with_newline(path: Path) -> None:
    """Append a newline to ``path`` if its last line is incomplete (a run killed while appending)."""
    try:
        with open(path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() and (f.seek(-1, os.SEEK_END), f.read(1))[1] != b"\n":
                f.write(b"\n")
    except FileNotFoundError:
        pass



class RunRecorder:
    """The one writer of ``OUT/manifest.jsonl`` and of a run's :class:`BatchSummary`: opened, it ends a
    line cut by a kill, writes the plan's ``ignored`` entries and a ``skipped`` record per image finished
    earlier; then :meth:`record` appends one line per image as it finishes (call it from one thread at a
    time). Shared by the local engine and the Ray engine (whose workers never touch the manifest)."""

    def __init__(self, plan: BatchPlan, summary: BatchSummary,
                 on_record: Callable[[ImageRecord], None] | None = None) -> None:
        self.plan, self.summary, self.on_record = plan, summary, on_record
        self._file = None

    def __enter__(self) -> "RunRecorder":
        path = self.plan.out_dir / MANIFEST_NAME
        _end_with_newline(path)  # a line cut by a kill stays on its own line
        self._file = open(path, "a", encoding="utf-8")
        for path, reason in self.plan.ignored:
            self._file.write(json.dumps({"image": str(path), "path": str(path), "status": "ignored",
                                         "error": f"{path} {reason}"}) + "\n")
        for im, n in self.plan.finished:
            self.record(ImageRecord(im, "skipped", output_folder(self.plan.out_dir, im), persons=n))
        return self

    def record(self, rec: ImageRecord) -> None:
        self.summary.records.append(rec)
        self._file.write(json.dumps(rec.to_json()) + "\n")
        self._file.flush()
        if self.on_record is not None:
            self.on_record(rec)

    def __exit__(self, *exc) -> bool:
        self._file.close()
        return False

