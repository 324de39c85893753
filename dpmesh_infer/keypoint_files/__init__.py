"""Read and write user keypoint files (``dpmesh predict --keypoints FILE``).

Accepted formats, detected from the content (anything else is a KeypointFileError listing them):

1. COCO keypoint results (cocoapi ``loadRes``): a JSON list of ``{"keypoints": [3*J numbers], "score":
   float, "bbox": [x, y, w, h] (optional), "category_id": int (optional; entries other than 1 = person
   are skipped)}`` with J = 17 (COCO), 26 (Halpe-26), 133 (COCO-WholeBody) or 136 (Halpe-136).
   Which image an entry belongs to: ``"file_name"`` (str) if present, else ``"image_id"``, else the file
   describes a single image. A numeric ``image_id`` matches an image whose file stem is that number
   (zero padding allowed: ``000000397133.jpg`` <-> 397133) or a standard COCO name ending in it
   (``COCO_val2014_000000397133.jpg``); :meth:`KeypointSet.unmatched` lists the ids no image matched.
2. AlphaPose results (``alphapose-results.json``, AlphaPose's ``write_json``): the same list with the
   image's file name as ``image_id`` and the box as ``"box": [x, y, w, h]``; ``idx`` is ignored; COCO-17,
   Halpe-26 or Halpe-136 keypoints. AlphaPose's ``--format open`` output (one ``{"people": ...}`` per
   image name) and ``--format cmu`` (``{"bodies": [{"joints": [54 numbers]}]}``) are read too.
3. COCO-style table: ``{"images": [{"id": int, "file_name": str}, ...], "annotations" | "results":
   [entries as in 1, with "image_id"]}``. Other top-level keys ("info", "categories", ...) are ignored.
   Listed images without entries have zero people. In an ``"annotations"`` table whose third values
   are all COCO visibility flags (0, 1, 2), the flags become confidences: 1 and 2 (labelled) -> 1.0,
   0 (not labelled) -> 0.0, as ``dpmesh data convert coco`` does; ``num_keypoints: 0`` means no labelled
   keypoint; ``iscrowd: 1`` regions are not people and are skipped with a reason.
4. OpenPose, one file per image: ``{"people": [{"pose_keypoints_2d": [54 or 75 numbers]}]}`` (COCO-18
   or BODY_25 model; the old key "pose_keypoints" is accepted too).
5. mmpose (:mod:`.mmpose`): ``MMPoseInferencer(..., pred_out_dir=DIR)`` files (per image a list of
   ``{"keypoints": [[x, y], ...], "keypoint_scores": [...], "bbox": [[x1, y1, x2, y2]], "bbox_score"}``;
   for a video a list of ``{"frame_id", "instances"}``), and the demo scripts' ``--save-predictions``
   file (``{"meta_info": {...}, "instance_info": [...]}``, per image or per frame).
6. Our own (``dpmesh detect`` output, written by :func:`write_keypoints_json`)::

       {"format": "dpmesh-keypoints", "version": 1, "images": [file names, including those with no
        person], "people": [{"file_name": str | null, "joint_format": "coco17" | "openpose18" |
        "openpose25" | "halpe26" | "halpe136" | "coco_wholebody", "keypoints": [3*J numbers],
        "score": float | null, "bbox": [x, y, w, h] | null}]}

7. A folder of per-image files (:mod:`.folder`: mmpose's ``pred_out_dir``, OpenPose's ``--write_json``):
   each file is matched to the image with the same stem (``a.json`` or ``a_keypoints.json`` <-> ``a.jpg``).

Keypoints are ``[x, y, score]`` in image pixels. Values must be finite; scores must be >= 0 (scores
above 1, which some detectors emit, are accepted; mmpose's scores <= 0 mean "not found" and become 0).
People with no labelled keypoint (every confidence 0) are kept in the file's person list but carry a
``skip_reason``: the pipeline does not reconstruct them from their box alone and reports the reason
(``read_keypoints(..., keep_box_only=True)`` / ``dpmesh predict --keep-box-only`` reconstructs them
from the box). Positions are checked against the image only once its size is known:
:func:`validate_against_image`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from ..atomic import write_text
from ..config import read_json
from ..errors import KeypointFileError
from ..geometry.joints import JOINT_FORMATS, to_j30
from .naming import frame_number_of, image_id_of

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "EXPECTED_FORMATS", "KeypointPerson", "KeypointSet", "stack_kp30",
           "person_boxes", "read_keypoints", "read_openpose_json", "write_keypoints_json", "validate_against_image",
           "BOX_ONLY_REASON", "RESULT_FORMATS"]

FORMAT_NAME = "dpmesh-keypoints"
FORMAT_VERSION = 1
EXPECTED_FORMATS = (
    "expected one of: (1) COCO keypoint results, a JSON list of {\"keypoints\": [51 numbers], \"score\": "
    "number, optional \"bbox\" [x,y,w,h], optional \"file_name\" or \"image_id\"}; (2) AlphaPose results "
    "(the same with \"image_id\": file name, \"box\" [x,y,w,h]; 51, 78 or 408 numbers); (3) a COCO-style "
    "object {\"images\": [{\"id\", \"file_name\"}], \"annotations\" or \"results\": [entries as in (1)]}; "
    "(4) OpenPose {\"people\": [{\"pose_keypoints_2d\": [54 or 75 numbers]}]}; (5) mmpose inferencer output "
    "(a list of {\"keypoints\": [[x, y], ...], \"keypoint_scores\": [...], \"bbox\": [[x1, y1, x2, y2]]}, or "
    "of {\"frame_id\", \"instances\"}) or demo output {\"meta_info\", \"instance_info\"}; "
    f"(6) {{\"format\": \"{FORMAT_NAME}\", \"version\": {FORMAT_VERSION}, \"people\": [...]}}; "
    "(7) a folder of such per-image files"
)
#: Joint formats of COCO-style result lists, told apart by the number of keypoint values (3 per joint).
RESULT_FORMATS = ("coco17", "halpe26", "coco_wholebody", "halpe136")
#: Why a person with no labelled keypoint is not reconstructed (``skip_reason``).
BOX_ONLY_REASON = ("no labelled keypoint (every confidence is 0, or num_keypoints is 0): not reconstructed "
                   "from its box alone (dpmesh predict --keep-box-only does)")
CROWD_REASON = "COCO iscrowd annotation: a crowd region, not one person"

ImageKey = str | int | None


JointFormat = Literal["coco17", "openpose18", "openpose25", "halpe26", "halpe136", "coco_wholebody"]


@dataclass
class KeypointPerson:
    """One person's 2D keypoints as read from a file.

    keypoints (J,3) float64 [x, y, score] image px, J = 17 (coco17), 18 (openpose18), 25 (openpose25),
    26 (halpe26), 136 (halpe136) or 133 (coco_wholebody); score: the detection score or None; bbox (4,)
    float64 [x, y, w, h] px or None; skip_reason: why the pipeline must not reconstruct this person (no
    labelled keypoint, a COCO crowd region), reported in the image's ``skipped`` list; None = use it.
    """

    keypoints: np.ndarray
    joint_format: JointFormat
    score: float | None = None
    bbox: np.ndarray | None = None
    skip_reason: str | None = None

    def kp30(self) -> np.ndarray:
        """(30,3) float64 in the internal joint set (preprocess mapping)."""
        return to_j30(self.keypoints[None], self.joint_format)[0]

    @property
    def labelled(self) -> bool:
        """True when at least one keypoint has a confidence above 0."""
        return bool((np.asarray(self.keypoints)[:, 2] > 0).any())


def stack_kp30(persons: Sequence[KeypointPerson]) -> np.ndarray:
    """(N,30,3) float64 for N persons (N may be 0)."""
    return np.stack([p.kp30() for p in persons]) if persons else np.zeros((0, 30, 3))


def person_boxes(persons: Sequence[KeypointPerson]) -> list[np.ndarray | None]:
    """Each person's bbox (4,) xywh or None, for preprocess.prepare_persons(fallback_boxes=...)."""
    return [p.bbox for p in persons]


