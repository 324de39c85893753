"""Pieces shared by the dataset converters (:mod:`dpmesh_infer.data.converters`).

JSON reading with errors that name the file, COCO-style index building, NeuralAnnot SMPL entries,
split-name inference, output preparation and the :class:`ConversionResult` every converter returns.
Only numpy is imported here.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .format import DatasetError, DatasetWriter, ImageAnnotation, SMPLParams

log = logging.getLogger(__name__)

#: Split names recognised in annotation file names when ``split`` is not given (longest first).
KNOWN_SPLITS = ("trainval", "validation", "train", "val", "test")


@dataclasses.dataclass
class ConversionResult:
    """What a converter wrote.

    Attributes:
        out: the dataset directory (``dataset.json`` + ``annotations/<split>.jsonl``).
        split: the split written.
        images: image records written (images with at least one kept person).
        persons: persons written.
        with_smpl: persons with SMPL parameters (``smpl`` not null).
        with_input_keypoints: persons with detector keypoints (``input_keypoints`` not null).
        skipped: reason -> count of persons (or images, when the reason says so) left out.
        tags: tag -> number of image records carrying it.
        notes: other facts worth telling the user (e.g. an image-size correction).
    """

    out: Path
    split: str
    images: int = 0
    persons: int = 0
    with_smpl: int = 0
    with_input_keypoints: int = 0
    skipped: dict[str, int] = dataclasses.field(default_factory=collections.Counter)
    tags: dict[str, int] = dataclasses.field(default_factory=collections.Counter)
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """One line: counts written, skip reasons with counts, tags, notes."""
        line = (f"{self.out} [{self.split}]: {self.images} images, {self.persons} persons "
                f"({self.with_smpl} with SMPL, {self.with_input_keypoints} with input keypoints)")
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()) if n)
        line += f"; skipped: {skipped}" if skipped else "; skipped: none"
        if self.tags:
            line += "; tags: " + ", ".join(f"{t} {n}" for t, n in sorted(self.tags.items()))
        if self.notes:
            line += "; " + "; ".join(self.notes)
        return line


# --------------------------------------------------------------------------- reading


def read_json(path: str | os.PathLike, what: str):
    """Parse one JSON file; a missing or malformed file raises DatasetError naming it and ``what`` it is."""
    from ..config import read_json as _read

    return _read(path, error=DatasetError, what=f"{what} file")


def numbers(value, shape: tuple[int, ...], where: str, name: str) -> np.ndarray:
    """``value`` (nested or flat list) as a finite float64 array of ``shape``; DatasetError otherwise."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} must be a list of numbers") from None
    if a.size != int(np.prod(shape)):
        raise DatasetError(f"{where}: {name} has {a.size} numbers, expected {int(np.prod(shape))} "
                           f"(shape {shape})")
    if not np.all(np.isfinite(a)):
        raise DatasetError(f"{where}: {name} contains NaN or infinite values")
    return a.reshape(shape)


