"""Folder runs: many images -> one output folder per image, resumable, with a manifest.

Layout of ``OUT`` (documented in README.md)::

    OUT/manifest.jsonl            one JSON line per image and run, appended as each image finishes
    OUT/<rel>/params.npz          plain arrays (export.save_npz)
    OUT/<rel>/person_NN.obj       one mesh per person, photo camera frame (OpenCV axes)
    OUT/<rel>/scene.glb           every person, glTF camera frame
    OUT/<rel>/overlay.png         with --render: all people over the photo (shared depth buffer)
    OUT/<rel>/side.png            with --render: the people seen from the side
    OUT/<rel>/people.json         parameters (export.result_to_dict) -- written LAST

``<rel>`` is the image's path relative to the input folder (or glob base) without its suffix.

Completion: an image is finished when its ``people.json`` exists and parses. Every file is written
atomically and ``people.json`` last, so an interrupted run leaves either a finished folder or one that
is redone on the next run. A re-run skips finished images unless ``overwrite``; redoing an image first
removes its ``people.json`` (and old ``person_NN.obj``), so a folder is never half old, half new.

Images go through in chunks: the persons of all images of a chunk share network batches; the chunk's
files are written by a background thread while the next chunk is computed. One bad image (unreadable,
no keypoints, no person, a failed write) is recorded as ``failed`` and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from .atomic import check_writable_dir
from .devices import keep_freed_memory, single_threaded_opencv
from .errors import DpmeshError, InputError
from .inputs import InputImage, refuse_overwriting_inputs, scan_inputs
from .locks import RunLock

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
#: Written last: its presence marks a finished image folder.
DONE_FILE = "people.json"
#: Written (before DONE_FILE) by runs with a renderer; a run with --render redoes folders without them.
RENDER_FILES = ("overlay.png", "side.png")


# ------------------------------------------------------------------------------------------ records

class _Stopwatch:
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
        """Add a step's (wall, thread CPU) seconds (:meth:`_Stopwatch.read`), divided by ``share`` images."""
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


@dataclass
class BatchPlan:
    """The images to compute (``todo``), those finished earlier (``finished``), non-image files, and
    entries named like images that are not regular files (``ignored``, with the reason)."""

    out_dir: Path
    todo: list[InputImage]
    finished: list[tuple[InputImage, int]]
    non_images: list[Path]
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    overwrite: bool = False
    require: tuple[str, ...] = ()


def output_folder(out_dir: Path, image: InputImage) -> Path:
    return Path(out_dir) / image.rel


