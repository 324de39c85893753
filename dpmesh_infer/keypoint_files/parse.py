"""Reading and writing keypoint files: the format detection (:func:`read_keypoints`), the COCO-style,
OpenPose and own-format readers (AlphaPose and mmpose in :mod:`.alphapose` / :mod:`.mmpose`, folders in
:mod:`.folder`), :func:`write_keypoints_json`, and :func:`validate_against_image`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..atomic import write_text
from ..config import read_json
from ..errors import KeypointFileError
from ..geometry.joints import JOINT_FORMATS
from .people import (
    BOX_ONLY_REASON,
    CROWD_REASON,
    EXPECTED_FORMATS,
    FORMAT_NAME,
    FORMAT_VERSION,
    RESULT_FORMATS,
    ImageKey,
    KeypointPerson,
    KeypointSet,
)

logger = logging.getLogger(__name__)



def _fail(where: str, what: str) -> KeypointFileError:
    return KeypointFileError(f"{where}: {what}")


def _numbers(value: Any, where: str, field: str) -> np.ndarray:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
        raise _fail(where, f"'{field}' must be a list of numbers, got {json.dumps(value)[:60]}")
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise _fail(where, f"'{field}' contains a non-finite value (NaN or infinity) at position "
                           f"{int(np.flatnonzero(~np.isfinite(arr))[0])}")
    return arr


def _keypoints(value: Any, where: str, field: str, formats: Sequence[str]) -> tuple[np.ndarray, str]:
    """Flat [x, y, s] * J list -> ((J,3), joint format); the length picks one of ``formats``."""
    arr = _numbers(value, where, field)
    allowed = {3 * len(JOINT_FORMATS[f]): f for f in formats}
    if arr.size not in allowed:
        expected = " or ".join(f"{n} ({f}: {n // 3} joints x [x, y, score])" for n, f in allowed.items())
        raise _fail(where, f"'{field}' has {arr.size} numbers, expected {expected}")
    fmt = allowed[arr.size]
    kp = arr.reshape(-1, 3)
    neg = np.flatnonzero(kp[:, 2] < 0)
    if neg.size:
        j = int(neg[0])
        raise _fail(where, f"joint {j} ({JOINT_FORMATS[fmt][j]}) has negative confidence {kp[j, 2]:g}; "
                           "scores must be >= 0 (values above 1 are accepted)")
    return kp, fmt


def _person(entry: Any, where: str, field: str = "keypoints", formats: Sequence[str] = ("coco17",)
            ) -> KeypointPerson:
    if not isinstance(entry, dict):
        raise _fail(where, f"expected an object with '{field}', got {type(entry).__name__}")
    if field not in entry:
        raise _fail(where, f"missing '{field}'")
    kp, fmt = _keypoints(entry[field], where, field, formats)
    score = entry.get("score")
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise _fail(where, f"'score' must be a finite number, got {score!r}")
        score = float(score)
    box_field = "bbox" if entry.get("bbox") is not None else "box"  # "box": AlphaPose's name, also [x, y, w, h]
    bbox = entry.get(box_field)
    if bbox is not None:
        bbox = _numbers(bbox, where, box_field)
        if bbox.size != 4 or bbox[2] < 0 or bbox[3] < 0:
            raise _fail(where, f"'{box_field}' must be [x, y, width, height] with width, height >= 0, "
                               f"got {bbox.tolist()}")
    return KeypointPerson(keypoints=kp, joint_format=fmt, score=score, bbox=bbox)  # type: ignore[arg-type]


def _image_key(entry: dict, where: str) -> ImageKey:
    if entry.get("file_name") is not None:
        if not isinstance(entry["file_name"], str) or not entry["file_name"]:
            raise _fail(where, f"'file_name' must be a non-empty string, got {entry['file_name']!r}")
        return entry["file_name"]
    if "image_id" in entry:
        iid = entry["image_id"]
        if isinstance(iid, str) and iid:  # AlphaPose writes the image's file name as image_id
            return iid
        if isinstance(iid, bool) or not isinstance(iid, int):
            raise _fail(where, f"'image_id' must be an integer (COCO id) or a file name (AlphaPose), got {iid!r}")
        return iid
    return None


def _group(entries: list, src: str, label: str, *, table: dict[int, str] | None = None,
           own_format: bool = False, images: Sequence[ImageKey] = (), flags: bool = False
           ) -> dict[ImageKey, list[KeypointPerson]]:
    """Entries (COCO results / table annotations / our people) -> persons per image key.

    ``flags``: the third keypoint values are COCO visibility flags (0, 1, 2), normalised to 1.0 for a
    labelled joint (1 or 2) and 0.0 otherwise; ``num_keypoints: 0`` zeroes them; ``iscrowd`` entries get
    :data:`CROWD_REASON` as their skip reason.
    """
    per_image: dict[ImageKey, list[KeypointPerson]] = {k: [] for k in images}
    kinds = {type(k).__name__ for k in images}
    skipped = 0
    for i, entry in enumerate(entries):
        where = f"{src}: {label}[{i}]"
        if isinstance(entry, dict) and entry.get("category_id", 1) != 1:
            skipped += 1  # not a person
            continue
        jf = None
        if own_format:
            jf = entry.get("joint_format", "coco17") if isinstance(entry, dict) else "coco17"
            if jf not in JOINT_FORMATS:
                raise _fail(where, f"'joint_format' {jf!r} is not one of {sorted(JOINT_FORMATS)}")
        person = _person(entry, where, formats=(jf,) if own_format else RESULT_FORMATS)
        if flags:
            person.keypoints[:, 2] = (person.keypoints[:, 2] > 0).astype(np.float64)
            if entry.get("num_keypoints") == 0:
                person.keypoints[:, 2] = 0.0
        if table is not None and entry.get("iscrowd"):
            person.skip_reason = CROWD_REASON
        key = _image_key(entry, where)
        if table is not None:
            if not isinstance(key, int) or key not in table:
                raise _fail(where, f"'image_id' {key!r} is not an id listed in 'images'")
            key = table[key]
        kinds.add(type(key).__name__)
        if len(kinds) > 1:
            raise _fail(where, "entries mix 'file_name', 'image_id' and neither; use one way to name images")
        per_image.setdefault(key, []).append(person)
    if skipped:
        logger.info("%s: skipped %d entries whose category_id is not 1 (person)", src, skipped)
    if not per_image:
        per_image[None] = []
    return per_image


def _read_json(path: Path) -> Any:
    """The parsed file (UTF-8 with or without BOM); any problem is a KeypointFileError naming the file."""
    return read_json(path, error=KeypointFileError, what="keypoint file", hint=EXPECTED_FORMATS)


def _openpose_people(data: dict, src: str) -> list[KeypointPerson]:
    """``{"people": [{"pose_keypoints_2d": ...}]}`` (OpenPose), or AlphaPose's ``--format cmu``
    ``{"bodies": [{"joints": [54 numbers]}]}`` (the OpenPose-18 order)."""
    list_key = "people" if "people" in data else "bodies"
    people = data[list_key]
    if not isinstance(people, list):
        raise _fail(src, f"'{list_key}' must be a list, got {type(people).__name__}")
    out = []
    for i, p in enumerate(people):
        if list_key == "bodies":
            field = "joints"
        else:
            old_name = isinstance(p, dict) and "pose_keypoints_2d" not in p and "pose_keypoints" in p
            field = "pose_keypoints" if old_name else "pose_keypoints_2d"
        out.append(_person(p, f"{src}: {list_key}[{i}]", field=field, formats=("openpose18", "openpose25")))
    return out


def read_openpose_json(path: str | Path) -> list[KeypointPerson]:
    """The persons of one OpenPose ``*_keypoints.json`` file (18- or 25-joint model)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or "people" not in data:
        raise KeypointFileError(f"{path}: not an OpenPose file (no 'people' list); {EXPECTED_FORMATS}")
    return _openpose_people(data, str(path))


