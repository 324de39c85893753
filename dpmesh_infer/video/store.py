"""The resumable store of a video run: ``DIR/run.json``, ``DIR/chunks/chunk_NNNNN.npz``, ``DIR/manifest.jsonl``.

* ``run.json`` holds what decides the chunks' content (the video and its size, the sampling, the
  keypoint source, the weights, the focal choice, the chunk size). A run into a folder that holds
  another run's chunks is refused (``--overwrite`` starts over); tracking, smoothing and rendering are
  not part of it, so re-running with other ``--smooth`` / ``--track-*`` options re-assembles the final
  files from the stored chunks without running the networks again.
* A chunk file is written atomically (:mod:`dpmesh_infer.atomic`) once all its frames are computed:
  a chunk exists completely or not at all, so a killed run resumes from its last finished chunk.
* ``manifest.jsonl`` gets one JSON line per chunk and run (``done``, ``skipped`` = finished earlier,
  ``failed``), appended as each chunk finishes.
* The folder is locked (``fcntl.flock`` on ``DIR/.dpmesh-video.lock``) while a run uses it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..atomic import write_bytes, write_text
from ..errors import InputError, OutputConflictError

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
CHUNK_DIR = "chunks"
MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".dpmesh-video.lock"
#: Version of the chunk files and run.json.
STORE_VERSION = 1
#: Final files of a video run (removed by --overwrite; never an input).
FINAL_FILES = ("tracks.npz", "tracks.json", "scene.glb", "overlay.mp4", "side.mp4")

#: Per-person arrays of a chunk (name -> shape without the person axis); vertices are not stored.
PERSON_FIELDS: dict[str, tuple[int, ...]] = {
    "joints": (30, 3), "global_orient": (3,), "body_pose": (23, 3), "betas": (10,), "transl": (3,),
    "keypoints_2d": (30, 3), "joints_2d": (30, 2), "bbox": (4,), "score": (),
}


@dataclass
class ChunkData:
    """One chunk's results.

    Attributes:
        index: chunk number.
        samples: (S,) int64 sample indices; frames (S,) source frames; times (S,) seconds;
            decoded (S,) bool (False: the frame could not be decoded).
        K: (S, 3, 3) intrinsics per sample.
        person_sample: (P,) int64 sample index of each reconstructed person; person_index (P,) its index
            among the frame's input persons.
        persons: name -> (P, ...) float32 arrays of :data:`PERSON_FIELDS`.
    """

    index: int
    samples: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    decoded: np.ndarray
    K: np.ndarray
    person_sample: np.ndarray
    person_index: np.ndarray
    persons: dict[str, np.ndarray] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, store_version=np.asarray(STORE_VERSION), chunk=np.asarray(self.index), samples=self.samples,
                 frames=self.frames, times=self.times, decoded=self.decoded, K=self.K,
                 person_sample=self.person_sample, person_index=self.person_index,
                 **{f"person_{k}": v for k, v in self.persons.items()})
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> "ChunkData":
        with np.load(path, allow_pickle=False) as z:
            if int(z["store_version"]) != STORE_VERSION:
                raise ValueError(f"chunk store version {int(z['store_version'])}")
            return cls(index=int(z["chunk"]), samples=z["samples"], frames=z["frames"], times=z["times"],
                       decoded=z["decoded"], K=z["K"], person_sample=z["person_sample"],
                       person_index=z["person_index"], persons={k: z[f"person_{k}"] for k in PERSON_FIELDS})


class ChunkStore:
    """The chunk store of one output folder (see the module docstring); use as a context manager
    (it holds the folder's lock)."""

    def __init__(self, out_dir: str | Path, identity: dict, *, overwrite: bool = False,
                 inputs: tuple[Path, ...] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.identity = identity
        self.overwrite = overwrite
        self.inputs = inputs
        self._lock_fd: int | None = None

    @property
    def chunk_dir(self) -> Path:
        return self.out_dir / CHUNK_DIR

    def chunk_path(self, index: int) -> Path:
        return self.chunk_dir / f"chunk_{index:05d}.npz"

    def __enter__(self) -> "ChunkStore":
        import fcntl

        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: a video run writes a folder, and {out} is a file")
        resolved = {p.resolve() for p in self.inputs}
        for name in (*FINAL_FILES, RUN_FILE, MANIFEST_NAME):
            if (out / name).resolve() in resolved:
                raise OutputConflictError(f"{out / name} is an input of this run and would be overwritten; "
                                          "choose another --out folder")
        try:
            out.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"cannot write to the output folder {out}: {e.strerror or e}") from e
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise OutputConflictError(f"{out} is in use by another dpmesh run (lock {out / LOCK_NAME})") from None
        try:
            self._check_identity()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _check_identity(self) -> None:
        run_file = self.out_dir / RUN_FILE
        old = None
        if run_file.is_file():
            try:
                old = json.loads(run_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
        elif self.chunk_dir.is_dir() and any(self.chunk_dir.glob("chunk_*.npz")):
            old = {}
        if old is not None and old.get("identity") != self.identity and not self.overwrite:
            differs = sorted(k for k in set(old.get("identity", {})) | set(self.identity)
                             if old.get("identity", {}).get(k) != self.identity.get(k))
            raise OutputConflictError(
                f"{self.out_dir} holds a video run with other settings (differing: {', '.join(differs) or 'all'}); "
                "pass --overwrite to start over, or choose another --out folder")
        if self.overwrite:
            shutil.rmtree(self.chunk_dir, ignore_errors=True)
            for name in (*FINAL_FILES, RUN_FILE):
                (self.out_dir / name).unlink(missing_ok=True)
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.chunk_dir.glob(".chunk_*.tmp"):  # a killed run's unfinished chunk
            stale.unlink(missing_ok=True)
        write_text(run_file, json.dumps({"store_version": STORE_VERSION, "identity": self.identity}, indent=1) + "\n")

    def finished(self, index: int, samples: np.ndarray) -> ChunkData | None:
        """The stored chunk ``index`` when it exists, loads, and holds exactly ``samples``; else None."""
        path = self.chunk_path(index)
        if not path.is_file():
            return None
        try:
            data = ChunkData.load(path)
        except Exception as e:  # noqa: BLE001 -- any unreadable chunk is simply recomputed
            logger.warning("%s is unreadable (%s); it is recomputed", path, e)
            return None
        if data.index != index or not np.array_equal(data.samples, samples):
            return None
        return data

    def write(self, data: ChunkData) -> Path:
        return write_bytes(self.chunk_path(data.index), data.to_bytes())

    def append_manifest(self, record: dict) -> None:
        record = dict(record)
        record.setdefault("finished_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        with open(self.out_dir / MANIFEST_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