def keypoints_xyv(value, num_joints: int, where: str, name: str = "keypoints") -> np.ndarray:
    """COCO-style keypoints (flat ``[x1, y1, v1, ...]`` or ``J x 3``) -> (J,3) float64 [x, y, v]."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} must be a list of numbers") from None
    if a.size != 3 * num_joints:
        raise DatasetError(f"{where}: {name} has {a.size} numbers, expected {3 * num_joints} "
                           f"({num_joints} joints x [x, y, v]); is this the right dataset?")
    if not np.all(np.isfinite(a)):
        raise DatasetError(f"{where}: {name} contains NaN or infinite values")
    return a.reshape(num_joints, 3)


class CocoFile:
    """A COCO-style annotation file: ``images`` by id (file order) and ``annotations`` grouped by image
    (file order). Every annotation needs an ``id`` and an ``image_id`` that is in ``images``.

    ``where(ann)`` names an annotation in error messages ("FILE: annotation id 12").
    """

    def __init__(self, path: str | os.PathLike, what: str, *, keypoint_names: tuple[str, ...] | None = None) -> None:
        self.path = Path(path)
        data = read_json(self.path, what)
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
                or not isinstance(data.get("annotations"), list):
            raise DatasetError(f"{self.path}: not a COCO-style {what}: expected an object with 'images' and "
                               "'annotations' lists")
        if keypoint_names is not None:
            self._check_categories(data.get("categories"), keypoint_names)
        self.images: dict = {}
        for i, img in enumerate(data["images"]):
            if not isinstance(img, dict) or "id" not in img:
                raise DatasetError(f"{self.path}: images[{i}] must be an object with an 'id'")
            if img["id"] in self.images:
                raise DatasetError(f"{self.path}: image id {img['id']} appears twice")
            self.images[img["id"]] = img
        self.by_image: dict = {iid: [] for iid in self.images}
        seen = set()
        for i, ann in enumerate(data["annotations"]):
            if not isinstance(ann, dict) or "image_id" not in ann or "id" not in ann:
                raise DatasetError(f"{self.path}: annotations[{i}] must be an object with an 'id' and an 'image_id'")
            if ann["image_id"] not in self.images:
                raise DatasetError(f"{self.where(ann)}: image_id {ann['image_id']} is not in 'images'")
            if ann["id"] in seen:
                raise DatasetError(f"{self.path}: annotation id {ann['id']} appears twice")
            seen.add(ann["id"])
            self.by_image[ann["image_id"]].append(ann)

    def where(self, ann: dict) -> str:
        return f"{self.path}: annotation id {ann['id']}"

    def image_where(self, img: dict) -> str:
        return f"{self.path}: image id {img['id']}"

    def _check_categories(self, categories, names: tuple[str, ...]) -> None:
        """If the file names its person keypoints, they must be ``names`` (catches passing the wrong file)."""
        if not isinstance(categories, list):
            return
        for cat in categories:
            if isinstance(cat, dict) and isinstance(cat.get("keypoints"), list):
                found = tuple(str(k) for k in cat["keypoints"])
                if found != names:
                    raise DatasetError(f"{self.path}: category {cat.get('name', '?')!r} has keypoints {list(found)}, "
                                       f"expected the {len(names)} keypoints {list(names)}; is this the right dataset?")


def image_size(img: dict, where: str) -> tuple[int, int]:
    """(width, height) of a COCO image entry, positive integers."""
    w, h = img.get("width"), img.get("height")
    if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0 and int(w) == w
            and int(h) == h):
        raise DatasetError(f"{where}: width and height must be positive integers (got {w!r}, {h!r})")
    return int(w), int(h)


def bbox_xywh(value, where: str) -> np.ndarray | None:
    """A COCO ``bbox`` [x, y, w, h] (image px) as float64 (4,), kept as annotated; None when absent."""
    if value is None:
        return None
    return numbers(value, (4,), where, "bbox")


# --------------------------------------------------------------------------- NeuralAnnot


class NeuralAnnot:
    """NeuralAnnot SMPL pseudo-GT: ``{"<annotation id>": {"smpl_param": {"pose": [72], "shape": [10],
    "trans": [3]}, "cam_param": {"focal": [2], "princpt": [2]}, "fit_err"?: float}}``.

    Entries are parsed when asked for (:meth:`get`), so a broken entry of a person that is not
    converted does not stop the conversion. ``max_fit_err``: entries with a ``fit_err`` above it get
    ``valid=False`` (kept, not supervised); entries without ``fit_err`` are valid.
    """

    def __init__(self, path: str | os.PathLike, *, max_fit_err: float | None = None) -> None:
        self.path = Path(path)
        data = read_json(self.path, "NeuralAnnot SMPL file")
        if not isinstance(data, dict):
            raise DatasetError(f"{self.path}: NeuralAnnot SMPL file must be an object keyed by annotation id")
        self.entries = data
        self.max_fit_err = max_fit_err
        self.used = 0
        self.poor_fits = 0

    def get(self, ann_id) -> SMPLParams | None:
        """SMPL of annotation ``ann_id`` (neutral gender, no translation), or None when it has no entry."""
        entry = self.entries.get(str(ann_id))
        if entry is None:
            return None
        where = f"{self.path}: entry {str(ann_id)!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("smpl_param"), dict):
            raise DatasetError(f"{where}: expected an object with 'smpl_param' {{pose, shape, trans}}")
        sp = entry["smpl_param"]
        for key in ("pose", "shape"):
            if key not in sp:
                raise DatasetError(f"{where}: smpl_param has no {key!r}")
        pose = numbers(sp["pose"], (72,), where, "smpl_param.pose")
        betas = numbers(sp["shape"], (10,), where, "smpl_param.shape")
        valid = True
        if self.max_fit_err is not None and entry.get("fit_err") is not None:
            fit_err = entry["fit_err"]
            if not isinstance(fit_err, (int, float)):
                raise DatasetError(f"{where}: fit_err must be a number")
            valid = bool(fit_err <= self.max_fit_err)
        self.used += 1
        self.poor_fits += not valid
        # transl stays None: NeuralAnnot's trans is in a per-person virtual camera (docs/DATA.md)
        return SMPLParams(global_orient=pose[:3].astype(np.float32), body_pose=pose[3:].astype(np.float32),
                          betas=betas.astype(np.float32), transl=None, gender="neutral", valid=valid)


# --------------------------------------------------------------------------- output


def infer_split(path: str | os.PathLike, split: str | None) -> str:
    """``split`` if given, else the split word in the file name (train, val, validation, test, trainval)."""
    if split is not None:
        if not split or "/" in split or "\\" in split or split.startswith("."):
            raise DatasetError(f"bad split name {split!r}: use a plain name such as 'train'")
        return split
    stem = Path(path).stem.lower()
    words = re.split(r"[^a-z]+", stem)
    for name in KNOWN_SPLITS:
        if name in words:
            return name
    raise DatasetError(f"{path}: cannot tell the split from the file name; pass --split NAME")


def prepare_out(out: str | os.PathLike, overwrite: bool, *, split: str | None = None,
                inputs: Sequence[tuple[str, str | os.PathLike | None]] = ()) -> Path:
    """The output directory; an existing dataset there is an error unless ``overwrite``, and so is an
    input (``inputs``: (what, path)) at a path the dataset writes (OutputConflictError, exit 2)."""
    from ..inputs import refuse_overwriting_inputs

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a directory")
    written = [out / "dataset.json"] + ([out / "annotations" / f"{split}.jsonl"] if split else [])
    refuse_overwriting_inputs(inputs=[(w, p) for w, p in inputs if p is not None], files=written)
    if (out / "dataset.json").exists() and not overwrite:
        raise DatasetError(f"{out} already holds a dataset (dataset.json); pass --overwrite to replace it, "
                           "or choose another --out")
    return out


def image_root_value(images: str | os.PathLike) -> Path:
    """The absolute image root stored in dataset.json (images are never copied)."""
    root = Path(images).expanduser()
    if not root.is_dir():
        raise DatasetError(f"image directory not found: {root} (--images must be the folder the annotation "
                           "file's image paths are relative to)")
    return root.resolve()


def check_image_files(root: Path, records: list[ImageAnnotation], annotations: Path) -> None:
    """Every ``root / record.image`` must be a file; DatasetError naming the first few that are not."""
    missing = [r.image for r in records if not (root / r.image).is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DatasetError(f"{annotations}: {len(missing)} of {len(records)} referenced images are missing under "
                           f"{root}: {shown}")


def write_records(out: Path, *, name: str, image_root: Path, source: str, notes: str, split: str,
                  records: list[ImageAnnotation], result: ConversionResult) -> ConversionResult:
    """Write ``records`` as ``split`` of a new dataset at ``out`` and fill the counts of ``result``."""
    with DatasetWriter(out, name=name, image_root=image_root, source=source, notes=notes) as writer:
        for rec in records:
            writer.add(split, rec)
    for rec in records:
        result.images += 1
        result.persons += len(rec.persons)
        result.with_smpl += sum(p.smpl is not None for p in rec.persons)
        result.with_input_keypoints += sum(p.input_keypoints is not None for p in rec.persons)
        for tag in rec.tags:
            result.tags[tag] += 1
    log.info("wrote %s", result.summary())
    return result