def _read_own(data: dict, src: str) -> KeypointSet:
    if data["format"] != FORMAT_NAME or data.get("version") != FORMAT_VERSION:
        raise _fail(src, f"unsupported format {data['format']!r} version {data.get('version')!r}; "
                         f"this version reads {FORMAT_NAME!r} version {FORMAT_VERSION}")
    unknown = sorted(set(data) - {"format", "version", "images", "people"})
    images = data.get("images", [])
    if unknown or not isinstance(data.get("people"), list) or not isinstance(images, list):
        raise _fail(src, f"a {FORMAT_NAME} file has keys format, version, images (list of file names) and "
                         f"people (list); unknown keys: {unknown}")
    if any(not isinstance(n, str) for n in images):
        raise _fail(src, "'images' must list file names (strings)")
    return KeypointSet(_group(data["people"], src, "people", own_format=True, images=images), src, FORMAT_NAME)


def _read_coco_table(data: dict, src: str) -> KeypointSet:
    key = "annotations" if "annotations" in data else "results"
    if not isinstance(data["images"], list) or not isinstance(data.get(key), list):
        raise _fail(src, f"a COCO-style file needs 'images' and 'annotations' (or 'results') lists; "
                         f"{EXPECTED_FORMATS}")
    table: dict[int, str] = {}
    ids_by_name: dict[str, list[int]] = {}
    for i, im in enumerate(data["images"]):
        ok = isinstance(im, dict) and isinstance(im.get("file_name"), str)
        if not ok or isinstance(im.get("id"), bool) or not isinstance(im.get("id"), int):
            raise _fail(f"{src}: images[{i}]", "expected {\"id\": integer, \"file_name\": string}")
        if im["id"] in table:
            raise _fail(f"{src}: images[{i}]", f"image id {im['id']} is listed twice ({table[im['id']]!r} and "
                                               f"{im['file_name']!r})")
        table[im["id"]] = im["file_name"]
        ids_by_name.setdefault(im["file_name"], []).append(im["id"])
    warnings = {name: [f"{src} lists file_name {name!r} under {len(ids)} image ids ({', '.join(map(str, ids))}); "
                       "their persons were merged into one image"]
                for name, ids in ids_by_name.items() if len(ids) > 1}
    for ws in warnings.values():
        logger.warning("%s", ws[0])
    flags = key == "annotations" and _visibility_flags(data[key])
    per_image = _group(data[key], src, key, table=table, images=list(dict.fromkeys(table.values())), flags=flags)
    return KeypointSet(per_image, src, "coco-table", image_warnings=warnings)


