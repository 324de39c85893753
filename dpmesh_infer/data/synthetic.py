"""A small synthetic ``dpmesh-dataset`` with EXACT labels: posed SMPL bodies rendered over random backgrounds.

For tests and for a training smoke run anyone can reproduce (no licensed data, no download)::

    from .synthetic import generate_synthetic_dataset
    root = generate_synthetic_dataset("/tmp/synth", splits={"train": 64, "test": 16}, seed=0)

Output (the format of :mod:`dpmesh_infer.data.format`): ``dataset.json``, ``annotations/<split>.jsonl``,
``images/<split>/NNNNN.png`` (RGB PNG). Same arguments → byte-identical annotation files and images
(on the same platform and library versions).

Scene (per image, all choices documented at the functions that make them):

- Camera: focal f = sqrt(W² + H²) px for fx and fy, principal point (W/2, H/2) (ARCHITECTURE §3, the
  focal the model works with); OpenCV frame, x right, y down, z forward, metres.
- Background: :func:`synthetic_background` (smooth colour noise + a linear gradient + fine noise + a
  few flat rectangles).
- 1..N people (``persons_per_image``): pose from :data:`POSE_BOX` (:func:`sample_body_pose`), betas
  ~ N(0, 0.5²) clipped to ±2, an upright orientation facing the camera (:func:`sample_global_orient`),
  pelvis 3–8 m in front of the camera and inside the image (:func:`_sample_pelvis_targets`). People
  may overlap, occlude each other and leave the image: that is wanted.

Labels (exact for the body model used; every parameter is first rounded to what the JSON file stores,
so that reading the file back and re-running the body model gives the stored joints):

- ``joints_3d`` = ``SMPLBody(global_orient, body_pose, betas, transl).joints`` (J30, camera frame, m),
  ``joints_3d_valid`` all 1;
- ``keypoints_2d`` = pinhole projection of ``joints_3d`` with the record's camera; visibility 1 when the
  joint is in front of the camera (z > 0) and projects inside the image (0 ≤ x ≤ W−1, 0 ≤ y ≤ H−1),
  else 0. Occlusion by other people or by the person's own body does NOT zero the visibility;
- ``bbox`` = tight box [x, y, w, h] of the projected vertices, clipped to [0, W−1] × [0, H−1];
- ``smpl`` = the parameters with ``transl``, gender "neutral", valid True;
- person tags: "occluded" when ≥ 30 % of the person's silhouette pixels (inside the image) are covered
  by nearer people; "truncated" when some vertex projects outside the image;
- image tags: "synthetic", plus "crowd" when two people's boxes overlap with IoU > 0.1.

Rendering (:func:`render_people`): painter's algorithm. The triangles of all people of an image are
sorted by mean vertex depth, farthest first, and each is filled with ``cv2.fillConvexPoly`` (1/16 px
sub-pixel precision) into a triangle-index map; colours are looked up afterwards. A triangle's colour is
the :data:`PART_COLOURS` entry of its dominant skinning-weight body part (argmax over the 24 SMPL parts
of the summed weights of its three vertices) times a two-sided Lambert shade 0.55 + 0.45·|n·v| (n the
face normal, v the direction to the camera). Triangles are ~1–3 px here, so per-triangle depth order is
as good as a z-buffer except where bodies interpenetrate. Measured: about 1 µs per triangle on one core.

Body model triangles: the real SMPL faces are a surface (median rest edge ~2 cm) and are used as they
are. The synthetic stand-in body (:func:`dpmesh_infer.stand_ins.smpl.make_synthetic_smpl_arrays`) has random
faces that join far-apart vertices; rendering those would paint the body's convex blob. When the
median rest-pose edge exceeds :data:`SURFACE_EDGE_MAX_M` the renderer therefore uses a local
triangulation instead (:func:`surface_triangles`: each vertex fanned with its 4 nearest rest-pose
neighbours, ~17k triangles). A closed mesh (real SMPL) is drawn with back faces culled, which halves the
work. The labels never depend on these choices.

Speed (one CPU thread, stand-in body, 320×240, 1–3 people): about 4.5 s of CPU for 64 images on a
busy shared machine, ~60 % of it in ``cv2.fillConvexPoly``. Torch runs the 1–3-body SMPL batches;
on a machine with few free cores ``torch.set_num_threads(1)`` is fastest (not changed here).

People in a record are in the order they were drawn at random (fixed for a seed, otherwise arbitrary).
"""