class KeypointSet:
    """Persons per image. Keys: file name (str), COCO image id or video frame number (int), or None for a
    single-image file.

    ``id_kind`` says what integer keys are: "image_id" (matched by :func:`image_id_of`) or "frame_id"
    (matched by :func:`frame_number_of`). With ``by_stem`` the string keys are paths without suffix (a
    folder of per-image files) and are matched against the image path without its suffix.
    """

    def __init__(self, per_image: dict[ImageKey, list[KeypointPerson]], source: str, file_format: str, *,
                 id_kind: Literal["image_id", "frame_id"] = "image_id", by_stem: bool = False,
                 image_warnings: dict[ImageKey, list[str]] | None = None):
        self.per_image = per_image
        self.source = source
        # "coco-results" | "alphapose-results" | "coco-table" | "openpose" | "dpmesh-keypoints" |
        # "mmpose-inferencer" | "mmpose-demo" | "alphapose-openpose" | "alphapose-cmu" | "folder (...)"
        self.file_format = file_format
        self.id_kind = id_kind
        self.by_stem = by_stem
        #: per image key, what the file did that the user should know (e.g. a file name listed twice)
        self.image_warnings = dict(image_warnings or {})

    @property
    def warnings(self) -> list[str]:
        """Every warning of the file (also logged when it was read)."""
        return [w for ws in self.image_warnings.values() for w in ws]

    def warnings_for(self, image_path: str | Path, root: str | Path | None = None) -> list[str]:
        """The warnings that concern the entry ``image_path`` matches (empty when none)."""
        if not self.image_warnings:
            return []
        try:
            key = None if self.single_image else self.match(image_path, root)
        except KeypointFileError:
            return []
        return list(self.image_warnings.get(key, []))

    @property
    def single_image(self) -> bool:
        """True when the file holds one image's people (no file names or ids)."""
        return None in self.per_image

    def __len__(self) -> int:
        return len(self.per_image)

    def lookup(self, image_path: str | Path, root: str | Path | None = None) -> list[KeypointPerson] | None:
        """The persons of ``image_path``, or None when the file has no entry for it.

        A single-image file answers for any image. Otherwise match the path (relative to ``root`` when
        given and inside it) against file names: the longest file name that the path ends with (a full
        relative path first), then by basename alone (ambiguous -> KeypointFileError), then the number
        the file stem stands for against integer keys (COCO image ids: ``000000000136.jpg`` and
        ``COCO_val2014_000000000136.jpg`` -> 136; video frames: the stem's trailing number).
        """
        if self.single_image:
            return self.per_image[None]
        key = self.match(image_path, root)
        return None if key is None else self.per_image[key]

    def match(self, image_path: str | Path, root: str | Path | None = None) -> ImageKey:
        """The key of ``image_path`` (see :meth:`lookup`), or None when nothing matches."""
        path = Path(image_path)
        if root is not None:
            try:
                path = path.relative_to(root)
            except ValueError:
                pass
        rel = PurePosixPath(path.as_posix())
        if self.by_stem:
            rel = rel.with_suffix("")
        names = {PurePosixPath(k.replace("\\", "/")): k for k in self.per_image if isinstance(k, str)}
        suffix = [p for p in names if len(p.parts) <= len(rel.parts) and rel.parts[-len(p.parts):] == p.parts]
        if suffix:  # exact relative path, or the longest file name that ends the image path
            return names[max(suffix, key=lambda p: len(p.parts))]
        same_base = [k for p, k in names.items() if p.name == rel.name]
        if len(same_base) > 1:
            raise KeypointFileError(
                f"{self.source}: image {path} matches several entries by file name "
                f"({', '.join(sorted(same_base))}); "
                "write paths relative to the image folder in the keypoint file"
            )
        if same_base:
            return same_base[0]
        number = (frame_number_of if self.id_kind == "frame_id" else image_id_of)(rel.stem)
        if number is not None and number in self.per_image:
            return number
        return None

    def unmatched(self, image_paths: Sequence[str | Path], root: str | Path | None = None
                  ) -> list[tuple[ImageKey, int]]:
        """(key, number of people) of every entry with people that none of ``image_paths`` matches
        (empty for a single-image file). Paths that match several entries are ignored here."""
        if self.single_image:
            return []
        used = set()
        for p in image_paths:
            try:
                used.add(self.match(p, root))
            except KeypointFileError:
                continue
        return [(k, len(v)) for k, v in self.per_image.items() if v and k not in used]

    def describe_keys(self, limit: int = 5) -> str:
        """What the file's image keys look like, for messages: e.g. ``image ids 136, 139, ...``."""
        keys = [k for k in self.per_image if k is not None]
        what = {"image_id": "image ids", "frame_id": "frame numbers"}[self.id_kind]
        kind = what if keys and isinstance(keys[0], int) else "image stems" if self.by_stem else "file names"
        shown = ", ".join(str(k) for k in keys[:limit]) + (", ..." if len(keys) > limit else "")
        return f"{len(keys)} {kind}: {shown}" if keys else "no image entries"

    def missing_message(self, image_path: str | Path) -> str:
        """The message for an image the file has no entry for (what the file's keys are, how they match)."""
        hint = ""
        if any(isinstance(k, int) for k in self.per_image):
            hint = ("; numeric image ids match images named by the id (000000000136.jpg) or standard COCO names "
                    "(COCO_val2014_000000000136.jpg)" if self.id_kind == "image_id" else
                    "; frame numbers match the number an image stem ends with (frame_000012.jpg -> 12)")
        return (f"{self.source} has no keypoints for image {image_path} "
                f"(its entries name {self.describe_keys()}{hint})")


# --------------------------------------------------------------------------- parsing


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
