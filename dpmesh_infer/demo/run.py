"""THE run function of the demo, plain Python (no Gradio): photos + options -> pictures, 3D scene,
per-person table, the zip of the results, and messages.

:func:`run_demo` never raises for a user error: a bad photo, a too large photo, a bad or non-matching
keypoint file, no person found, missing weights, a detector that cannot be loaded, a renderer that
does not start -- each becomes a :class:`Message` (level ``error`` / ``warning`` / ``info``), and the
photos that worked still give results. It writes, per run, the folder-run layout of ``dpmesh predict
photos/ --out OUT --render`` (:mod:`dpmesh_infer.batch`: the same writer, the same manifest lines)::

    dpmesh-results/manifest.jsonl        one JSON line per photo (batch.ImageRecord.to_json)
    dpmesh-results/keypoints.json        the keypoints every person was reconstructed from (dpmesh-keypoints
                                         format, by uploaded file name: `dpmesh predict --keypoints` reads it)
    dpmesh-results/<photo>/people.json   parameters per person (schema-versioned), written last
    dpmesh-results/<photo>/params.npz    plain arrays (no pickle)
    dpmesh-results/<photo>/person_NN.obj one mesh per person, photo camera frame (OpenCV axes)
    dpmesh-results/<photo>/scene.glb     every person, glTF camera frame (shown in the 3D view)
    dpmesh-results/<photo>/overlay.png   the meshes over the photo (when a renderer works)
    dpmesh-results/<photo>/side.png      the people seen from the side (when a renderer works)
    dpmesh-results/<photo>/keypoints.png the photo with the keypoints and boxes (demo only)

``<photo>`` is the uploaded file's stem (made unique). The folder is filled in a staging folder and
moved into place when complete, then zipped (``dpmesh-results-<time>.zip`` beside it).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DpmeshError, InputError, NoPersonError
from ..focal import FocalChoice, parse_focal_options

logger = logging.getLogger(__name__)

BUNDLE_DIR = "dpmesh-results"
KEYPOINTS_PNG = "keypoints.png"
KEYPOINTS_JSON = "keypoints.json"
#: Column headers of the per-person table (:meth:`PersonRow.cells`).
TABLE_COLUMNS = ("photo", "#", "status", "score", "keypoints", "box x,y,w,h", "depth (m)", "note")
#: Camera choices of the page: value -> label.
CAMERA_MODES = {
    "default": "default: f = sqrt(W² + H²), as trained",
    "pixels": "focal length (pixels)",
    "fov": "horizontal field of view (degrees)",
    "exif": "EXIF 35 mm focal length of the photo",
}

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What to run with.

    Attributes:
        keypoint_file: a keypoint file (any format of :func:`~dpmesh_infer.keypoint_files.read_keypoints`),
            matched to the photos by file name; None runs the detector.
        detector: built-in detector name (``dpmesh weights list-detectors``), used without keypoint file.
        det_thr, kpt_thr, max_people: the detector's thresholds (as ``dpmesh predict``).
        focal: the camera choice (default, pixels, fov or EXIF).
        batch_size: persons per network batch.
    """

    keypoint_file: str | Path | None = None
    detector: str = "rtmo-l"
    det_thr: float = 0.3
    kpt_thr: float = 0.3
    max_people: int | None = None
    focal: FocalChoice = FocalChoice()
    batch_size: int = 16


def demo_options(keypoint_file=None, detector: str = "rtmo-l", det_thr: float = 0.3, kpt_thr: float = 0.3,
                 max_people: float | None = None, camera: str = "default",
                 camera_value: float | None = None) -> DemoOptions:
    """The page's widget values -> :class:`DemoOptions` (``max_people`` 0 or empty = no limit).

    Raises:
        InputError: an unknown camera mode, a missing or invalid focal / field of view, a negative threshold.
    """
    if camera not in CAMERA_MODES:
        raise InputError(f"unknown camera choice {camera!r}; use one of {', '.join(CAMERA_MODES)}")
    if camera in ("pixels", "fov") and not camera_value:  # None or 0 (the page's empty value)
        raise InputError(f"the camera choice '{CAMERA_MODES[camera]}' needs a value")
    if camera == "pixels":
        focal = parse_focal_options(f"{float(camera_value):g}", None)
    elif camera == "fov":
        focal = parse_focal_options(None, float(camera_value))
    else:
        focal = parse_focal_options("exif" if camera == "exif" else None, None)
    for label, v in (("detection threshold", det_thr), ("keypoint threshold", kpt_thr)):
        if v is None or not 0.0 <= float(v) <= 1.0:
            raise InputError(f"the {label} must be between 0 and 1, got {v}")
    people = None if max_people in (None, "") or int(max_people) == 0 else int(max_people)
    if people is not None and people < 0:
        raise InputError(f"max people must be 0 (no limit) or more, got {people}")
    return DemoOptions(keypoint_file=keypoint_file or None, detector=str(detector), det_thr=float(det_thr),
                       kpt_thr=float(kpt_thr), max_people=people, focal=focal)