def _visibility_flags(entries: list) -> bool:
    """True when every keypoint triple's third value of ``entries`` is a COCO visibility flag 0, 1 or 2."""
    seen = False
    for e in entries:
        kp = e.get("keypoints") if isinstance(e, dict) else None
        if not isinstance(kp, list):
            continue
        third = kp[2::3]
        if any(isinstance(v, bool) or v not in (0, 1, 2) for v in third):
            return False
        seen = seen or bool(third)
    return seen


def read_keypoints(path: str | Path, *, keep_box_only: bool = False) -> KeypointSet:
    """Read any supported keypoint file, or a folder of per-image files (format detected from the content).

    People with no labelled keypoint get :data:`BOX_ONLY_REASON` as ``skip_reason`` (the pipeline skips
    them and says why) unless ``keep_box_only``, which lets the pipeline reconstruct them from their box.
    """
    path = Path(path)
    if path.is_dir():
        from .folder import read_keypoint_folder

        kpset = read_keypoint_folder(path)
    else:
        kpset = _read_file(path)
    if not keep_box_only:
        for persons in kpset.per_image.values():
            for p in persons:
                if p.skip_reason is None and not p.labelled:
                    p.skip_reason = BOX_ONLY_REASON
    return kpset


def _read_file(path: Path) -> KeypointSet:
    """One keypoint file, format detected from the content (module docstring)."""
    from . import alphapose, mmpose

    src = str(path)
    data = _read_json(path)
    if isinstance(data, list):
        if mmpose.is_inferencer_output(data):
            return mmpose.read_inferencer(data, src)
        per_image = _group(data, src, "entry")
        alphapose = any(isinstance(k, str) for k in per_image) and any(
            isinstance(e, dict) and ("box" in e or "idx" in e) for e in data)
        return KeypointSet(per_image, src, "alphapose-results" if alphapose else "coco-results")
    if isinstance(data, dict) and "format" in data:
        return _read_own(data, src)
    if isinstance(data, dict) and mmpose.is_demo_output(data):
        return mmpose.read_demo(data, src)
    if isinstance(data, dict) and "images" in data:
        return _read_coco_table(data, src)
    if isinstance(data, dict) and ("people" in data or "bodies" in data):
        return KeypointSet({None: _openpose_people(data, src)}, src, "openpose")
    if isinstance(data, dict) and alphapose.is_alphapose_openpose(data):
        return alphapose.read_alphapose_openpose(data, src)
    raise _fail(src, f"unrecognised keypoint file; {EXPECTED_FORMATS}")


def write_keypoints_json(path: str | Path, per_image: Mapping[str | None, Sequence[KeypointPerson]]) -> None:
    """Write persons per image in the dpmesh-keypoints format (read back by :func:`read_keypoints`).

    Keys are file names (images with an empty list are kept), or a single None key for a one-image file.
    """
    if None in per_image and len(per_image) > 1:
        raise ValueError("per_image mixes a None key (single image) with file names")
    people = []
    for name, persons in per_image.items():
        if name is not None and not isinstance(name, str):
            raise ValueError(f"image keys must be file names (str) or None, got {name!r}")
        for p in persons:
            people.append({
                "file_name": name, "joint_format": p.joint_format,
                "keypoints": [float(v) for v in np.asarray(p.keypoints, dtype=np.float64).reshape(-1)],
                "score": None if p.score is None else float(p.score),
                "bbox": None if p.bbox is None else [float(v) for v in np.asarray(p.bbox).reshape(4)],
            })  # fmt: skip
    doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
           "images": [k for k in per_image if k is not None], "people": people}
    write_text(path, json.dumps(doc, allow_nan=False) + "\n")


def validate_against_image(kp: np.ndarray, image_w: int, image_h: int, *, margin_frac: float = 0.5,
                           where: str = "keypoints") -> tuple[np.ndarray, np.ndarray]:
    """Treat joints far outside the image as missing.

    kp (...,J,3) [x, y, score] px. A joint more than ``margin_frac * max(W, H)`` px outside
    [0, W-1] x [0, H-1] (usually keypoints meant for another image size) gets its whole row set to
    zero, the representation of a joint the detector did not report; a warning is logged. Joints
    slightly outside (truncated people) are kept: the crop mask handles them as upstream does.
    Returns (cleaned copy, dropped (...,J) bool).
    """
    kp = np.array(kp, dtype=np.float64)
    m = margin_frac * max(image_w, image_h)
    x, y = kp[..., 0], kp[..., 1]
    dropped = (x < -m) | (x > image_w - 1 + m) | (y < -m) | (y > image_h - 1 + m)
    if dropped.any():
        kp[dropped] = 0.0
        logger.warning("%s: %d keypoint(s) more than %.0f px outside the %dx%d image were treated as missing",
                       where, int(dropped.sum()), m, image_w, image_h)
    return kp, dropped