def finished_persons(folder: Path, require: Sequence[str] = ()) -> int | None:
    """Person count of a finished output folder (that also holds the ``require`` files), or None when
    it is not finished."""
    try:
        n = len(json.loads((folder / DONE_FILE).read_text())["persons"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return n if all((folder / name).is_file() for name in require) else None


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and prove a file can be written there (InputError, exit 2, otherwise)."""
    check_writable_dir(out_dir)


#: Files a folder run writes into each image's folder (``person_NN.obj`` besides).
OUTPUT_FILES = ("params.npz", "scene.glb", DONE_FILE) + RENDER_FILES


def check_plan_outputs(plan: BatchPlan, *, keypoints: Path | None = None, weights: Path | None = None) -> None:
    """Refuse the run when it would write over (or delete) one of its inputs: an input image or the
    keypoint file at a path the run writes, or the output folder inside the weights directory.

    Raises:
        OutputConflictError (exit 2) naming both.
    """
    files = [plan.out_dir / MANIFEST_NAME]
    for im in plan.todo:
        folder = output_folder(plan.out_dir, im)
        files += [folder / name for name in OUTPUT_FILES]
    images = [("input image", im.path) for im in plan.todo + [im for im, _ in plan.finished]]
    in_folders = {output_folder(plan.out_dir, im).resolve() for im in plan.todo}
    for what, path in images + ([("keypoint file", keypoints)] if keypoints is not None else []):
        if Path(path).resolve().parent in in_folders and re.fullmatch(r"person_\d+\.obj", Path(path).name):
            files.append(Path(path))  # redoing a folder deletes its old person meshes
    refuse_overwriting_inputs(inputs=images + ([("keypoint file", keypoints)] if keypoints is not None else []),
                              files=files, protected=[("weights directory", weights)] if weights else [])


def plan_batch(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, overwrite: bool = False,
               render: bool = False) -> BatchPlan:
    """Expand the inputs, map each image to its output folder, and split finished from to-do images
    (with ``render``, a folder finished without the rendered images is redone).

    Raises:
        InputError: missing input, empty folder, or two images that map to the same output folder.
    """
    out_dir = Path(out_dir)
    scanned = scan_inputs(inputs, exclude=[out_dir])
    require = RENDER_FILES if render else ()
    by_rel: dict[str, InputImage] = {}
    for im in scanned.images:
        other = by_rel.get(im.rel)
        if other is not None:
            raise InputError(f"{other.path} and {im.path} would both write to {out_dir / im.rel}/; "
                             "rename one, or pass their folders separately with distinct --out")
        by_rel[im.rel] = im
    todo, finished = [], []
    for im in scanned.images:
        n = None if overwrite else finished_persons(output_folder(out_dir, im), require)
        if n is None:
            todo.append(im)
        else:
            finished.append((im, n))
    return BatchPlan(out_dir=out_dir, todo=todo, finished=finished, non_images=scanned.non_images,
                     ignored=scanned.ignored, overwrite=overwrite, require=require)


def recheck_plan(plan: BatchPlan) -> BatchPlan:
    """``plan`` with the images finished since it was made (by a run that held the lock then) moved to
    ``finished``: a finished image is never redone or made to look unfinished without --overwrite."""
    if plan.overwrite:
        return plan
    todo, finished = [], list(plan.finished)
    for im in plan.todo:
        n = finished_persons(output_folder(plan.out_dir, im), plan.require)
        (todo.append(im) if n is None else finished.append((im, n)))
    return dataclasses.replace(plan, todo=todo, finished=finished)


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

# ------------------------------------------------------------------------------------------ keypoints

@dataclass
class ImageKeypoints:
    """Keypoints of one image: ``persons`` (KeypointPerson list) or ``error``; ``dropped`` detections."""

    persons: list | None
    error: str | None = None
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class KeypointSource(Protocol):
    def __call__(self, images: Sequence[InputImage], arrays: Sequence[np.ndarray]) -> list[ImageKeypoints]: ...


class FileKeypoints:
    """Keypoints from a parsed keypoint file, looked up by the image's name (relative to its folder)."""

    def __init__(self, kpset) -> None:
        self.kpset = kpset

    def __call__(self, images, arrays):
        out = []
        for im in images:
            try:
                persons = self.kpset.lookup(im.name)
            except DpmeshError as e:
                out.append(ImageKeypoints(None, str(e)))
                continue
            if persons is None:
                out.append(ImageKeypoints(None, self.kpset.missing_message(im.name)))
            else:
                out.append(ImageKeypoints(list(persons), warnings=self.kpset.warnings_for(im.name)))
        return out


class DetectorKeypoints:
    """Keypoints from a :class:`~dpmesh_infer.detect.mmpose_detector.KeypointDetector` (batched per chunk)."""

    def __init__(self, detector) -> None:
        self.detector = detector

    def __call__(self, images, arrays):
        found = self.detector.detect(list(arrays))
        out = [ImageKeypoints([p.to_keypoint_person() for p in people]) for people in found.people]
        for d in found.dropped:
            out[d.image_index].dropped.append(f"detection (score {d.score:.2f}) dropped: {d.reason}")
        return out


# ------------------------------------------------------------------------------------------ running

class BundleWriter:
    """The files of one image's output folder, for results that share one face array (the OBJ face block
    and the GLB index block are built once): :meth:`write_data` then :meth:`write_done`.

    Data files are written atomically without fsync (:meth:`write_data` returns their paths); the caller
    makes them durable (:func:`dpmesh_infer.atomic.sync_files`, once per chunk) before
    :meth:`write_done` writes ``people.json``, the completion mark. So a ``people.json`` that survives a
    power loss always has its data files with it; one that does not (or that is cut) is redone.
    """

    def __init__(self, faces: np.ndarray) -> None:
        from .writers.glb import GlbWriter
        from .writers.obj import ObjWriter

        self.faces = np.asarray(faces)
        self.obj = ObjWriter(self.faces)
        self.glb = GlbWriter(self.faces)

    def write_data(self, result, folder: Path, *, image: np.ndarray | None = None, renderer=None,
                   glb_photo: bool = False, glb_photo_depth: float | None = None) -> list[Path]:
        """params.npz, person_NN.obj, scene.glb and, with a ``renderer`` (and the photo ``image``),
        overlay.png and side.png; first removes the folder's completion mark and the files of an older run
        (old person meshes, renders, temporary files of a killed run). Returns the written paths."""
        from .atomic import write_bytes
        from .export import npz_bytes

        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE_FILE).unlink(missing_ok=True)  # redoing: the folder is unfinished until the end
        for old in [*folder.glob("person_*.obj"), *(folder / name for name in RENDER_FILES), *folder.glob(".*.tmp")]:
            old.unlink(missing_ok=True)
        written = []
        if renderer is not None:
            write_renders(renderer, result, self.faces, image, folder / RENDER_FILES[0], folder / RENDER_FILES[1],
                          fsync=False)
            written += [folder / name for name in RENDER_FILES]
        written.append(write_bytes(folder / "params.npz", npz_bytes(result), fsync=False))
        for i, p in enumerate(result.persons):
            written.append(write_bytes(folder / f"person_{i:02d}.obj", self.obj(p.vertices), fsync=False))
        glb = self.glb(result, photo=image if glb_photo else None, photo_depth=glb_photo_depth)
        written.append(write_bytes(folder / "scene.glb", glb, fsync=False))
        return written

    @staticmethod
    def write_done(result, folder: Path, *, fsync: bool = False) -> Path:
        """people.json, the completion mark (after the data files are durable)."""
        from .atomic import write_bytes
        from .export import json_bytes

        return write_bytes(folder / DONE_FILE, json_bytes(result), fsync=fsync)


def write_image_outputs(result, faces: np.ndarray, folder: Path, *, image: np.ndarray | None = None,
                        renderer=None, glb_photo: bool = False, glb_photo_depth: float | None = None) -> None:
    """One image's folder, durable when it returns: params.npz, person_NN.obj, scene.glb, with a
    ``renderer`` (and the photo ``image``) overlay.png and side.png, then people.json (the completion
    mark), all atomic. ``glb_photo``: scene.glb also holds ``image`` as a textured quad at
    ``glb_photo_depth`` metres (default: behind the farthest person). Folder runs use
    :class:`BundleWriter` directly (one sync per chunk)."""
    from .atomic import sync_files

    writer = BundleWriter(faces)
    written = writer.write_data(result, folder, image=image, renderer=renderer, glb_photo=glb_photo,
                                glb_photo_depth=glb_photo_depth)
    sync_files(written, folder)
    writer.write_done(result, folder, fsync=True)


def write_renders(renderer, result, faces: np.ndarray, image: np.ndarray, overlay_path: Path,
                  side_path: Path, *, fsync: bool = True) -> None:
    """Render the overlay over ``image`` and the side view (image size), written atomically as PNG; also
    fills every person's occlusion ratio (``visibility``, from the rendered depth of all people)."""
    from .analysis.visibility import add_occlusion_ratios
    from .atomic import write_bytes
    from .render import encode_png

    add_occlusion_ratios(result, renderer, faces)

    overlay = renderer.overlay(image, result, faces)
    side = renderer.side_view(result, faces, size=(image.shape[1], image.shape[0]))
    write_bytes(overlay_path, encode_png(overlay), fsync=fsync)
    write_bytes(side_path, encode_png(side), fsync=fsync)


def default_writers() -> int:
    """Writer threads of a folder run: up to 4, at most the CPU cores (the OBJ/GLB formatting and PNG
    encoding run in numpy/zlib/PIL, which release the GIL)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class _Chunk:
    """One chunk on its way: records of the images that failed so far, and per ready image (record,
    photo array, prepared inputs)."""

    failed: list[ImageRecord]
    ready: list[tuple[ImageRecord, np.ndarray, object]]


class BatchRunner:
    """Runs a :class:`BatchPlan` through a pipeline; see the module docstring for what it writes.

    Three stages overlap: a preparing thread loads, finds keypoints and crops chunk k+1 (decoding and
    cropping each image in a thread pool), the calling thread runs the networks on chunk k, and writer
    threads write chunk k-1 (``writers`` threads; data files, one filesystem sync per chunk, then the
    completion marks and the manifest lines, in input order). At most two chunks wait to be written.

    ``chunk`` images go through together (their persons share network batches): default 32 on CUDA, 8 on
    the CPU. ``batch_size``: persons per network batch (default the pipeline's: 64 on CUDA, 16 on the CPU).

    Process-wide settings a run applies (once, for its process): :func:`~dpmesh_infer.devices.keep_freed_memory`
    (glibc keeps freed memory; ``DPMESH_MALLOC_TUNING=0`` opts out) and
    :func:`~dpmesh_infer.devices.single_threaded_opencv`.
    """

    def __init__(self, pipe, keypoints: KeypointSource, *, chunk: int | None = None, batch_size: int | None = None,
                 focal=None, on_record: Callable[[ImageRecord], None] | None = None,
                 renderer=None, max_pixels: int | None = None, glb_photo: bool = False,
                 glb_photo_depth: float | None = None, writers: int | None = None) -> None:
        cuda = getattr(getattr(pipe, "device", None), "type", "cpu") == "cuda"
        self.chunk = chunk if chunk is not None else (32 if cuda else 8)
        self.writers = writers if writers is not None else default_writers()
        if self.chunk < 1:
            raise InputError("--chunk must be at least 1")
        if self.writers < 1:
            raise InputError("--writers must be at least 1")
        self.pipe = pipe
        self.keypoints = keypoints
        self.batch_size = batch_size
        self.focal = focal
        self.on_record = on_record
        self.renderer = renderer  # a dpmesh_infer.render.Renderer: also write overlay.png / side.png
        self.max_pixels = max_pixels
        self.glb_photo, self.glb_photo_depth = glb_photo, glb_photo_depth  # the photo in scene.glb
        self._stop = threading.Event()  # set on Ctrl-C / SIGTERM: the preparing thread gives up its chunk
        self._bundle: BundleWriter | None = None  # built on first use (_bundle_writer), then reused

    def run(self, plan: BatchPlan, *, force_unlock: bool = False) -> BatchSummary:
        """Process every image of ``plan`` under the output folder's lock (:mod:`dpmesh_infer.locks`);
        Ctrl-C or SIGTERM stops after the finished chunks are written (``summary.interrupted``).

        Raises:
            OutputConflictError: another run is writing into the same output folder.
        """
        check_writable(plan.out_dir)
        with RunLock(plan.out_dir, force=force_unlock):
            return self._run_locked(recheck_plan(plan))

    def _run_locked(self, plan: BatchPlan) -> BatchSummary:
        summary = BatchSummary(non_images=list(plan.non_images), ignored=list(plan.ignored))
        t0 = time.perf_counter()
        self._stop.clear()
        keep_freed_memory()
        single_threaded_opencv()
        bundle = self._bundle_writer() if plan.todo else None  # (no pipeline when all is finished)
        with RunRecorder(plan, summary, self.on_record) as recorder, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpmesh-prepare") as preparer, \
                ThreadPoolExecutor(max_workers=max(2, self.writers), thread_name_prefix="dpmesh-io") as io_pool, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpmesh-commit") as committer:
            record = recorder.record  # main thread or the single commit thread, never both
            chunks = [plan.todo[i:i + self.chunk] for i in range(0, len(plan.todo), self.chunk)]
            pending: list[Future] = []
            upcoming: Future | None = None
            try:
                if chunks:
                    upcoming = preparer.submit(self._prepare, chunks[0], plan.out_dir, io_pool)
                for k in range(len(chunks)):
                    prepared = upcoming.result()
                    upcoming = (preparer.submit(self._prepare, chunks[k + 1], plan.out_dir, io_pool)
                                if k + 1 < len(chunks) else None)
                    computed = self._infer_chunk(prepared)
                    while len(pending) >= 2:  # bounded memory: at most two chunks wait to be written
                        pending.pop(0).result()
                    pending.append(committer.submit(self._write_chunk, computed, prepared.failed, record, bundle,
                                                    io_pool, plan.out_dir))
                for f in pending:
                    f.result()
            except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Terminated)
                summary.interrupted = e
                self._stop.set()
                if upcoming is not None:
                    upcoming.cancel()
                for f in pending:  # finished work is kept
                    try:
                        f.result()
                    except BaseException:  # noqa: BLE001 -- that chunk's write was what got interrupted
                        logger.debug("write interrupted", exc_info=True)
        summary.seconds = time.perf_counter() - t0
        return summary

    # -------------------------------------------------------------- one chunk

    def process_images(self, items: Sequence[InputImage], out_dir: Path) -> list[ImageRecord]:
        """One chunk, start to end, on the calling thread (no manifest, no lock): load, keypoints, crops,
        networks, then the files (one filesystem sync), exactly as :meth:`run` does it for each chunk.
        Returns a record per image (failed ones first). What a Ray worker runs per batch
        (:mod:`dpmesh_infer.engines.ray_data`)."""
        keep_freed_memory()
        single_threaded_opencv()
        bundle = self._bundle_writer()
        records: list[ImageRecord] = []
        with ThreadPoolExecutor(max_workers=max(2, self.writers), thread_name_prefix="dpmesh-io") as pool:
            prepared = self._prepare(list(items), Path(out_dir), pool)
            computed = self._infer_chunk(prepared)
            self._write_chunk(computed, prepared.failed, records.append, bundle, pool, Path(out_dir))
        return records

    def _bundle_writer(self) -> BundleWriter:
        """The run's :class:`BundleWriter` (face blocks built once, on first use)."""
        if self._bundle is None:
            self._bundle = BundleWriter(self.pipe.faces)
        return self._bundle

    def _prepare(self, items: list[InputImage], out_dir: Path, pool: ThreadPoolExecutor) -> _Chunk:
        """Load (in ``pool``), find keypoints (one call for the chunk) and crop (in ``pool``) a chunk."""
        from .images import load_image

        def load(im: InputImage):
            rec = ImageRecord(im, "done", output_folder(out_dir, im))
            if self._stop.is_set():
                return rec, None
            watch = _Stopwatch()
            try:
                arr = load_image(im.path, max_pixels=self.max_pixels)
            except DpmeshError as e:
                rec.status, rec.error, arr = "failed", str(e), None
            rec.add_time("load", watch.read())
            return rec, arr

        failed: list[ImageRecord] = []
        loaded: list[tuple[ImageRecord, np.ndarray]] = []
        for rec, arr in pool.map(load, items):
            (failed.append(rec) if arr is None else loaded.append((rec, arr)))
        if not loaded or self._stop.is_set():  # (an interrupted run discards the chunk: nothing was written)
            return _Chunk(failed, [])

        watch = _Stopwatch()
        kps = self._isolated(lambda part: self.keypoints([r.image for r, _ in part], [a for _, a in part]),
                             loaded, lambda err: ImageKeypoints(None, err))
        times = watch.read()
        with_kp = []
        for (rec, arr), kp in zip(loaded, kps):
            rec.add_time("keypoints", times, share=len(loaded))
            rec.dropped = kp.dropped
            rec.warnings += kp.warnings
            if kp.persons is None:
                rec.status, rec.error = "failed", kp.error
                failed.append(rec)
            else:
                with_kp.append((rec, arr, kp.persons))

        def crop(item):
            rec, arr, persons = item
            if self._stop.is_set():
                return "interrupted"
            watch = _Stopwatch()
            try:
                prepared = self.pipe.prepare([arr], [persons], focal=self.focal, sources=[str(rec.image.path)])
            except Exception as e:  # noqa: BLE001 -- recorded for this image, the run goes on
                logger.debug("image failed", exc_info=True)
                prepared = str(e) if isinstance(e, DpmeshError) else f"{type(e).__name__}: {e}"
            rec.add_time("prepare", watch.read())
            return prepared

        ready = []
        for (rec, arr, _), prepared in zip(with_kp, pool.map(crop, with_kp)):
            if isinstance(prepared, str):
                rec.status, rec.error = "failed", prepared
                failed.append(rec)
            else:
                rec.focal_source = prepared.results[0].focal_source
                ready.append((rec, arr, prepared))
        return _Chunk(failed, ready)

    def _infer_chunk(self, chunk: _Chunk):
        """The networks on a prepared chunk (all its persons in shared batches; if that fails, image by
        image) -> [(record, ImageResult, photo or None)]; failures are added to ``chunk.failed``."""
        from .pipeline import PreparedImages

        if not chunk.ready:
            return []
        t = time.perf_counter()
        results = self._isolated(
            lambda part: list(self.pipe.infer(PreparedImages.concat([p for _, _, p in part]),
                                              batch_size=self.batch_size).images),
            chunk.ready, lambda err: err)
        infer_s = time.perf_counter() - t
        n_total = max(1, sum(p.num_persons for _, _, p in chunk.ready))
        computed = []
        for (rec, arr, prepared), res in zip(chunk.ready, results):
            rec.seconds["infer"] = infer_s * prepared.num_persons / n_total
            if isinstance(res, str):
                rec.status, rec.error = "failed", res
                chunk.failed.append(rec)
                continue
            rec.skipped_persons = list(res.skipped)
            if not res.persons:
                why = "; ".join(f"person {i}: {r}" for i, r in res.skipped) or "no person in the keypoints"
                rec.status, rec.error = "failed", f"no person could be reconstructed ({why})"
                chunk.failed.append(rec)
                continue
            rec.persons = len(res.persons)
            computed.append((rec, res, arr if self.renderer is not None or self.glb_photo else None))
        return computed

    @staticmethod
    def _isolated(fn, part: list, on_error: Callable[[str], object]) -> list:
        """``fn(part)``; if it raises, run each element alone so one bad image fails alone."""
        try:
            return fn(part)
        except Exception as e:  # noqa: BLE001 -- recorded per image below, never swallowed silently
            if len(part) == 1:
                logger.debug("image failed", exc_info=True)
                msg = str(e) if isinstance(e, DpmeshError) else f"{type(e).__name__}: {e}"
                return [on_error(msg)]
            logger.info("chunk failed (%s); retrying its images one by one", e)
            return [x for item in part for x in BatchRunner._isolated(fn, [item], on_error)]

    def _write_chunk(self, computed, failed, record, bundle: BundleWriter, pool: ThreadPoolExecutor,
                     out_dir: Path) -> None:
        """Write a chunk: every image's data files (in ``pool``), one sync of the filesystem, then the
        completion marks (in ``pool``) and the records, in input order."""
        from .atomic import sync_files

        for rec in failed:
            record(rec)

        def data(item):
            rec, res, image = item
            watch = _Stopwatch()
            written: list[Path] = []
            try:
                written = bundle.write_data(res, rec.out, image=image, renderer=self.renderer,
                                            glb_photo=self.glb_photo, glb_photo_depth=self.glb_photo_depth)
            except OSError as e:
                rec.status, rec.error, rec.persons = "failed", f"cannot write {rec.out}: {e}", 0
            except DpmeshError as e:  # a failed render (RenderError)
                rec.status, rec.error, rec.persons = "failed", str(e), 0
            rec.add_time("write", watch.read())
            return written

        written = [p for paths in pool.map(data, computed) for p in paths]
        ok = [(rec, res) for rec, res, _ in computed if rec.status == "done"]
        sync_watch = _Stopwatch()
        if written:
            sync_files(written, out_dir)  # the data on disk before any completion mark of the chunk
        times = sync_watch.read()
        for rec, _ in ok:
            rec.add_time("sync", times, share=len(ok))

        def done(item):
            rec, res = item
            watch = _Stopwatch()
            try:
                bundle.write_done(res, rec.out)
            except OSError as e:
                rec.status, rec.error, rec.persons = "failed", f"cannot write {rec.out}: {e}", 0
            rec.add_time("write", watch.read())

        list(pool.map(done, ok))
        for rec, _, _ in computed:
            record(rec)
