"""The one on-disk sample format of dpmesh training and evaluation data (``dpmesh-dataset`` v1).

Layout of a dataset directory::

    DATASET/
      dataset.json                 {"format": "dpmesh-dataset", "format_version": 1, "name": str,
                                    "image_root": str,   # images are image_root/<record image>;
                                                         # relative paths are relative to DATASET
                                    "splits": {"train": "annotations/train.jsonl", ...},
                                    "source": str,       # converter / generator that wrote it
                                    "notes": str}
      annotations/<split>.jsonl    one JSON object per image (below), one per line

One image record::

    {"image": "relative/path.jpg", "width": W, "height": H,
     "camera": {"focal": [fx, fy], "principal": [cx, cy]} | null,   # pixels; null = unknown
     "tags": ["3dpw-oc", ...],                                       # subsets the image belongs to
     "persons": [person, ...]}

One person::

    {"keypoints_2d": [[x, y, v] x 30],        # GT, internal 30-joint set (ARCHITECTURE §2), image px;
                                             # v = visibility in [0, 1], 0 = not annotated
     "bbox": [x, y, w, h] | null,             # image px
     "input_keypoints": {"format": "coco17" | "openpose18" | "openpose25" | "j30",
                         "keypoints": [[x, y, conf] x J]} | null,   # a detector's output for this
                                             # person (evaluation inputs, e.g. 3DPW OpenPose)
     "joints_3d": [[X, Y, Z] x 30] | null,    # GT camera-frame joints, metres
     "joints_3d_valid": [0|1 x 30] | null,
     "smpl": {"global_orient": [3], "body_pose": [69], "betas": [10],      # axis-angle, radians
              "transl": [3] | null,           # camera frame, metres (SMPL origin convention of smplx)
              "gender": "neutral" | "male" | "female",
              "valid": true | false} | null,  # false = a poor pseudo-GT fit: kept, not supervised
     "tags": [...]}

Coordinates: x right, y down in pixels; the 3D camera frame is OpenCV's (x right, y down, z forward),
so that ``K @ joints_3d`` projects onto ``keypoints_2d`` when ``camera`` is given.

Readers never execute anything from the files (plain JSON). Every problem names the file, the line
and the field (:class:`DatasetError`, an :class:`~dpmesh_infer.errors.InputError`, exit code 2).
Writers write each file to a temporary name and rename it, ``dataset.json`` last: a directory with a
``dataset.json`` is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import AtomicFile, write_text
from ..config import read_json
from ..errors import DatasetError
from ..geometry.joints import J30_NAMES

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "DatasetError", "SMPLParams", "PersonAnnotation", "ImageAnnotation",
    "DatasetWriter", "Dataset", "open_dataset",
]

FORMAT_NAME = "dpmesh-dataset"
FORMAT_VERSION = 1
NUM_JOINTS = len(J30_NAMES)
INPUT_FORMATS = {"coco17": 17, "openpose18": 18, "openpose25": 25, "j30": 30}
GENDERS = ("neutral", "male", "female")


# --------------------------------------------------------------------------- records


@dataclasses.dataclass
class SMPLParams:
    """SMPL parameters of one person: global_orient (3,), body_pose (69,) axis-angle radians; betas
    (10,); transl (3,) camera frame metres or None; gender; valid = usable as supervision."""

    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray | None = None
    gender: str = "neutral"
    valid: bool = True

    @property
    def pose72(self) -> np.ndarray:
        """(72,) float32 [global_orient, body_pose]."""
        return np.concatenate([self.global_orient, self.body_pose]).astype(np.float32)


@dataclasses.dataclass
class PersonAnnotation:
    """One person. keypoints_2d (30,3) float32 [x, y, visibility] image px (J30 set); bbox (4,) xywh or
    None; input_keypoints (J,3) float32 with input_format, or None; joints_3d (30,3) float32 camera
    metres or None with joints_3d_valid (30,) float32; smpl or None; tags."""

    keypoints_2d: np.ndarray
    bbox: np.ndarray | None = None
    input_keypoints: np.ndarray | None = None
    input_format: str | None = None
    joints_3d: np.ndarray | None = None
    joints_3d_valid: np.ndarray | None = None
    smpl: SMPLParams | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ImageAnnotation:
    """One image: ``image`` path relative to the dataset's image root, size (px), optional camera
    (focal (2,) and principal (2,) px), persons, tags. ``split`` and ``index`` are set by the reader
    (position of the record in its split file)."""

    image: str
    width: int
    height: int
    persons: list[PersonAnnotation]
    focal: np.ndarray | None = None
    principal: np.ndarray | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    split: str = ""
    index: int = -1

    def model_focal(self) -> float:
        """sqrt(W^2 + H^2): the focal length the model works with (ARCHITECTURE §3)."""
        return float(np.hypot(self.width, self.height))


# --------------------------------------------------------------------------- encode / decode


def _arr(value, shape: tuple[int, ...], where: str, name: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} must be numbers of shape {shape}") from None
    if a.shape != shape:
        raise DatasetError(f"{where}: {name} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise DatasetError(f"{where}: {name} contains NaN or infinite values")
    return a.astype(np.float32)


def _list(a: np.ndarray | None, digits: int = 6):
    if a is None:
        return None
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def encode_person(p: PersonAnnotation) -> dict:
    d: dict = {"keypoints_2d": _list(p.keypoints_2d, 3), "bbox": _list(p.bbox, 3)}
    d["input_keypoints"] = (None if p.input_keypoints is None else
                            {"format": p.input_format, "keypoints": _list(p.input_keypoints, 3)})
    d["joints_3d"] = _list(p.joints_3d)
    d["joints_3d_valid"] = None if p.joints_3d_valid is None else [int(v > 0) for v in p.joints_3d_valid]
    if p.smpl is None:
        d["smpl"] = None
    else:
        s = p.smpl
        d["smpl"] = {"global_orient": _list(s.global_orient), "body_pose": _list(s.body_pose),
                     "betas": _list(s.betas), "transl": _list(s.transl), "gender": s.gender,
                     "valid": bool(s.valid)}
    d["tags"] = list(p.tags)
    return d


def encode_image(rec: ImageAnnotation) -> dict:
    cam = None
    if rec.focal is not None:
        cam = {"focal": _list(rec.focal, 4),
               "principal": _list(rec.principal if rec.principal is not None
                                  else np.array([rec.width / 2, rec.height / 2]), 4)}
    return {"image": rec.image, "width": int(rec.width), "height": int(rec.height), "camera": cam,
            "tags": list(rec.tags), "persons": [encode_person(p) for p in rec.persons]}


def _tags(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise DatasetError(f"{where}: tags must be a list of strings")
    return list(value)


def decode_person(d, where: str) -> PersonAnnotation:
    if not isinstance(d, dict):
        raise DatasetError(f"{where}: a person must be a JSON object")
    unknown = set(d) - {"keypoints_2d", "bbox", "input_keypoints", "joints_3d", "joints_3d_valid", "smpl", "tags"}
    if unknown:
        raise DatasetError(f"{where}: unknown person fields {sorted(unknown)}")
    if "keypoints_2d" not in d:
        raise DatasetError(f"{where}: person has no keypoints_2d")
    kp = _arr(d["keypoints_2d"], (NUM_JOINTS, 3), where, "keypoints_2d")
    if np.any(kp[:, 2] < 0) or np.any(kp[:, 2] > 1):
        raise DatasetError(f"{where}: keypoints_2d visibility must be in [0, 1]")
    bbox = None if d.get("bbox") is None else _arr(d["bbox"], (4,), where, "bbox")
    inp = fmt = None
    if d.get("input_keypoints") is not None:
        ik = d["input_keypoints"]
        if not isinstance(ik, dict) or ik.get("format") not in INPUT_FORMATS:
            raise DatasetError(f"{where}: input_keypoints must be {{'format': one of {sorted(INPUT_FORMATS)}, "
                               "'keypoints': [[x, y, conf], ...]}}")
        fmt = ik["format"]
        inp = _arr(ik.get("keypoints"), (INPUT_FORMATS[fmt], 3), where, "input_keypoints.keypoints")
        if np.any(inp[:, 2] < 0):
            raise DatasetError(f"{where}: input_keypoints have negative confidences")
    j3d = None if d.get("joints_3d") is None else _arr(d["joints_3d"], (NUM_JOINTS, 3), where, "joints_3d")
    j3dv = None
    if j3d is not None:
        j3dv = (np.ones(NUM_JOINTS, np.float32) if d.get("joints_3d_valid") is None
                else _arr(d["joints_3d_valid"], (NUM_JOINTS,), where, "joints_3d_valid"))
    smpl = None
    if d.get("smpl") is not None:
        s = d["smpl"]
        if not isinstance(s, dict):
            raise DatasetError(f"{where}: smpl must be an object")
        gender = s.get("gender", "neutral")
        if gender not in GENDERS:
            raise DatasetError(f"{where}: smpl.gender {gender!r} is not one of {list(GENDERS)}")
        valid = s.get("valid", True)
        if not isinstance(valid, bool):
            raise DatasetError(f"{where}: smpl.valid must be true or false")
        smpl = SMPLParams(
            global_orient=_arr(s.get("global_orient"), (3,), where, "smpl.global_orient"),
            body_pose=_arr(s.get("body_pose"), (69,), where, "smpl.body_pose"),
            betas=_arr(s.get("betas"), (10,), where, "smpl.betas"),
            transl=None if s.get("transl") is None else _arr(s["transl"], (3,), where, "smpl.transl"),
            gender=gender, valid=valid)
    return PersonAnnotation(keypoints_2d=kp, bbox=bbox, input_keypoints=inp, input_format=fmt, joints_3d=j3d,
                            joints_3d_valid=j3dv, smpl=smpl, tags=_tags(d.get("tags"), where))


def decode_image(d, where: str, split: str = "", index: int = -1) -> ImageAnnotation:
    if not isinstance(d, dict):
        raise DatasetError(f"{where}: a record must be a JSON object")
    for key in ("image", "width", "height", "persons"):
        if key not in d:
            raise DatasetError(f"{where}: record has no {key!r}")
    if not isinstance(d["image"], str) or not d["image"]:
        raise DatasetError(f"{where}: image must be a non-empty relative path")
    w, h = d["width"], d["height"]
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise DatasetError(f"{where}: width and height must be positive integers")
    if not isinstance(d["persons"], list):
        raise DatasetError(f"{where}: persons must be a list")
    focal = principal = None
    if d.get("camera") is not None:
        cam = d["camera"]
        if not isinstance(cam, dict):
            raise DatasetError(f"{where}: camera must be an object or null")
        focal = _arr(cam.get("focal"), (2,), where, "camera.focal")
        if np.any(focal <= 0):
            raise DatasetError(f"{where}: camera.focal must be positive")
        principal = _arr(cam.get("principal"), (2,), where, "camera.principal")
    persons = [decode_person(p, f"{where} person {i}") for i, p in enumerate(d["persons"])]
    return ImageAnnotation(image=d["image"], width=w, height=h, persons=persons, focal=focal, principal=principal,
                           tags=_tags(d.get("tags"), where), split=split, index=index)


# --------------------------------------------------------------------------- writer / reader


class DatasetWriter:
    """Writes a dataset directory. Use as a context manager; ``dataset.json`` is written on success.

    >>> with DatasetWriter(out, name="coco-train", image_root="/data/coco/train2017") as w:
    ...     w.add("train", record)
    """

    def __init__(self, root: str | os.PathLike, *, name: str, image_root: str | os.PathLike = "images",
                 source: str = "", notes: str = "") -> None:
        self.root = Path(root)
        self.name, self.source, self.notes = name, source, notes
        self.image_root = str(image_root)
        self._files: dict[str, object] = {}
        self.counts: dict[str, dict[str, int]] = {}

    def __enter__(self) -> "DatasetWriter":
        (self.root / "annotations").mkdir(parents=True, exist_ok=True)
        return self

    def add(self, split: str, record: ImageAnnotation) -> None:
        if not split or "/" in split or split.startswith("."):
            raise ValueError(f"bad split name {split!r}")
        f = self._files.get(split)
        if f is None:
            f = AtomicFile(self.root / "annotations" / f"{split}.jsonl", "w")
            self._files[split] = f
            self.counts[split] = {"images": 0, "persons": 0}
        f.file.write(json.dumps(encode_image(record), separators=(",", ":")) + "\n")
        self.counts[split]["images"] += 1
        self.counts[split]["persons"] += len(record.persons)

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self._files.values():
            if exc_type is None:
                f.commit()
            else:
                f.discard()
        if exc_type is not None:
            return
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": self.name,
                "image_root": self.image_root,
                "splits": {s: f"annotations/{s}.jsonl" for s in sorted(self._files)},
                "counts": self.counts, "source": self.source, "notes": self.notes}
        write_text(self.root / "dataset.json", json.dumps(meta, indent=2) + "\n")


class Dataset:
    """A dataset directory opened for reading (see the module docstring for the format)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        meta_path = self.root / "dataset.json"
        if not meta_path.is_file():
            raise DatasetError(f"{self.root} is not a dpmesh dataset: {meta_path} is missing "
                               "(write one with `dpmesh data convert ...` or `dpmesh data synthetic`)")
        meta = read_json(meta_path, error=DatasetError, what="dataset description")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise DatasetError(f"{meta_path}: 'format' must be {FORMAT_NAME!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{meta_path}: format_version {meta.get('format_version')!r} is not supported "
                               f"(this version reads {FORMAT_VERSION})")
        splits = meta.get("splits")
        if not isinstance(splits, dict) or not splits:
            raise DatasetError(f"{meta_path}: 'splits' must map split names to annotation files")
        self.meta = meta
        self.name = str(meta.get("name", self.root.name))
        self.splits = {str(k): self.root / v for k, v in splits.items()}
        root_value = Path(str(meta.get("image_root", "images")))
        self.image_root = root_value if root_value.is_absolute() else self.root / root_value
        self._cache: dict[str, list[ImageAnnotation]] = {}

    def _split_path(self, split: str) -> Path:
        if split not in self.splits:
            raise DatasetError(f"{self.root}: no split {split!r} (has {sorted(self.splits)})")
        return self.splits[split]

    def iter_records(self, split: str) -> Iterator[ImageAnnotation]:
        """Records of ``split`` in file order (validated as they are read)."""
        path = self._split_path(split)
        if not path.is_file():
            raise DatasetError(f"{path} (split {split!r} of {self.root}) is missing")
        with open(path, encoding="utf-8") as f:
            index = 0
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DatasetError(f"{where}: not valid JSON ({e.msg})") from None
                except RecursionError:
                    raise DatasetError(f"{where}: JSON nested too deeply") from None
                yield decode_image(d, where, split, index)
                index += 1

    def records(self, split: str) -> list[ImageAnnotation]:
        """All records of ``split`` (read once, then cached)."""
        if split not in self._cache:
            self._cache[split] = list(self.iter_records(split))
        return self._cache[split]

    def image_path(self, record: ImageAnnotation) -> Path:
        return self.image_root / record.image


def open_dataset(root: str | os.PathLike) -> Dataset:
    return Dataset(root)
