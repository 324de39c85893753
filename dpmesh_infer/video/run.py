"""A video run: frames -> keypoints -> networks in chunks (resumable) -> tracks -> final files.

1. :func:`~.decode.probe` / :func:`~.decode.probe_sequence` and :func:`~.decode.plan_samples` fix the
   samples; they are cut into chunks of ``chunk`` samples.
2. Finished chunks (``DIR/chunks/chunk_NNNNN.npz``, :mod:`.store`) are skipped. The others are decoded
   in a background thread (bounded queue, so decoding overlaps the networks and never holds more than
   a few chunks of frames), their keypoints come from the per-frame keypoint file or the detector (one
   detector batch per chunk), and their persons go through :class:`~dpmesh_infer.pipeline.Pipeline` in
   shared batches of ``batch_size`` -- the same batching as folder runs. Each chunk is stored atomically
   and gets a ``manifest.jsonl`` line. Ctrl-C stops after the current chunk is stored.
3. At the end all chunks are assembled: tracking (:mod:`.track`), smoothing (:mod:`.smooth`), then
   ``tracks.npz``, ``scene.glb``, with ``render`` ``overlay.mp4`` and ``side.mp4``, and ``tracks.json``
   last (the run is finished when it exists).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DpmeshError
from .decode import SamplingOptions, VideoInfo, iter_frames, plan_samples, probe, probe_sequence
from .smooth import OneEuroConfig
from .store import PERSON_FIELDS, ChunkData, ChunkStore
from .track import TrackerConfig

logger = logging.getLogger(__name__)


@dataclass
class VideoRunOptions:
    """Everything a video run is asked to do (the CLI builds it from its options).

    Attributes:
        sampling: ``--fps/--every/--start/--end``.
        chunk: samples per chunk (stored together; their persons share network batches).
        batch_size: persons per network batch (None: the pipeline's default, 64 on CUDA, 16 on the CPU).
        focal: None, pixels, or a :class:`~dpmesh_infer.focal.FocalChoice`.
        smoothing: One-Euro parameters, or None for ``--smooth none``.
        tracker: :class:`~.track.TrackerConfig`.
        render: also write overlay.mp4 and side.mp4.
        overwrite: discard stored chunks and start over.
    """

    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    chunk: int = 8
    batch_size: int | None = None
    focal: object = None
    smoothing: OneEuroConfig | None = field(default_factory=OneEuroConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    render: bool = False
    overwrite: bool = False


@dataclass
class ChunkRecord:
    """What happened to one chunk (a ``manifest.jsonl`` line)."""

    chunk: int
    status: str  # done | skipped | failed
    samples: tuple[int, int]
    frames: tuple[int, int]
    persons: int = 0
    missing_frames: list[int] = field(default_factory=list)
    skipped_persons: list[dict] = field(default_factory=list)
    dropped_detections: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict:
        return {"chunk": self.chunk, "status": self.status, "samples": list(self.samples),
                "frames": list(self.frames), "persons": self.persons, "missing_frames": self.missing_frames,
                "skipped_persons": self.skipped_persons, "dropped_detections": self.dropped_detections,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()}, "error": self.error}


@dataclass
class VideoSummary:
    """The outcome of :func:`run_video`."""

    info: VideoInfo
    records: list[ChunkRecord] = field(default_factory=list)
    tracks: int = 0
    untracked: int = 0
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    interruption: BaseException | None = None  # the KeyboardInterrupt (or subclass) that stopped the run
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def failed(self) -> list[ChunkRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def missing_frames(self) -> list[int]:
        return sorted(f for r in self.records for f in r.missing_frames)


def open_video(path: str | Path, *, sequence: bool = False, sequence_fps: float = 30.0) -> VideoInfo:
    """Probe a video file, or with ``sequence`` a folder of numbered frames."""
    return probe_sequence(path, sequence_fps) if sequence else probe(path)


def _fingerprint(path: Path) -> dict:
    """Identity of an input file or folder for run.json: resolved path, size and a hash of its head."""
    path = Path(path)
    if path.is_dir():
        entries = sorted((p.name, p.stat().st_size) for p in path.iterdir() if p.is_file())
        digest = hashlib.sha256(repr(entries).encode()).hexdigest()[:16]
        return {"path": str(path.resolve()), "files": len(entries), "sha256_listing": digest}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256_first_mib": h.hexdigest()[:16]}


def run_identity(info: VideoInfo, opts: VideoRunOptions, *, keypoints_path: Path | None, detector: str | None,
                 weights: str | None) -> dict:
    """The settings that decide the stored chunks (see :mod:`.store`)."""
    return {
        "video": {**_fingerprint(info.path), "frames": info.frame_count, "size": [info.width, info.height],
                  "fps": round(info.fps, 6)},
        "sampling": opts.sampling.to_json(), "chunk": opts.chunk,
        "keypoints": None if keypoints_path is None else _fingerprint(keypoints_path),
        "detector": detector, "weights": weights, "focal": repr(opts.focal),
    }


class _Prefetch:
    """Decode the samples of the chunks to do in a background thread (bounded queue of chunks)."""

    _END = object()

    def __init__(self, info: VideoInfo, chunks: list[list], depth: int = 2) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(info, chunks), daemon=True,
                                        name="dpmesh-decode")
        self._thread.start()

    def _work(self, info, chunks) -> None:
        try:
            flat = [s for c in chunks for s in c]
            frames = iter_frames(info, flat)
            for c in chunks:
                t = time.perf_counter()
                got = {}
                for _ in range(len(c)):
                    s, img = next(frames)
                    got[s.index] = img
                item = ([(s, got[s.index]) for s in c], time.perf_counter() - t)
                while not self._stop.is_set():
                    try:
                        self.q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self.q.put(self._END)
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer
            self.q.put(e)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


def _chunk_keypoints(samples, images, kp_file, detector) -> tuple[list[list], list[str]]:
    """Per sample the persons (KeypointPerson lists) and the detector's dropped-detection messages."""
    if kp_file is not None:
        return [kp_file.persons(s.frame) for s in samples], []
    from ..batch import DetectorKeypoints

    idx = [i for i, im in enumerate(images) if im is not None]
    persons: list[list] = [[] for _ in samples]
    dropped: list[str] = []
    if idx:
        found = DetectorKeypoints(detector)([None] * len(idx), [images[i] for i in idx])
        for i, f in zip(idx, found):
            persons[i] = f.persons or []
            dropped.extend(f"frame {samples[i].frame}: {m}" for m in f.dropped)
    return persons, dropped


def compute_chunk(pipe, index: int, items: list, *, kp_file, detector, opts: VideoRunOptions,
                  info: VideoInfo) -> tuple[ChunkData, ChunkRecord]:
    """Keypoints + networks for one chunk of (sample, image or None) -> its stored data and record."""
    samples = [s for s, _ in items]
    images = [img for _, img in items]
    rec = ChunkRecord(chunk=index, status="done", samples=(samples[0].index, samples[-1].index),
                      frames=(samples[0].frame, samples[-1].frame),
                      missing_frames=[s.frame for s, img in items if img is None])
    t = time.perf_counter()
    persons, rec.dropped_detections = _chunk_keypoints(samples, images, kp_file, detector)
    rec.seconds["keypoints"] = time.perf_counter() - t
    ok = [i for i, img in enumerate(images) if img is not None]
    t = time.perf_counter()
    sources = [str(info.frame_files[s.frame]) for s in samples] if info.kind == "sequence" else [None] * len(samples)
    out = pipe([images[i] for i in ok], keypoints=[persons[i] for i in ok], focal=opts.focal,
               batch_size=opts.batch_size, sources=[sources[i] for i in ok]) if ok else None
    rec.seconds["infer"] = time.perf_counter() - t
    K = np.tile(np.eye(3, dtype=np.float32), (len(samples), 1, 1))
    rows: dict[str, list] = {k: [] for k in PERSON_FIELDS}
    p_sample, p_index = [], []
    for j, i in enumerate(ok):
        res = out[j]
        K[i] = res.K
        for pi, reason in res.skipped:
            rec.skipped_persons.append({"frame": samples[i].frame, "index": int(pi), "reason": reason})
        skipped = {int(pi) for pi, _ in res.skipped}
        kept = [k for k in range(len(persons[i])) if k not in skipped]  # persons keep the input order
        for n, p in enumerate(res.persons):
            for k in PERSON_FIELDS:
                rows[k].append(np.asarray(getattr(p, k), np.float32))
            p_sample.append(samples[i].index)
            p_index.append(kept[n] if n < len(kept) else n)
    rec.persons = len(p_sample)
    data = ChunkData(
        index=index, samples=np.array([s.index for s in samples], np.int64),
        frames=np.array([s.frame for s in samples], np.int64), times=np.array([s.time for s in samples]),
        decoded=np.array([img is not None for img in images]), K=K,
        person_sample=np.array(p_sample, np.int64), person_index=np.array(p_index, np.int64),
        persons={k: (np.stack(v) if v else np.zeros((0, *PERSON_FIELDS[k]), np.float32)) for k, v in rows.items()})
    return data, rec


def run_video(info: VideoInfo, out_dir: str | Path, opts: VideoRunOptions, *, load_pipeline: Callable[[], object],
              load_body: Callable[[], object], kp_file=None, make_detector: Callable[[object], object] | None = None,
              identity: dict | None = None, make_renderer: Callable[[], object] | None = None,
              on_chunk: Callable[[ChunkRecord], None] | None = None) -> VideoSummary:
    """Run the whole video (module docstring); returns the summary (``interrupted`` after Ctrl-C).

    Args:
        info: the probed video.
        out_dir: the output folder.
        opts: :class:`VideoRunOptions`.
        load_pipeline: called once, only when some chunk must be computed -> Pipeline.
        load_body: called when no chunk is computed (assembly only) -> SMPLBody.
        kp_file: a :class:`~.keypoints.FrameKeypoints`, or None to run the detector.
        make_detector: ``make_detector(pipe)`` -> a KeypointDetector (when ``kp_file`` is None).
        identity: the run's identity for run.json (default from :func:`run_identity`).
        make_renderer: -> a :class:`~dpmesh_infer.render.Renderer` when ``opts.render``.
        on_chunk: called with each chunk's record (progress).
    """
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    plan = plan_samples(info, opts.sampling)
    summary = VideoSummary(info=info, notes=list(plan.notes))
    for note in plan.notes:
        logger.warning("%s", note)
    if kp_file is not None:
        kp_file.check_frames(info.frame_count, info.path.name)
    chunks = [plan.samples[a:a + opts.chunk] for a in range(0, len(plan.samples), opts.chunk)]
    identity = identity or run_identity(info, opts, keypoints_path=None, detector=None, weights=None)
    inputs = (info.path, *info.frame_files)
    with ChunkStore(out_dir, identity, overwrite=opts.overwrite, inputs=inputs) as store:
        stored: dict[int, ChunkData] = {}
        todo = []
        for i, c in enumerate(chunks):
            data = store.finished(i, np.array([s.index for s in c], np.int64))
            if data is None:
                todo.append(i)
            else:
                stored[i] = data
                rec = ChunkRecord(chunk=i, status="skipped", samples=(c[0].index, c[-1].index),
                                  frames=(c[0].frame, c[-1].frame), persons=int(len(data.person_sample)),
                                  missing_frames=[int(f) for f, ok in zip(data.frames, data.decoded) if not ok])
                summary.records.append(rec)
                store.append_manifest(rec.to_json())
                if on_chunk is not None:
                    on_chunk(rec)
        pipe = None
        if todo:
            pipe = load_pipeline()
            detector = make_detector(pipe) if kp_file is None else None
            prefetch = _Prefetch(info, [chunks[i] for i in todo])
            try:
                for i, (items, decode_s) in zip(todo, prefetch):
                    try:
                        data, rec = compute_chunk(pipe, i, items, kp_file=kp_file, detector=detector, opts=opts,
                                                  info=info)
                    except DpmeshError as e:
                        c = chunks[i]
                        rec = ChunkRecord(chunk=i, status="failed", samples=(c[0].index, c[-1].index),
                                          frames=(c[0].frame, c[-1].frame), error=str(e))
                        data = None
                    rec.seconds["decode"] = decode_s
                    if data is not None:
                        t = time.perf_counter()
                        store.write(data)
                        rec.seconds["write"] = time.perf_counter() - t
                        stored[i] = data
                    summary.records.append(rec)
                    store.append_manifest(rec.to_json())
                    if on_chunk is not None:
                        on_chunk(rec)
            except KeyboardInterrupt as e:
                summary.interrupted, summary.interruption = True, e
            finally:
                prefetch.close()
        if summary.interrupted:
            summary.seconds = time.perf_counter() - t0
            return summary
        body = pipe.body if pipe is not None else load_body()
        from .outputs import write_outputs

        write_outputs(summary, store, info, plan, list(stored.values()), body, opts, faces=_faces(pipe, body),
                      make_renderer=make_renderer)
    summary.seconds = time.perf_counter() - t0
    return summary


def _faces(pipe, body) -> np.ndarray:
    return pipe.faces if pipe is not None else np.asarray(body.faces, np.int64)


__all__ = ["VideoRunOptions", "VideoSummary", "ChunkRecord", "run_video", "open_video", "run_identity"]
