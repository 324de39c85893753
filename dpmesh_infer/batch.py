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
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from .atomic import check_writable_dir
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
    focal_source: str | None = None
    warnings: list[str] = field(default_factory=list)

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


def _recheck(plan: BatchPlan) -> BatchPlan:
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

def _person_obj(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    import trimesh

    data = trimesh.Trimesh(np.asarray(vertices, np.float64), faces, process=False).export(file_type="obj")
    return data.encode() if isinstance(data, str) else data


def write_image_outputs(result, faces: np.ndarray, folder: Path, *, image: np.ndarray | None = None,
                        renderer=None, glb_photo: bool = False, glb_photo_depth: float | None = None) -> None:
    """params.npz, person_NN.obj, scene.glb, with a ``renderer`` (and the photo ``image``) overlay.png
    and side.png, then people.json (the completion mark), all atomic. ``glb_photo``: scene.glb also holds
    ``image`` as a textured quad at ``glb_photo_depth`` metres (default: behind the farthest person)."""
    from .atomic import write_bytes
    from .export import save_json, save_mesh, save_npz

    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_FILE).unlink(missing_ok=True)  # redoing: the folder is unfinished until the end
    # old meshes, renders, and temporary files left by a run that was killed while writing here
    for old in [*folder.glob("person_*.obj"), *(folder / name for name in RENDER_FILES), *folder.glob(".*.tmp")]:
        old.unlink(missing_ok=True)
    if renderer is not None:
        write_renders(renderer, result, faces, image, folder / RENDER_FILES[0], folder / RENDER_FILES[1])
    save_npz(result, folder / "params.npz")
    for i, p in enumerate(result.persons):
        write_bytes(folder / f"person_{i:02d}.obj", _person_obj(p.vertices, faces))
    save_mesh(result, faces, folder / "scene.glb", photo=image if glb_photo else None, photo_depth=glb_photo_depth)
    save_json(result, folder / DONE_FILE)


def write_renders(renderer, result, faces: np.ndarray, image: np.ndarray, overlay_path: Path,
                  side_path: Path) -> None:
    """Render the overlay over ``image`` and the side view (image size), written atomically as PNG; also
    fills every person's occlusion ratio (``visibility``, from the rendered depth of all people)."""
    from .analysis.visibility import add_occlusion_ratios
    from .atomic import write_bytes
    from .render import encode_png

    add_occlusion_ratios(result, renderer, faces)

    overlay = renderer.overlay(image, result, faces)
    side = renderer.side_view(result, faces, size=(image.shape[1], image.shape[0]))
    write_bytes(overlay_path, encode_png(overlay))
    write_bytes(side_path, encode_png(side))