from __future__ import annotations

import functools
import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import cv2
import numpy as np
import torch

from ..errors import InputError
from .format import DatasetWriter, ImageAnnotation, PersonAnnotation, SMPLParams

__all__ = [
    "DEFAULT_SPLITS", "PART_COLOURS", "POSE_BOX", "RenderMesh", "RenderResult", "generate_synthetic_dataset",
    "image_rngs", "render_people", "sample_body_pose", "sample_global_orient", "surface_triangles",
    "synthetic_background", "triangle_parts",
]

log = logging.getLogger(__name__)

#: Split sizes (images) used when ``splits`` is not given.
DEFAULT_SPLITS: Mapping[str, int] = MappingProxyType({"train": 64, "test": 16})
#: Pelvis depth range (m) in front of the camera.
DEPTH_RANGE_M = (3.0, 8.0)
#: Pelvis image position, as fractions of W (x) and H (y).
PELVIS_X_RANGE = (0.1, 0.9)
PELVIS_Y_RANGE = (0.45, 0.62)
#: Two people's pelvises are kept at least this far apart in 3D (m), so bodies rarely interpenetrate.
MIN_PELVIS_DISTANCE_M = 0.6
#: Root orientation: yaw about the vertical (deg), and the tilt about the camera x and z axes (deg).
YAW_MAX_DEG = 60.0
TILT_MAX_DEG = 10.0
#: Betas ~ N(0, BETA_STD²) clipped to ±BETA_CLIP.
BETA_STD, BETA_CLIP = 0.5, 2.0
#: Person tag "occluded" when at least this fraction of the silhouette is covered by nearer people.
OCCLUDED_FRACTION = 0.3
#: Image tag "crowd" when two people's boxes have an IoU above this.
CROWD_IOU = 0.1
#: Median rest-pose edge (m) above which a body model's faces are not treated as a surface.
SURFACE_EDGE_MAX_M = 0.05
#: Decimal digits the format stores for SMPL parameters and joints (format.encode_person).
_STORED_DIGITS = 6
_NEAR_M = 0.05  # triangles with a vertex closer than this (z, m) are not drawn
_SHIFT = 4  # cv2 sub-pixel bits: coordinates in 1/16 px

#: Sampling box of the 23 body joints (SMPL joints 1..23), axis-angle radians, each component uniform in
#: [lo, hi]. Axes are SMPL's rest frame (x = body left, y = up, z = body front); signs: hip flexion
#: (thigh forward) is −x, knee flexion +x (hinge), spine/neck/head forward bend +x, left shoulder down
#: −z (right: +z), left elbow flexion −y (right: +y, hinge). Roughly within human joint limits.
POSE_BOX: Mapping[int, tuple[tuple[float, float], ...]] = MappingProxyType({
    1: ((-1.0, 0.3), (-0.3, 0.3), (-0.1, 0.5)),     # L_hip
    2: ((-1.0, 0.3), (-0.3, 0.3), (-0.5, 0.1)),     # R_hip
    3: ((-0.1, 0.3), (-0.2, 0.2), (-0.15, 0.15)),   # spine1
    4: ((0.0, 1.6), (-0.05, 0.05), (-0.05, 0.05)),  # L_knee
    5: ((0.0, 1.6), (-0.05, 0.05), (-0.05, 0.05)),  # R_knee
    6: ((-0.1, 0.2), (-0.15, 0.15), (-0.1, 0.1)),   # spine2
    7: ((-0.3, 0.3), (-0.2, 0.2), (-0.2, 0.2)),     # L_ankle
    8: ((-0.3, 0.3), (-0.2, 0.2), (-0.2, 0.2)),     # R_ankle
    9: ((-0.1, 0.2), (-0.15, 0.15), (-0.1, 0.1)),   # spine3
    10: ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),    # L_foot
    11: ((-0.1, 0.1), (-0.1, 0.1), (-0.1, 0.1)),    # R_foot
    12: ((-0.2, 0.4), (-0.4, 0.4), (-0.2, 0.2)),    # neck
    13: ((-0.15, 0.15), (-0.15, 0.15), (-0.15, 0.15)),  # L_collar
    14: ((-0.15, 0.15), (-0.15, 0.15), (-0.15, 0.15)),  # R_collar
    15: ((-0.2, 0.3), (-0.4, 0.4), (-0.2, 0.2)),    # head
    16: ((-0.5, 0.5), (-0.6, 0.6), (-1.3, 0.4)),    # L_shoulder
    17: ((-0.5, 0.5), (-0.6, 0.6), (-0.4, 1.3)),    # R_shoulder
    18: ((-0.3, 0.3), (-2.2, 0.0), (-0.1, 0.1)),    # L_elbow
    19: ((-0.3, 0.3), (0.0, 2.2), (-0.1, 0.1)),     # R_elbow
    20: ((-0.4, 0.4), (-0.3, 0.3), (-0.4, 0.4)),    # L_wrist
    21: ((-0.4, 0.4), (-0.3, 0.3), (-0.4, 0.4)),    # R_wrist
    22: ((-0.15, 0.15), (-0.15, 0.15), (-0.15, 0.15)),  # L_hand
    23: ((-0.15, 0.15), (-0.15, 0.15), (-0.15, 0.15)),  # R_hand
})  # fmt: skip

