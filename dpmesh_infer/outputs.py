"""Typed results of :class:`~dpmesh_infer.pipeline.Pipeline`.

Units: metres for 3D, pixels for 2D, radians (axis-angle) for rotations. Frame: the OpenCV camera of
the photo (x right, y down, z forward), with intrinsics ``K`` (3, 3) stored per image:
``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
        out["K"] = np.asarray(self.K, dtype=np.float32)
        out["image_size"] = np.asarray(self.image_size, dtype=np.int64)
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
