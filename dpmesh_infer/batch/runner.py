"""The local engine of folder runs: :class:`BatchRunner` (prepare, networks and writers overlapping, chunk
by chunk; see :mod:`dpmesh_infer.batch`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..devices import freeze_loaded_objects, keep_freed_memory, single_threaded_opencv
from ..errors import DpmeshError, InputError
from ..inputs import InputImage
from ..locks import RunLock
from .files import BundleWriter
from .keypoints import ImageKeypoints, KeypointSource
from .plan import BatchPlan, check_writable, output_folder, recheck_plan
from .records import BatchSummary, ImageRecord, RunRecorder, Stopwatch

logger = logging.getLogger(__name__)


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
    (glibc keeps freed memory; ``DPMESH_MALLOC_TUNING=0`` opts out),
    :func:`~dpmesh_infer.devices.freeze_loaded_objects` (full garbage collections skip the objects alive
    at the first run's start; ``DPMESH_GC_FREEZE=0`` opts out) and
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
        freeze_loaded_objects()
        single_threaded_opencv()
        bundle = self._bundle_writer() if plan.todo else None  # (no pipeline when all is finished)
        with RunRecorder(plan, summary, self.on_record) as recorder, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpmesh-prepare") as preparer, \
                ThreadPoolExecutor(max_workers=max(2, self.writers), thread_name_prefix="dpmesh-io") as io_pool, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpmesh-commit") as committer:
            record = recorder.record  # main thread or the single commit thread, never both
            if bundle is not None:  # the writers' one-time work, while the first chunk is prepared and computed
                committer.submit(bundle.warm_up)
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
        freeze_loaded_objects()
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
        from ..images import load_image

        def load(im: InputImage):
            rec = ImageRecord(im, "done", output_folder(out_dir, im))
            if self._stop.is_set():
                return rec, None
            watch = Stopwatch()
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

        watch = Stopwatch()
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
            watch = Stopwatch()
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
        from ..pipeline import PreparedImages

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
        from ..atomic import sync_files

        for rec in failed:
            record(rec)

        def data(item):
            rec, res, image = item
            watch = Stopwatch()
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
        sync_watch = Stopwatch()
        if written:
            sync_files(written, out_dir)  # the data on disk before any completion mark of the chunk
        times = sync_watch.read()
        for rec, _ in ok:
            rec.add_time("sync", times, share=len(ok))

        def done(item):
            rec, res = item
            watch = Stopwatch()
            try:
                bundle.write_done(res, rec.out)
            except OSError as e:
                rec.status, rec.error, rec.persons = "failed", f"cannot write {rec.out}: {e}", 0
            rec.add_time("write", watch.read())

        list(pool.map(done, ok))
        for rec, _, _ in computed:
            record(rec)
