"""People as read from keypoint files: :class:`KeypointPerson` (one person's keypoints in its file's joint
format), :class:`KeypointSet` (persons per image, looked up by an image's name), and the format's names,
expectations and skip reasons (the formats themselves: :mod:`dpmesh_infer.keypoint_files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Sequence

import numpy as np

from ..errors import KeypointFileError
from ..geometry.joints import to_j30
from .naming import frame_number_of, image_id_of

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