#: (24, 3) uint8 RGB colour of each SMPL body part (index = skinning joint). Left parts warm, right
#: parts cool, torso pale, so that the image shows both the pose and which side is which.
PART_COLOURS = np.array([
    [230, 230, 230], [255, 120, 120], [120, 160, 255], [240, 240, 160],  # pelvis, L/R thigh, spine1
    [220, 60, 60], [60, 100, 220], [240, 220, 120], [170, 30, 30],       # L/R shin, spine2, L foot
    [30, 60, 170], [230, 200, 80], [120, 20, 20], [20, 40, 120],         # R foot, spine3, L/R toes
    [250, 170, 100], [255, 170, 60], [60, 200, 230], [250, 200, 170],    # neck, L/R collar, head
    [255, 140, 0], [0, 190, 190], [230, 100, 0], [0, 150, 150],          # L/R upper arm, L/R forearm
    [200, 60, 160], [60, 200, 90], [160, 40, 130], [40, 160, 70],        # L/R hand, L/R fingers
], dtype=np.uint8)  # fmt: skip


# --------------------------------------------------------------------------- sampling


def image_rngs(seed: int, split: str, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """The two random streams of one image: (background, people).

    Each image has its own streams (``SeedSequence([seed, crc32(split), index, stream])``), so an image
    does not depend on the size of its split or of other splits, and the background of any image can be
    re-drawn on its own (:func:`synthetic_background` with the first stream).
    """
    key = [int(seed), zlib.crc32(split.encode("utf-8")), int(index)]
    return (np.random.default_rng(np.random.SeedSequence(key + [0])),
            np.random.default_rng(np.random.SeedSequence(key + [1])))


def synthetic_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random background: (H, W, 3) uint8 RGB.

    Smooth colour noise (a 2..5 × 2..5 grid of random colours, bicubic upsampled) plus a linear gradient
    of random direction and colour (±40 levels), fine Gaussian noise (σ = 3 levels), then 2..5 filled
    rectangles of random colour, 5–35 % of the image side each.
    """
    gh, gw = (int(v) for v in rng.integers(2, 6, size=2))
    grid = rng.uniform(30.0, 225.0, size=(gh, gw, 3)).astype(np.float32)
    img = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = (np.cos(angle) * (xx / max(width - 1, 1) - 0.5) + np.sin(angle) * (yy / max(height - 1, 1) - 0.5))
    img += ramp[..., None] * rng.uniform(-80.0, 80.0, size=3)
    img += rng.normal(0.0, 3.0, size=img.shape)
    for _ in range(int(rng.integers(2, 6))):
        w = int(rng.uniform(0.05, 0.35) * width) + 1
        h = int(rng.uniform(0.05, 0.35) * height) + 1
        x0 = int(rng.integers(0, width))
        y0 = int(rng.integers(0, height))
        img[y0:y0 + h, x0:x0 + w] = rng.uniform(0.0, 255.0, size=3)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def sample_body_pose(rng: np.random.Generator) -> np.ndarray:
    """(69,) float64 body pose (axis-angle, radians, SMPL joints 1..23): uniform in :data:`POSE_BOX`."""
    box = np.array([POSE_BOX[j] for j in range(1, 24)], dtype=np.float64)  # (23, 3, 2)
    return rng.uniform(box[..., 0], box[..., 1]).reshape(69)


def _rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def sample_global_orient(rng: np.random.Generator) -> np.ndarray:
    """(3,) float64 root orientation (axis-angle, radians): upright, roughly facing the camera.

    R = R_x(pitch) · R_z(roll) · R_y(yaw) · R_x(180°), in camera coordinates. R_x(180°) turns SMPL's
    model frame (y up, body facing +z) into the OpenCV camera frame (y down) with the body facing the
    camera (−z); yaw ~ U(±60°) turns the body about the vertical; pitch and roll ~ U(±10°) tilt it.
    """
    yaw = math.radians(rng.uniform(-YAW_MAX_DEG, YAW_MAX_DEG))
    pitch, roll = np.radians(rng.uniform(-TILT_MAX_DEG, TILT_MAX_DEG, size=2))
    r = _rot_x(float(pitch)) @ _rot_z(float(roll)) @ _rot_y(yaw) @ _rot_x(math.pi)
    aa, _ = cv2.Rodrigues(r)
    return aa.reshape(3).astype(np.float64)


def _sample_pelvis_targets(rng: np.random.Generator, n: int, focal: float, principal: np.ndarray,
                           size: tuple[int, int]) -> np.ndarray:
    """(n, 3) pelvis positions (camera frame, m): depth ~ U(3, 8) m, image position uniform in
    :data:`PELVIS_X_RANGE` × :data:`PELVIS_Y_RANGE` of the image; a candidate closer than
    :data:`MIN_PELVIS_DISTANCE_M` to an earlier one is re-drawn (at most 20 times)."""
    w, h = size
    out: list[np.ndarray] = []
    for _ in range(n):
        for _attempt in range(20):
            z = rng.uniform(*DEPTH_RANGE_M)
            u = rng.uniform(*PELVIS_X_RANGE) * w
            v = rng.uniform(*PELVIS_Y_RANGE) * h
            p = np.array([(u - principal[0]) * z / focal, (v - principal[1]) * z / focal, z])
            if all(np.linalg.norm(p - q) >= MIN_PELVIS_DISTANCE_M for q in out):
                break
        out.append(p)
    return np.stack(out)


def _stored(a: np.ndarray) -> np.ndarray:
    """``a`` exactly as the dataset reader returns it: rounded to 6 decimals, then float32."""
    return np.round(np.asarray(a, dtype=np.float64), _STORED_DIGITS).astype(np.float32)


# --------------------------------------------------------------------------- rendering


@dataclass
class RenderMesh:
    """The triangles a body is drawn with.

    Attributes:
        triangles: (T, 3) int64 vertex indices.
        closed: True when every edge is shared by exactly two triangles (a closed surface); the
            triangles are then wound so that (v1 − v0) × (v2 − v0) points outward and back faces may be
            culled.
        description: how the triangles were obtained (written to the dataset notes).
    """

    triangles: np.ndarray
    closed: bool
    description: str


def _is_closed(triangles: np.ndarray) -> bool:
    """True when every undirected edge of ``triangles`` (T, 3) is used by exactly two triangles."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = np.sort(edges, axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool(np.all(counts == 2))


def surface_triangles(rest_vertices: np.ndarray, faces: np.ndarray) -> RenderMesh:
    """Triangles to draw a body with, from its rest-pose vertices (V, 3) m and faces (T, 3).

    The model's own faces when they form a surface (median rest-pose edge ≤ :data:`SURFACE_EDGE_MAX_M`,
    true for real SMPL, a closed mesh); if they are closed they are wound outward (all flipped when the
    signed volume is negative). Otherwise (the random-topology synthetic stand-in) a local triangulation
    of the rest pose: vertex i with its nearest neighbours (n1, n2), (n2, n3), (n3, n4), duplicates
    removed (not closed). Every vertex belongs to at least one triangle, so the silhouette spans all
    vertices.
    """
    from scipy.spatial import cKDTree

    rest = np.asarray(rest_vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    edges = np.linalg.norm(rest[faces] - rest[np.roll(faces, 1, axis=1)], axis=-1)
    if float(np.median(edges)) <= SURFACE_EDGE_MAX_M:
        if not _is_closed(faces):
            return RenderMesh(faces, False, "the body model's faces")
        v0, v1, v2 = rest[faces[:, 0]], rest[faces[:, 1]], rest[faces[:, 2]]
        volume = float(np.einsum("ij,ij->", v0, np.cross(v1, v2))) / 6.0
        oriented = faces if volume >= 0 else faces[:, [0, 2, 1]]
        return RenderMesh(oriented, True, "the body model's faces (closed; back faces culled)")
    _, nn = cKDTree(rest).query(rest, k=5)
    i = np.arange(rest.shape[0])
    tris = np.concatenate([np.stack([i, nn[:, a], nn[:, a + 1]], axis=1) for a in (1, 2, 3)])
    tris = np.unique(np.sort(tris, axis=1), axis=0).astype(np.int64)
    return RenderMesh(tris, False, "a nearest-neighbour triangulation of the rest pose "
                                   "(the model's faces are not a surface)")


def triangle_parts(body, triangles: np.ndarray) -> np.ndarray:
    """(T,) int64 dominant skinning part of each triangle: argmax over the 24 parts of the summed
    skinning weights of its 3 vertices."""
    weights = body.smpl.lbs_weights.detach().cpu().numpy().astype(np.float64)  # (6890, 24)
    return np.argmax(weights[triangles].sum(axis=1), axis=1).astype(np.int64)


@dataclass
class RenderResult:
    """An image with people drawn in.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        person_map: (H, W) int32, index of the person whose triangle is drawn at each pixel, −1 where
            the background shows.
        occluded_fraction: (P,) float64, fraction of each person's silhouette pixels (inside the image)
            drawn by another, nearer person (0 when the silhouette is empty).
    """

    image: np.ndarray
    person_map: np.ndarray
    occluded_fraction: np.ndarray


def _pixel_boxes(uv: np.ndarray, w: int, h: int) -> np.ndarray:
    """(P, 4) [x1, y1, x2, y2] of each person's projected points (P, V, 2), clipped to the image."""
    lo = np.clip(uv.min(axis=1), 0, [w - 1, h - 1])
    hi = np.clip(uv.max(axis=1), 0, [w - 1, h - 1])
    return np.concatenate([lo, hi], axis=1)


def render_people(background: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                  triangle_rgb: np.ndarray, focal: float, principal: np.ndarray, *,
                  cull_back_faces: bool = False) -> RenderResult:
    """Draw people over ``background`` with the painter's algorithm (see the module docstring).

    Args:
        background: (H, W, 3) uint8 RGB (not modified).
        vertices: (P, V, 3) camera-frame vertices of P people, metres (OpenCV frame).
        triangles: (T, 3) vertex indices, shared by all people.
        triangle_rgb: (T, 3) base RGB colour of each triangle, 0..255.
        focal: focal length (px), for x and y.
        principal: (2,) principal point (px).
        cull_back_faces: skip triangles whose outward normal (v1 − v0) × (v2 − v0) points away from the
            camera. Only for closed, outward-wound meshes (:attr:`RenderMesh.closed`), where the back
            faces are hidden anyway: the result is the same with half the triangles.

    Returns:
        :class:`RenderResult`.
    """
    h, w = background.shape[:2]
    n_people, n_tri = vertices.shape[0], triangles.shape[0]
    v = np.asarray(vertices, dtype=np.float64)
    z = v[..., 2]
    uv = v[..., :2] / np.maximum(z, _NEAR_M)[..., None] * focal + np.asarray(principal, np.float64)
    tri_uv = uv[:, triangles]  # (P, T, 3, 2)
    tri_v = v[:, triangles]  # (P, T, 3, 3)
    depth = tri_v[..., 2].mean(axis=-1)  # (P, T)
    drawn = ((tri_v[..., 2].min(axis=-1) > _NEAR_M)
             & (tri_uv[..., 0].max(-1) >= -1) & (tri_uv[..., 0].min(-1) <= w)
             & (tri_uv[..., 1].max(-1) >= -1) & (tri_uv[..., 1].min(-1) <= h))

    normal = np.cross(tri_v[:, :, 1] - tri_v[:, :, 0], tri_v[:, :, 2] - tri_v[:, :, 0])
    to_camera = -tri_v.mean(axis=2)
    if cull_back_faces:
        drawn &= (normal * to_camera).sum(-1) > 0
    cos = np.abs((normal * to_camera).sum(-1)) / np.maximum(
        np.linalg.norm(normal, axis=-1) * np.linalg.norm(to_camera, axis=-1), 1e-12)
    shade = 0.55 + 0.45 * cos
    rgb = np.clip(np.round(np.asarray(triangle_rgb, np.float64)[None] * shade[..., None]), 0, 255)
    rgb = rgb.astype(np.uint8).reshape(n_people * n_tri, 3)

    pts = np.round(tri_uv.reshape(n_people * n_tri, 3, 2) * (1 << _SHIFT)).astype(np.int32)
    flat_depth, flat_drawn = depth.reshape(-1), drawn.reshape(-1)
    order = np.argsort(-flat_depth, kind="stable")  # farthest first; ties by index
    order = order[flat_drawn[order]]
    tri_map = np.full((h, w), -1, dtype=np.int32)
    fill, line8 = cv2.fillConvexPoly, cv2.LINE_8
    for k in order.tolist():
        fill(tri_map, pts[k], k, line8, _SHIFT)

    covered = tri_map >= 0
    image = background.copy()
    image[covered] = rgb[tri_map[covered]]
    person_map = np.where(covered, tri_map // n_tri, -1).astype(np.int32)

    # Occlusion. Person p can only be covered by someone whose box meets p's box and who has a triangle
    # drawn after one of p's (nearer than p's farthest drawn triangle); otherwise skip its silhouette.
    occluded = np.zeros(n_people, dtype=np.float64)
    boxes = _pixel_boxes(uv, w, h)
    near = np.where(drawn, depth, np.inf).min(axis=1)  # (P,)
    far = np.where(drawn, depth, -np.inf).max(axis=1)  # (P,)
    for p in range(n_people):
        if not any(_box_iou(boxes[p], boxes[q]) > 0 and near[q] <= far[p] for q in range(n_people) if q != p):
            continue
        sil = np.zeros((h, w), dtype=np.uint8)
        for k in (np.flatnonzero(drawn[p]) + p * n_tri).tolist():
            cv2.fillConvexPoly(sil, pts[k], 1, cv2.LINE_8, _SHIFT)
        n_sil = int(sil.sum())
        if n_sil:
            occluded[p] = np.count_nonzero(sil.astype(bool) & covered & (person_map != p)) / n_sil
    return RenderResult(image=image, person_map=person_map, occluded_fraction=occluded)


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two [x1, y1, x2, y2] boxes (continuous coordinates)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


# --------------------------------------------------------------------------- one image


@dataclass
class _Scene:
    body: object  # SMPLBody
    triangles: np.ndarray  # (T, 3)
    triangle_rgb: np.ndarray  # (T, 3)
    width: int
    height: int
    focal: float
    principal: np.ndarray  # (2,)
    cull_back_faces: bool


def _run_body(body, go: np.ndarray, bp: np.ndarray, betas: np.ndarray, transl: np.ndarray | None):
    with torch.inference_mode():
        out = body(torch.from_numpy(go), torch.from_numpy(bp), torch.from_numpy(betas),
                   None if transl is None else torch.from_numpy(transl))
    return out.vertices.numpy().astype(np.float64), out.joints.numpy().astype(np.float64)


def _make_record(scene: _Scene, split: str, index: int, n_people: int, bg_rng: np.random.Generator,
                 rng: np.random.Generator) -> tuple[ImageAnnotation, np.ndarray]:
    """One record and its (H, W, 3) uint8 RGB image."""
    w, h, f, pp = scene.width, scene.height, scene.focal, scene.principal
    background = synthetic_background(w, h, bg_rng)

    go = _stored(np.stack([sample_global_orient(rng) for _ in range(n_people)]))
    bp = _stored(np.stack([sample_body_pose(rng) for _ in range(n_people)]))
    betas = _stored(np.clip(rng.normal(0.0, BETA_STD, size=(n_people, 10)), -BETA_CLIP, BETA_CLIP))
    targets = _sample_pelvis_targets(rng, n_people, f, pp, (w, h))
    _, joints0 = _run_body(scene.body, go, bp, betas, None)
    transl = _stored(targets - joints0[:, 0])  # pelvis (J30 row 0) lands on the target
    vertices, joints = _run_body(scene.body, go, bp, betas, transl)

    rendered = render_people(background, vertices, scene.triangles, scene.triangle_rgb, f, pp,
                             cull_back_faces=scene.cull_back_faces)

    joints_file = _stored(joints).astype(np.float64)  # what the reader returns
    z = joints_file[..., 2]
    kp_xy = joints_file[..., :2] / np.where(z > 0, z, 1.0)[..., None] * f + pp
    inside = ((z > 0) & (kp_xy[..., 0] >= 0) & (kp_xy[..., 0] <= w - 1)
              & (kp_xy[..., 1] >= 0) & (kp_xy[..., 1] <= h - 1))
    vz = vertices[..., 2]
    v_uv = vertices[..., :2] / np.maximum(vz, _NEAR_M)[..., None] * f + pp
    boxes = _pixel_boxes(v_uv, w, h)
    truncated = ((vz <= 0) | (v_uv[..., 0] < 0) | (v_uv[..., 0] > w - 1)
                 | (v_uv[..., 1] < 0) | (v_uv[..., 1] > h - 1)).any(axis=1)

    persons = []
    for p in range(n_people):
        tags = []
        if rendered.occluded_fraction[p] >= OCCLUDED_FRACTION:
            tags.append("occluded")
        if truncated[p]:
            tags.append("truncated")
        x1, y1, x2, y2 = boxes[p]
        persons.append(PersonAnnotation(
            keypoints_2d=np.concatenate([kp_xy[p], inside[p, :, None].astype(np.float64)], axis=1),
            bbox=np.array([x1, y1, x2 - x1, y2 - y1]),
            joints_3d=joints_file[p], joints_3d_valid=np.ones(joints.shape[1], np.float32),
            smpl=SMPLParams(global_orient=go[p], body_pose=bp[p], betas=betas[p], transl=transl[p],
                            gender="neutral", valid=True),
            tags=tags))
    image_tags = ["synthetic"]
    if any(_box_iou(boxes[a], boxes[b]) > CROWD_IOU for a in range(n_people) for b in range(a + 1, n_people)):
        image_tags.append("crowd")
    record = ImageAnnotation(image=f"{split}/{index:05d}.png", width=w, height=h, persons=persons,
                             focal=np.array([f, f]), principal=pp.copy(), tags=image_tags)
    return record, rendered.image


# --------------------------------------------------------------------------- dataset


def _validate(splits: Mapping[str, int], persons_per_image: tuple[int, int], image_size: tuple[int, int],
              seed: int) -> None:
    if not splits:
        raise InputError("splits must name at least one split, e.g. {'train': 64, 'test': 16}")
    for name, count in splits.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise InputError(f"bad split name {name!r}: use a plain name such as 'train'")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
            raise InputError(f"split {name!r}: the image count must be a positive integer, got {count!r}")
    lo_hi = tuple(persons_per_image)
    if (len(lo_hi) != 2 or not all(isinstance(v, (int, np.integer)) for v in lo_hi)
            or not 1 <= lo_hi[0] <= lo_hi[1]):
        raise InputError("persons_per_image must be (min, max) with 1 <= min <= max, "
                         f"got {persons_per_image!r}")
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 16 for v in size):
        raise InputError(f"image_size must be (width, height), integers >= 16, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")


@functools.lru_cache(maxsize=1)
def _stand_in_body():
    """The synthetic stand-in SMPLBody (built once per process; never modified)."""
    from ..models.body import SMPLBody
    from ..stand_ins.smpl import make_synthetic_smpl_arrays

    return SMPLBody(make_synthetic_smpl_arrays(seed=0))


def _load_body(smpl: str | Path | None):
    """(SMPLBody, description) for ``smpl`` (see :func:`generate_synthetic_dataset`)."""
    from ..weights.smpl import load_smpl

    if smpl is None:
        return (_stand_in_body(),
                "the synthetic stand-in body model dpmesh_infer.stand_ins.smpl.make_synthetic_smpl_arrays(seed=0) "
                "(NOT real SMPL: the labels are exact for that model only)")
    body = load_smpl(smpl, device="cpu")
    return body, f"SMPL neutral from {Path(smpl)} (head top: {body.head_top_source})"


def generate_synthetic_dataset(
    out_dir: str | Path,
    *,
    splits: Mapping[str, int] = DEFAULT_SPLITS,
    persons_per_image: tuple[int, int] = (1, 3),
    image_size: tuple[int, int] = (320, 240),
    seed: int = 0,
    smpl: str | Path | None = None,
) -> Path:
    """Write a synthetic dataset with exact labels (module docstring) and return its directory.

    Args:
        out_dir: dataset directory, created if needed; existing files of the same names are replaced.
        splits: images per split, e.g. ``{"train": 64, "test": 16}``.
        persons_per_image: (min, max) people per image, drawn uniformly per image.
        image_size: (width, height) in pixels.
        seed: non-negative integer; the same arguments give byte-identical files.
        smpl: a weights directory, its ``smpl/`` folder or ``SMPL_NEUTRAL.npz`` (see
            :func:`dpmesh_infer.models.body.load_smpl`); None = the synthetic stand-in body model
            (:func:`dpmesh_infer.stand_ins.smpl.make_synthetic_smpl_arrays` with seed 0).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path` (open it with :class:`~dpmesh_infer.data.format.Dataset`).

    Raises:
        InputError: an argument is invalid. WeightsError: ``smpl`` does not hold a usable SMPL file.
        OSError: an image cannot be written.
    """
    _validate(splits, persons_per_image, image_size, seed)
    root = Path(out_dir)
    width, height = int(image_size[0]), int(image_size[1])
    body, body_desc = _load_body(smpl)
    mesh = surface_triangles(body.smpl.v_template.detach().cpu().numpy(), body.faces)
    triangles, tri_desc = mesh.triangles, mesh.description
    parts = triangle_parts(body, triangles)
    scene = _Scene(body=body, triangles=triangles, triangle_rgb=PART_COLOURS[parts].astype(np.float64),
                   width=width, height=height, focal=math.hypot(width, height),
                   principal=np.array([width / 2.0, height / 2.0]), cull_back_faces=mesh.closed)
    lo, hi = int(persons_per_image[0]), int(persons_per_image[1])
    notes = (f"Synthetic images with exact labels: {lo}-{hi} posed bodies of {body_desc}, drawn with "
             f"{tri_desc} (painter's algorithm, body-part colours) over random backgrounds; "
             f"{width}x{height} px, focal sqrt(W^2+H^2), seed {int(seed)}. Visibility ignores occlusion; "
             "person tags 'occluded' (>= 30% of the silhouette covered by nearer people) and 'truncated'.")
    source = f"dpmesh_infer.data.synthetic.generate_synthetic_dataset(seed={int(seed)})"
    with DatasetWriter(root, name="synthetic", image_root="images", source=source, notes=notes) as writer:
        for split, count in splits.items():
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            for index in range(int(count)):
                bg_rng, rng = image_rngs(int(seed), split, index)
                n_people = int(rng.integers(lo, hi + 1))
                record, image = _make_record(scene, split, index, n_people, bg_rng, rng)
                path = root / "images" / record.image
                if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
                    raise OSError(f"could not write {path}")
                writer.add(split, record)
            log.info("synthetic split %s: %d images written to %s", split, count, root)
    return root