class BatchRunner:
    """Runs a :class:`BatchPlan` through a pipeline; see the module docstring for what it writes."""

    def __init__(self, pipe, keypoints: KeypointSource, *, chunk: int = 8, batch_size: int = 16,
                 focal=None, on_record: Callable[[ImageRecord], None] | None = None,
                 renderer=None, max_pixels: int | None = None, glb_photo: bool = False,
                 glb_photo_depth: float | None = None) -> None:
        if chunk < 1:
            raise InputError("--chunk must be at least 1")
        self.pipe = pipe
        self.keypoints = keypoints
        self.chunk = chunk
        self.batch_size = batch_size
        self.focal = focal
        self.on_record = on_record
        self.renderer = renderer  # a dpmesh_infer.render.Renderer: also write overlay.png / side.png
        self.max_pixels = max_pixels
        self.glb_photo, self.glb_photo_depth = glb_photo, glb_photo_depth  # the photo in scene.glb

    def run(self, plan: BatchPlan, *, force_unlock: bool = False) -> BatchSummary:
        """Process every image of ``plan`` under the output folder's lock (:mod:`dpmesh_infer.locks`);
        Ctrl-C or SIGTERM stops after the finished chunks are written (``summary.interrupted``).

        Raises:
            OutputConflictError: another run is writing into the same output folder.
        """
        check_writable(plan.out_dir)
        with RunLock(plan.out_dir, force=force_unlock):
            return self._run_locked(_recheck(plan))

    def _run_locked(self, plan: BatchPlan) -> BatchSummary:
        summary = BatchSummary(non_images=list(plan.non_images), ignored=list(plan.ignored))
        t0 = time.perf_counter()
        _end_with_newline(plan.out_dir / MANIFEST_NAME)  # a line cut by a kill stays on its own line
        with open(plan.out_dir / MANIFEST_NAME, "a", encoding="utf-8") as manifest, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpmesh-write") as writer:

            def record(rec: ImageRecord) -> None:  # main thread or the single writer thread, never both
                summary.records.append(rec)
                manifest.write(json.dumps(rec.to_json()) + "\n")
                manifest.flush()
                if self.on_record is not None:
                    self.on_record(rec)

            for path, reason in plan.ignored:
                manifest.write(json.dumps({"image": str(path), "path": str(path), "status": "ignored",
                                           "error": f"{path} {reason}"}) + "\n")
            for im, n in plan.finished:
                record(ImageRecord(im, "skipped", output_folder(plan.out_dir, im), persons=n))
            pending: list[Future] = []
            try:
                for start in range(0, len(plan.todo), self.chunk):
                    items = plan.todo[start:start + self.chunk]
                    computed, failed = self._compute(items, plan.out_dir)
                    for f in pending:  # keep at most one chunk in flight; records stay in order
                        f.result()
                    pending = [writer.submit(self._write, computed, failed, record)]
                for f in pending:
                    f.result()
            except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Terminated)
                summary.interrupted = e
                for f in pending:  # finished work is kept
                    f.result()
        summary.seconds = time.perf_counter() - t0
        return summary

    # -------------------------------------------------------------- one chunk

    def _compute(self, items: list[InputImage], out_dir: Path):
        """Load, find keypoints and reconstruct a chunk -> ([(record, ImageResult, image or None)],
        [failed records]); the image array is kept only when rendering."""
        from .images import load_image

        failed: list[ImageRecord] = []
        loaded: list[tuple[ImageRecord, np.ndarray]] = []
        for im in items:
            rec = ImageRecord(im, "done", output_folder(out_dir, im))
            t = time.perf_counter()
            try:
                loaded.append((rec, load_image(im.path, max_pixels=self.max_pixels)))
            except DpmeshError as e:
                rec.status, rec.error = "failed", str(e)
                failed.append(rec)
            rec.seconds["load"] = time.perf_counter() - t
        if not loaded:
            return [], failed

        t = time.perf_counter()
        kps = self._isolated(lambda part: self.keypoints([r.image for r, _ in part], [a for _, a in part]),
                             loaded, lambda err: ImageKeypoints(None, err))
        share = (time.perf_counter() - t) / len(loaded)
        ready = []
        for (rec, arr), kp in zip(loaded, kps):
            rec.seconds["keypoints"] = share
            rec.dropped = kp.dropped
            rec.warnings += kp.warnings
            if kp.persons is None:
                rec.status, rec.error = "failed", kp.error
                failed.append(rec)
            else:
                ready.append((rec, arr, kp.persons))
        if not ready:
            return [], failed

        t = time.perf_counter()
        results = self._isolated(self._infer, ready, lambda err: err)
        infer_s = time.perf_counter() - t
        n_total = max(1, sum(len(p) for _, _, p in ready))
        computed = []
        for (rec, arr, persons), res in zip(ready, results):
            rec.seconds["infer"] = infer_s * len(persons) / n_total
            if isinstance(res, str):
                rec.status, rec.error = "failed", res
                failed.append(rec)
                continue
            rec.skipped_persons = list(res.skipped)
            if not res.persons:
                why = "; ".join(f"person {i}: {r}" for i, r in res.skipped) or "no person in the keypoints"
                rec.status, rec.error = "failed", f"no person could be reconstructed ({why})"
                failed.append(rec)
                continue
            rec.persons = len(res.persons)
            computed.append((rec, res, arr if self.renderer is not None or self.glb_photo else None))
        return computed, failed

    def _infer(self, part):
        """``focal``: None, pixels, or a :class:`~dpmesh_infer.focal.FocalChoice` (resolved per image by
        the pipeline, EXIF read from each image's file)."""
        out = self.pipe([a for _, a, _ in part], keypoints=[p for _, _, p in part], focal=self.focal,
                        batch_size=self.batch_size, sources=[str(rec.image.path) for rec, _, _ in part])
        for (rec, _, _), res in zip(part, out.images):
            rec.focal_source = res.focal_source
        return list(out.images)

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

    def _write(self, computed, failed, record) -> None:
        for rec in failed:
            record(rec)
        for rec, res, image in computed:
            t = time.perf_counter()
            try:
                write_image_outputs(res, self.pipe.faces, rec.out, image=image, renderer=self.renderer,
                                    glb_photo=self.glb_photo, glb_photo_depth=self.glb_photo_depth)
            except OSError as e:
                rec.status, rec.error, rec.persons = "failed", f"cannot write {rec.out}: {e}", 0
            except DpmeshError as e:  # a failed render (RenderError)
                rec.status, rec.error, rec.persons = "failed", str(e), 0
            rec.seconds["write"] = time.perf_counter() - t
            record(rec)
