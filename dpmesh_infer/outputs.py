"""Typed results of :class:`~dpmesh_infer.pipeline.Pipeline`.

Units: metres for 3D, pixels for 2D, radians (axis-angle) for rotations. Frame: the OpenCV camera of
the photo (x right, y down, z forward), with intrinsics ``K`` (3, 3) stored per image:
``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geometry.joints import COCO17_NAMES, J30_NAMES

#: Version of the JSON/npz output schema written by :mod:`dpmesh_infer.export`.
SCHEMA_VERSION = 1

#: Per-person array fields, in the order they are written (name -> shape without the person axis).
PERSON_ARRAYS: dict[str, tuple[int, ...]] = {
    "vertices": (6890, 3),
    "joints": (30, 3),
    "global_orient": (3,),
    "body_pose": (23, 3),
    "betas": (10,),
    "transl": (3,),
    "keypoints_2d": (30, 3),
    "joints_2d": (30, 2),
    "bbox": (4,),
    "score": (),
}


#: J30 slots that every keypoint format fills (the 17 COCO-17 names): what ``Visibility`` counts.
VISIBILITY_JOINTS: tuple[int, ...] = tuple(J30_NAMES.index(n) for n in COCO17_NAMES)
#: A keypoint is "confident" at or above this confidence (the detector's default ``--kpt-thr``).
CONFIDENT_KEYPOINT = 0.3


@dataclass
class Visibility:
    """How much of one person the photo shows.

    Attributes:
        confident_keypoints: fraction in [0, 1] of the 17 body keypoints (:data:`VISIBILITY_JOINTS`) with
            confidence >= ``threshold``. Always known.
        threshold: the confidence threshold used.
        occlusion_ratio: share in [0, 1] of the person's rendered silhouette hidden by nearer people (all
            people of the image rendered in one scene with one depth buffer, see
            :mod:`dpmesh_infer.analysis.visibility`); None when nothing was rendered (no renderer) or the
            silhouette is empty (the person is outside the image).
        silhouette_px: pixels of the person's own silhouette at the render resolution (None if not rendered).
    """

    confident_keypoints: float
    threshold: float = CONFIDENT_KEYPOINT
    occlusion_ratio: float | None = None
    silhouette_px: int | None = None

    @classmethod
    def from_keypoints(cls, keypoints_2d: np.ndarray, threshold: float = CONFIDENT_KEYPOINT) -> "Visibility":
        """From (30, 3) [x, y, confidence] keypoints of the 30-joint set."""
        conf = np.asarray(keypoints_2d, np.float64).reshape(30, 3)[list(VISIBILITY_JOINTS), 2]
        return cls(confident_keypoints=float(np.mean(conf >= threshold)), threshold=float(threshold))

    def to_json(self) -> dict:
        return {"confident_keypoints": round(self.confident_keypoints, 4), "keypoint_threshold": self.threshold,
                "occlusion_ratio": None if self.occlusion_ratio is None else round(self.occlusion_ratio, 4),
                "silhouette_px": self.silhouette_px}


@dataclass
class BodyFit:
    """One SMPL body with its joints (numpy float32; the fields of :class:`Person` of the same name)."""

    vertices: np.ndarray
    joints: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    joints_2d: np.ndarray

    def to_json(self) -> dict:
        return {
            "smpl": {name: np.asarray(getattr(self, name), float).tolist()
                     for name in ("global_orient", "body_pose", "betas", "transl")},
            "joints_3d": np.asarray(self.joints, float).round(6).tolist(),
            "joints_2d": np.asarray(self.joints_2d, float).round(3).tolist(),
        }


@dataclass
class Refinement:
    """What the keypoint refinement (:mod:`dpmesh_infer.refine`) did to one person. The :class:`Person`'s
    own fields hold the refined body; ``unrefined`` the network's prediction.

    Attributes:
        status: "refined", or "skipped" (``reason`` says why; the body is then the network's).
        reason: why the person was skipped, else None.
        iterations: optimiser iterations run (0 when skipped).
        stopped_early: the loss stopped improving before the iteration limit.
        keypoints_used: keypoints (30-joint set) with confidence >= the refinement's ``min_confidence``.
        error_before_px: mean distance in image pixels between those keypoints and the network's projected
            joints (None without keypoints).
        error_after_px: the same after refinement.
        unrefined: the network's body before refinement.
    """

    status: str
    iterations: int
    stopped_early: bool
    keypoints_used: int
    error_before_px: float | None
    error_after_px: float | None
    unrefined: BodyFit
    reason: str | None = None

    def to_json(self) -> dict:
        def r(v):
            return None if v is None else round(float(v), 3)

        return {"status": self.status, "reason": self.reason, "iterations": self.iterations,
                "stopped_early": self.stopped_early, "keypoints_used": self.keypoints_used,
                "reprojection_error_px": {"before": r(self.error_before_px), "after": r(self.error_after_px)},
                "unrefined": self.unrefined.to_json()}


@dataclass
class Person:
    """One reconstructed person (numpy arrays, float32).

    Attributes:
        vertices: (6890, 3) SMPL neutral mesh vertices in metres, camera frame of the photo.
        joints: (30, 3) 3D joints (the 30-joint set, regressed from the posed mesh), metres, camera frame.
        global_orient: (3,) root rotation, axis-angle (radians), camera frame.
        body_pose: (23, 3) SMPL body joint rotations 1..23, axis-angle (radians), parent-relative.
        betas: (10,) SMPL shape coefficients.
        transl: (3,) SMPL translation in metres: ``SMPL(global_orient, body_pose, betas, transl)`` gives
            ``vertices``.
        keypoints_2d: (30, 3) input keypoints [x, y, confidence] in image pixels, mapped to the 30-joint
            set (slots with no source are zero).
        joints_2d: (30, 2) ``joints`` projected with the image's ``K``, in pixels.
        bbox: (4,) square crop box [x, y, w, h] in image pixels that the network saw.
        score: detection score of the person (1.0 when keypoints were given without one).
        visibility: :class:`Visibility` (computed from ``keypoints_2d`` when not given; the occlusion ratio
            is filled in when the people are rendered).
        refinement: :class:`Refinement` when the body was refined to the keypoints, else None.
    """

    vertices: np.ndarray
    joints: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    keypoints_2d: np.ndarray
    joints_2d: np.ndarray
    bbox: np.ndarray
    score: float = 1.0
    visibility: Visibility | None = None
    refinement: Refinement | None = None

    def __post_init__(self) -> None:
        if self.visibility is None:
            self.visibility = Visibility.from_keypoints(self.keypoints_2d)

    def extra_json(self) -> dict:
        """The optional per-person JSON entries: ``visibility`` always, ``refinement`` when refined."""
        out = {"visibility": self.visibility.to_json()}
        if self.refinement is not None:
            out["refinement"] = self.refinement.to_json()
        return out

    @property
    def smpl_pose(self) -> np.ndarray:
        """(72,) full SMPL pose: global_orient followed by the 23 body joints (axis-angle)."""
        return np.concatenate([self.global_orient.reshape(3), self.body_pose.reshape(69)])


@dataclass
class ImageResult:
    """All persons of one image.

    Attributes:
        persons: the reconstructed persons, in the order of the input keypoints (skipped ones left out).
        K: (3, 3) camera intrinsics used for this image (pixels).
        image_size: (width, height) in pixels.
        source: the image path (or ``None`` for in-memory images).
        skipped: (input person index, reason) for every person that could not be reconstructed.
        focal_source: where K's focal came from (e.g. the default sqrt(W^2+H^2), --fov, EXIF).
    """

    persons: list[Person]
    K: np.ndarray
    image_size: tuple[int, int]
    source: str | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    focal_source: str | None = None

    def stacked(self) -> dict[str, np.ndarray]:
        """Per-person fields stacked over persons (N, ...) plus ``K`` and ``image_size``."""
        out: dict[str, np.ndarray] = {}
        for name, shape in PERSON_ARRAYS.items():
            vals = [np.asarray(getattr(p, name), dtype=np.float32) for p in self.persons]
            out[name] = np.stack(vals) if vals else np.zeros((0, *shape), np.float32)
        out.update(_extra_arrays(self.persons))
        out["K"] = np.asarray(self.K, dtype=np.float32)
        out["image_size"] = np.asarray(self.image_size, dtype=np.int64)
        return out


#: Fields of the unrefined body written as ``unrefined_<name>`` arrays when a person was refined.
REFINED_FIELDS = ("vertices", "joints", "global_orient", "body_pose", "betas", "transl", "joints_2d")


def _extra_arrays(persons: list[Person]) -> dict[str, np.ndarray]:
    """Visibility arrays (N,) always; with any refined person the unrefined bodies and the reprojection
    errors (NaN where unknown; an unrefined person's own body is its ``unrefined_*``)."""
    def num(v):
        return np.nan if v is None else float(v)

    out = {"confident_keypoints": np.array([p.visibility.confident_keypoints for p in persons], np.float32),
           "occlusion_ratio": np.array([num(p.visibility.occlusion_ratio) for p in persons], np.float32)}
    if not any(p.refinement is not None for p in persons):
        return out
    for name in REFINED_FIELDS:
        out[f"unrefined_{name}"] = np.stack([np.asarray(getattr(p.refinement.unrefined if p.refinement else p, name),
                                                        np.float32) for p in persons])
    for when in ("before", "after"):
        out[f"reprojection_error_{when}_px"] = np.array(
            [num(getattr(p.refinement, f"error_{when}_px")) if p.refinement else np.nan for p in persons], np.float32)
    return out


@dataclass
class PipelineOutput:
    """Results for every input image, in input order; ``faces`` (13776, 3) int64 is shared by all meshes."""

    images: list[ImageResult]
    faces: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> ImageResult:
        return self.images[i]

    def __iter__(self):
        return iter(self.images)

    @property
    def num_persons(self) -> int:
        return sum(len(r.persons) for r in self.images)

    def save(self, path: str | Path, index: int = 0) -> Path:
        """Write image ``index``'s result to ``path``; format from the suffix (.npz, .obj, .ply, .glb, .json)."""
        from .export import save_result

        return save_result(self.images[index], self.faces, path)