# ------------------------------------------------------------------------------------------ results

@dataclass(frozen=True)
class Message:
    """One message for the page. level: ``error`` (something did not run), ``warning``, ``info``."""

    level: str
    text: str


@dataclass
class PersonRow:
    """One row of the per-person table.

    Attributes:
        photo: uploaded file name.
        person: index in the image's keypoints (input order), None for a detection the detector dropped.
        status: ``reconstructed`` | ``skipped`` (keypoints unusable) | ``dropped`` (by the detector's thresholds).
        score: detection score (1.0 for keypoints given without a score), None when unknown.
        visible: keypoints above the pipeline's confidence threshold, and the number of joints given.
        box: [x, y, w, h] pixels: the square crop the network saw (reconstructed), else the detector's box.
        distance_m: depth of the pelvis in the photo camera, metres (reconstructed persons).
        note: why a person was skipped or dropped; the mesh file of a reconstructed one.
    """

    photo: str
    person: int | None
    status: str
    score: float | None = None
    visible: tuple[int, int] | None = None
    box: tuple[float, float, float, float] | None = None
    distance_m: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        """The row as the table's strings (TABLE_COLUMNS order)."""
        return [
            self.photo,
            "" if self.person is None else str(self.person),
            self.status,
            "" if self.score is None else f"{self.score:.2f}",
            "" if self.visible is None else f"{self.visible[0]}/{self.visible[1]}",
            "" if self.box is None else ",".join(f"{v:.0f}" for v in self.box),
            "" if self.distance_m is None else f"{self.distance_m:.2f}",
            self.note,
        ]


@dataclass
class ImageOutput:
    """One photo's outputs (paths under the run folder; None where there is none).

    ``folder`` is the photo's folder of the bundle (None when it failed); ``keypoints_png`` exists
    whenever the photo was read and has keypoints (also when no person could be reconstructed).
    """

    photo: str
    folder: Path | None = None
    keypoints_png: Path | None = None
    overlay: Path | None = None
    side: Path | None = None
    glb: Path | None = None
    persons: int = 0
    error: str | None = None


@dataclass
class DemoResult:
    """What a run produced: per photo its outputs, the table rows, the zip, the messages."""

    images: list[ImageOutput] = field(default_factory=list)
    rows: list[PersonRow] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    run_dir: Path | None = None
    bundle: Path | None = None
    seconds: float = 0.0

    @classmethod
    def failed(cls, text: str, *messages: Message) -> "DemoResult":
        return cls(messages=[*messages, Message("error", text)])

    @property
    def persons(self) -> int:
        return sum(im.persons for im in self.images)

    @property
    def errors(self) -> list[str]:
        return [m.text for m in self.messages if m.level == "error"]

    @property
    def scenes(self) -> dict[str, Path]:
        """Uploaded name -> scene.glb of every photo with persons (in upload order)."""
        return {im.photo: im.glb for im in self.images if im.glb is not None}


# ------------------------------------------------------------------------------------------ running

def run_demo(service, images: Sequence[str | Path] | None, options: DemoOptions = DemoOptions(), *,
             progress: Progress | None = None) -> DemoResult:
    """Reconstruct every person of ``images`` (uploaded files) with the service's pipeline.

    Args:
        service: the :class:`~dpmesh_infer.demo.service.DemoService` (pipeline, renderer, detectors, lock).
        images: paths of the photos (the file names are the names shown and matched in a keypoint file).
        options: keypoint file or detector settings, camera.
        progress: called with (fraction in [0, 1], what is being done).

    Returns:
        DemoResult; user errors are in ``messages`` (never raised).
    """
    from ..keypoint_files import read_keypoints
    from .service import UNTRAINED_RUN_NOTE

    t0 = time.perf_counter()
    say = progress or (lambda fraction, text: None)
    status = service.status
    if not status.ready:
        return DemoResult.failed(status.problem())
    head = [Message("warning", UNTRAINED_RUN_NOTE)] if status.untrained else []
    paths = [Path(p) for p in (images or []) if p]
    if not paths:
        return DemoResult.failed("No photo: upload one or more photos (JPEG, PNG, WebP, ...) or pick an example.",
                                 *head)
    if len(paths) > service.max_images:
        return DemoResult.failed(f"{len(paths)} photos uploaded; this demo takes at most {service.max_images} "
                                 "per run (dpmesh demo --max-images N). For folders of photos use "
                                 "`dpmesh predict photos/ --out results/`.", *head)
    names = _Names(paths, options.keypoint_file)
    kpset = None
    if options.keypoint_file is not None:
        try:
            kpset = read_keypoints(options.keypoint_file)
        except DpmeshError as e:
            return DemoResult.failed(f"Keypoint file: {names.clean(str(e))}", *head)
    with service.lock:
        run = _Run(service, options, kpset, names, say)
        run.result.messages[:0] = head
        run.go(paths)
    run.result.seconds = time.perf_counter() - t0
    return run.result


class _Names:
    """Display names of the uploaded files, and the cleaning of server paths out of messages."""

    def __init__(self, paths: Sequence[Path], keypoint_file) -> None:
        self.display = {str(p): p.name for p in paths}
        if keypoint_file is not None:
            self.display[str(keypoint_file)] = Path(keypoint_file).name

    def clean(self, text: str) -> str:
        """``text`` with the server-side paths of uploads replaced by their file names."""
        for full, short in sorted(self.display.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(full, short)
        return text


class _Run:
    """One run: its folders, records and result (see :func:`run_demo`)."""

    def __init__(self, service, options: DemoOptions, kpset, names: _Names, say: Progress) -> None:
        self.service, self.options, self.kpset, self.names, self.say = service, options, kpset, names, say
        self.pipe = service.pipe
        self.result = DemoResult()
        self.records: list = []
        self.used_keypoints: dict[str, list] = {}
        self.renderer = None

    def go(self, paths: list[Path]) -> None:
        from ..atomic import replace_dir, staging_dir

        detector = None
        if self.kpset is None:
            self.say(0.0, "loading the keypoint detector")
            detector = self._detector()
            if detector is None:
                return
        self.result.run_dir = run_dir = self.service.new_run_dir()
        out = run_dir / BUNDLE_DIR
        self.stage = staging_dir(out)
        self.previews = run_dir / "previews"
        self.renderer, why = self.service.renderer()
        if why:
            self._msg("warning", f"No overlay or side view: {why}")
        rels = _unique_rels(paths)
        n = len(paths)
        for i, (path, rel) in enumerate(zip(paths, rels)):
            self._one(path, rel, detector, lambda f, text, i=i: self.say((i + f) / n, f"{path.name}: {text}"))
        done = [r for r in self.records if r.status == "done"]
        if not done:
            shutil.rmtree(self.stage, ignore_errors=True)
            if not self.result.errors:
                self._msg("error", "No person could be reconstructed.")
            return
        self.say(0.97, "writing the zip")
        self._write_run_files()
        replace_dir(self.stage, out)
        for im in self.result.images:  # paths now under the final folder
            if im.folder is not None:
                im.folder = out / im.folder.relative_to(self.stage)
                im.keypoints_png = im.folder / KEYPOINTS_PNG
                im.glb = im.folder / "scene.glb"
                im.overlay = im.folder / "overlay.png" if (im.folder / "overlay.png").is_file() else None
                im.side = im.folder / "side.png" if (im.folder / "side.png").is_file() else None
        self.result.bundle = _zip_folder(out, run_dir / f"{BUNDLE_DIR}-{time.strftime('%Y%m%d-%H%M%S')}.zip")
        people = self.result.persons
        self._msg("info", f"{people} {'person' if people == 1 else 'people'} reconstructed in {len(done)} of "
                          f"{len(paths)} photo{'s' if len(paths) != 1 else ''}. Download the zip for every file "
                          "(meshes, parameters, pictures).")
        self.say(1.0, "done")

    # ------------------------------------------------------------------ pieces

    def _msg(self, level: str, text: str) -> None:
        self.result.messages.append(Message(level, self.names.clean(text)))

    def _detector(self):
        from ..detect.mmpose_detector import Thresholds

        o = self.options
        try:
            th = Thresholds(det_thr=o.det_thr, kpt_thr=o.kpt_thr, max_people=o.max_people)
            return self.service.detector(o.detector, th)
        except DpmeshError as e:
            self._msg("error", f"No keypoint file was given, and the keypoint detector cannot run: {e}\n"
                               "Upload a keypoint file (COCO keypoint results, OpenPose JSON or `dpmesh detect` "
                               "output), or make the detector's weights available and restart the demo.")
            return None

    def _one(self, path: Path, rel: str, detector, say: Progress) -> None:
        """Load, find keypoints, reconstruct, write one photo; failures are recorded and said."""
        from ..batch import ImageRecord
        from ..inputs import InputImage

        name = path.name
        rec = ImageRecord(InputImage(Path(name), name, rel), "done", Path(BUNDLE_DIR) / rel)
        self.records.append(rec)
        image_out = ImageOutput(photo=name)
        self.result.images.append(image_out)
        try:
            self._reconstruct(path, rel, rec, image_out, detector, say)
        except DpmeshError as e:
            rec.status, rec.error = "failed", self.names.clean(str(e))
        except Exception as e:  # noqa: BLE001 -- a bug must not take the page down; the log has the trace
            logger.exception("demo: processing %s failed", name)
            rec.status, rec.error = "failed", f"internal error ({type(e).__name__}: {e}); see the server log"
        if rec.status == "failed":
            image_out.error = rec.error
            image_out.folder = None
            self._msg("error", rec.error if rec.error.startswith(f"{name}: ") else f"{name}: {rec.error}")

    def _reconstruct(self, path: Path, rel: str, rec, image_out: ImageOutput, detector, say: Progress) -> None:
        from ..images import load_image

        t = time.perf_counter()
        say(0.0, "reading")
        rgb = load_image(path, max_pixels=self.service.max_pixels)
        rec.seconds["load"] = time.perf_counter() - t
        t = time.perf_counter()
        say(0.15, "keypoints")
        persons, dropped = self._keypoints(path.name, rgb, detector)
        rec.seconds["keypoints"] = time.perf_counter() - t
        rec.dropped = [f"detection (score {d.score:.2f}) dropped: {d.reason}" for d in dropped]
        for d in dropped:
            self.result.rows.append(PersonRow(path.name, None, "dropped", float(d.score),
                                              box=tuple(float(v) for v in d.bbox), note=d.reason))
        t = time.perf_counter()
        say(0.35, "reconstructing")
        out = self.pipe(rgb, keypoints=persons, focal=self.options.focal, batch_size=self.options.batch_size,
                        max_pixels=self.service.max_pixels, sources=[str(path)])
        res = out[0]
        res.source = path.name  # not the server's upload path
        rec.seconds["infer"] = time.perf_counter() - t
        rec.focal_source = res.focal_source
        rec.skipped_persons = list(res.skipped)
        self.used_keypoints[path.name] = list(persons)
        rows = self._rows(path.name, persons, res)
        self.result.rows.extend(rows)
        picture = self._keypoint_picture(rgb, persons, res)
        if not res.persons:
            why = "; ".join(f"person {i}: {r}" for i, r in res.skipped)
            if not persons:
                why = ("the detector kept no person" + (f" ({len(dropped)} dropped by the thresholds: see the "
                                                       "table; try a lower detection threshold)" if dropped else "")
                       if self.kpset is None else "the keypoint file lists no person for this photo")
            image_out.keypoints_png = self._write_png(self.previews / f"{rel}.png", picture)
            raise NoPersonError(f"no person could be reconstructed ({why})")
        t = time.perf_counter()
        say(0.6, "rendering and writing" if self.renderer is not None else "writing")
        folder = self.stage / rel
        self._write(res, out.faces, folder, rgb)
        self._write_png(folder / KEYPOINTS_PNG, picture)
        rec.seconds["write"] = time.perf_counter() - t
        rec.persons = len(res.persons)
        image_out.folder, image_out.persons = folder, len(res.persons)
        if res.skipped:
            self._msg("warning", f"{path.name}: {len(res.skipped)} of {len(persons)} people skipped (reasons in the "
                                 "table).")

    def _keypoints(self, name: str, rgb: np.ndarray, detector):
        """(KeypointPerson list, DroppedPerson list) of one photo, from the keypoint file or the detector."""
        if self.kpset is not None:
            persons = self.kpset.lookup(name)
            if persons is None:
                raise InputError(f"the keypoint file {Path(self.kpset.source).name} has no keypoints for {name} "
                                 "(entries are matched by file name)")
            return list(persons), []
        found = detector.detect([rgb])
        return [p.to_keypoint_person() for p in found.people[0]], list(found.dropped)

    def _rows(self, name: str, persons: list, res) -> list[PersonRow]:
        thr = self.pipe.config.preprocess.conf_thr
        skipped = dict(res.skipped)
        done = iter(enumerate(res.persons))  # persons in input order, skipped ones left out
        rows = []
        for i, kp in enumerate(persons):
            visible = (int((np.asarray(kp.keypoints)[:, 2] > thr).sum()), int(len(kp.keypoints)))
            if i in skipped:
                box = None if kp.bbox is None else tuple(float(v) for v in kp.bbox)
                score = 1.0 if kp.score is None else float(kp.score)
                rows.append(PersonRow(name, i, "skipped", score, visible, box, note=skipped[i]))
                continue
            j, p = next(done)
            rows.append(PersonRow(name, i, "reconstructed", float(p.score), visible,
                                  tuple(float(v) for v in p.bbox), float(p.joints[0, 2]), note=f"person_{j:02d}.obj"))
        return rows

    def _keypoint_picture(self, rgb: np.ndarray, persons: list, res) -> np.ndarray:
        from ..render import person_colors
        from .draw import SKIPPED_RGB, DrawnPerson, draw_people

        skipped = {i for i, _ in res.skipped}
        colors = person_colors(len(res.persons))
        done = iter(enumerate(res.persons))
        drawn = []
        for i, kp in enumerate(persons):
            if i in skipped:
                drawn.append(DrawnPerson(kp.kp30(), kp.bbox, SKIPPED_RGB, f"#{i} skipped"))
                continue
            j, p = next(done)
            rgb_color = tuple(int(round(c * 255)) for c in colors[j])
            drawn.append(DrawnPerson(kp.kp30(), p.bbox, rgb_color, f"#{i} {p.score:.2f}"))
        return draw_people(rgb, drawn, conf_thr=self.pipe.config.preprocess.conf_thr)

    def _write(self, res, faces, folder: Path, rgb: np.ndarray) -> None:
        """The folder-run files of one photo (batch.write_image_outputs); a failed render turns rendering off
        for the server (said once) and the files are written without the pictures."""
        from ..batch import write_image_outputs
        from ..errors import RenderError

        try:
            write_image_outputs(res, faces, folder, image=rgb, renderer=self.renderer)
        except RenderError as e:
            self.service.disable_renderer(str(e))
            self.renderer = None
            self._msg("warning", f"No overlay or side view: {e}")
            write_image_outputs(res, faces, folder, image=rgb, renderer=None)

    @staticmethod
    def _write_png(path: Path, image: np.ndarray) -> Path:
        from ..atomic import write_bytes
        from ..render import encode_png

        return write_bytes(path, encode_png(image))

    def _write_run_files(self) -> None:
        from ..atomic import write_text
        from ..batch import MANIFEST_NAME
        from ..keypoint_files import write_keypoints_json

        lines = "".join(json.dumps(r.to_json()) + "\n" for r in self.records)
        write_text(self.stage / MANIFEST_NAME, lines)
        # inside the staging folder, which appears complete or not at all (replace_dir)
        write_keypoints_json(self.stage / KEYPOINTS_JSON, self.used_keypoints)


_RESERVED = {"manifest.jsonl", KEYPOINTS_JSON, "previews"}


def _unique_rels(paths: Sequence[Path]) -> list[str]:
    """Output folder names: the file stems, made safe ([A-Za-z0-9._-]) and unique (``-2``, ``-3``...)."""
    seen: set[str] = set()
    out = []
    for p in paths:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(p).stem).strip("._") or "photo"
        rel, k = base, 1
        while rel.lower() in seen or rel in _RESERVED:
            k += 1
            rel = f"{base}-{k}"
        seen.add(rel.lower())
        out.append(rel)
    return out


def _zip_folder(folder: Path, zip_path: Path) -> Path:
    """``folder`` as a zip (entries under ``folder.name/``), written atomically."""
    from ..atomic import write_with

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    z.write(p, arcname=f"{folder.name}/{p.relative_to(folder).as_posix()}")

    return write_with(zip_path, write)
