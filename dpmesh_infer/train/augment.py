"""Training augmentations: crop geometry (scale, rotation, flip), colour, synthetic occlusion, label
transforms (2D/3D joints, SMPL pose) and PoseFix-style detector-error synthesis (upstream-dpmesh §6.2).

Conventions (all tested in ``tests/test_train_augment.py``):

- Image pixels: x right, y down, pixel centres on integer coordinates (OpenCV). Camera frame: OpenCV
  (X right, Y down, Z forward), metres.
- **Flip** mirrors the image first, x -> W - 1 - x (upstream ``generate_patch_image``), then crops
  around the mirrored box centre. Labels: 2D x -> W - 1 - x, 3D X -> -X, then every left/right pair is
  swapped (pairs derived from the ``L_``/``R_`` name prefixes). SMPL: the 24 joints are permuted
  left<->right and the y and z components of every axis-angle (root included) are negated, which is
  M R M with M = diag(-1, 1, 1): the mirror of the posed body, given a left/right symmetric template.
- **Rotation** ``rot_deg`` turns the crop box by +rot_deg in image coordinates (upstream
  ``gen_trans_from_patch_cv``: the box's right direction is (cos θ, sin θ), i.e. clockwise on screen
  because y points down). The crop content therefore turns by -rot_deg: a crop vector is
  s · R(-θ) · image vector with R(φ) = [[cos φ, -sin φ], [sin φ, cos φ]]. 3D camera-frame points turn
  the same way about the optical axis: X' = Rz(-θ) X, and the SMPL root orientation R' = Rz(-θ) R
  (upstream's ``rot_aug_mat``). Rotations about the optical axis commute with the pinhole projection,
  so root-relative 2D offsets in the crop stay proportional to the projected root-relative 3D offsets.
- Order: flip, then rotation (upstream).

Nothing here reads files; every random draw comes from the caller's ``np.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import ConfigBase
from ..errors import ConfigError
from ..geometry.crops import PreprocessConfig
from ..geometry.joints import COCO17_NAMES, J30_NAMES

__all__ = [
    "AugmentConfig", "AugmentParams", "sample_augmentation", "identity_augmentation", "crop_affine",
    "apply_affine", "flip_permutation", "J30_FLIP_PERM", "COCO17_FLIP_PERM", "SMPL_JOINT_NAMES",
    "SMPL_FLIP_PERM", "rotation_z", "transform_joints_3d", "transform_smpl_pose", "apply_color",
    "synthetic_occlusion", "COCO_KPS_SIGMAS", "ERROR_KINDS", "synthesize_detector_errors",
    "synthesize_detector_errors_labelled",
]  # fmt: skip

#: Largest ``posefix_scale``: the biggest sum of PoseFix error probabilities is 0.71 (joint-group
#: maxima 0.25 + 0.25 + 0.06 + 0.15), so 1.4 keeps the "good" probability >= 0.006.
MAX_POSEFIX_SCALE = 1.4


@dataclass(frozen=True)
class AugmentConfig(ConfigBase):
    """Training augmentation settings; defaults are upstream's (upstream-dpmesh §6.2, §6.5, §6.1).

    Geometry: the square box scale is U[bbox_scale_range) (replaces PreprocessConfig.bbox_square_scale),
    the crop side is further x (1 + scale_factor · clip(N(0,1), -1, 1)); with probability rot_prob the
    crop turns by rot_factor · clip(N(0,1), -2, 2) degrees; flip with flip_prob. Colour: per-channel
    scale U[1 - color_factor, 1 + color_factor], then clip to [0, 1]. Occlusion (student crop only):
    with occlusion_prob a uniform-noise rectangle of area U[0, occlusion_max_area) x box area and
    aspect (h/w) U[occlusion_aspect], at most occlusion_tries placements. Student keypoints: PoseFix
    detector errors when ``posefix`` (error probabilities x posefix_scale), then each input joint is
    dropped with probability student_drop. Betas are zeroed when any |beta| > zero_betas_above.
    """

    bbox_scale_range: tuple[float, float] = (1.0, 1.2)
    scale_factor: float = 0.25
    rot_factor: float = 30.0  # degrees
    rot_prob: float = 0.6
    flip_prob: float = 0.5
    color_factor: float = 0.2
    occlusion_prob: float = 0.5
    occlusion_max_area: float = 0.3
    occlusion_aspect: tuple[float, float] = (0.5, 2.0)
    occlusion_tries: int = 5
    posefix: bool = True
    posefix_scale: float = 1.0
    student_drop: float = 0.2
    zero_betas_above: float = 3.0

    def __post_init__(self) -> None:
        def bad(msg: str) -> None:
            raise ConfigError(f"AugmentConfig: {msg}")

        lo, hi = self.bbox_scale_range
        if not 0 < lo <= hi:
            bad(f"bbox_scale_range must satisfy 0 < low <= high, got {self.bbox_scale_range}")
        if not 0 <= self.scale_factor < 1:
            bad(f"scale_factor must be in [0, 1) (the crop scale 1 + f·[-1, 1] must stay > 0), "
                f"got {self.scale_factor}")
        if not 0 <= self.rot_factor <= 90:
            bad(f"rot_factor must be in [0, 90] degrees, got {self.rot_factor}")
        for name in ("rot_prob", "flip_prob", "occlusion_prob", "student_drop"):
            if not 0 <= getattr(self, name) <= 1:
                bad(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.color_factor < 1:
            bad(f"color_factor must be in [0, 1), got {self.color_factor}")
        if not 0 < self.occlusion_max_area <= 1:
            bad(f"occlusion_max_area must be in (0, 1], got {self.occlusion_max_area}")
        alo, ahi = self.occlusion_aspect
        if not 0 < alo <= ahi:
            bad(f"occlusion_aspect must satisfy 0 < low <= high, got {self.occlusion_aspect}")
        if self.occlusion_tries < 1:
            bad(f"occlusion_tries must be >= 1, got {self.occlusion_tries}")
        if not 0 <= self.posefix_scale <= MAX_POSEFIX_SCALE:
            bad(f"posefix_scale must be in [0, {MAX_POSEFIX_SCALE}] (error probabilities must sum to <= 1), "
                f"got {self.posefix_scale}")
        if not self.zero_betas_above > 0:
            bad(f"zero_betas_above must be > 0, got {self.zero_betas_above}")


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the geometric and colour augmentation.

    bbox_scale: square-box scale about its centre (test time: PreprocessConfig.bbox_square_scale);
    scale: extra factor on the crop side (> 1 shows more context); rot_deg: box rotation in degrees
    (module docstring for the sign); flip: mirror the image first; color_scale: (3,) RGB multipliers.
    """

    bbox_scale: float
    scale: float
    rot_deg: float
    flip: bool
    color_scale: tuple[float, float, float]


def sample_augmentation(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentParams:
    """Draw :class:`AugmentParams` from ``rng`` with the distributions of :class:`AugmentConfig`.

    Always consumes the same number of draws (so later draws do not depend on which branch was taken).
    """
    lo, hi = cfg.bbox_scale_range
    bbox_scale = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    scale = 1.0 + cfg.scale_factor * float(np.clip(rng.standard_normal(), -1.0, 1.0))
    rot = cfg.rot_factor * float(np.clip(rng.standard_normal(), -2.0, 2.0))
    do_rot = rng.random() < cfg.rot_prob
    flip = bool(rng.random() < cfg.flip_prob)
    color = rng.uniform(1.0 - cfg.color_factor, 1.0 + cfg.color_factor, size=3)
    return AugmentParams(bbox_scale=bbox_scale, scale=scale, rot_deg=rot if do_rot else 0.0, flip=flip,
                         color_scale=tuple(float(c) for c in color))


def identity_augmentation(preprocess_cfg: PreprocessConfig = PreprocessConfig()) -> AugmentParams:
    """The test-time parameters: box scale as in ``preprocess_cfg``, no scale/rotation/flip/colour."""
    return AugmentParams(bbox_scale=preprocess_cfg.bbox_square_scale, scale=1.0, rot_deg=0.0, flip=False,
                         color_scale=(1.0, 1.0, 1.0))


# --------------------------------------------------------------------------- crop geometry


def _rotate_2d(v: np.ndarray, rot_rad: float) -> np.ndarray:
    """(2,) vector turned by ``rot_rad`` (x' = x cos - y sin, y' = x sin + y cos), stored as float32."""
    sn, cs = math.sin(rot_rad), math.cos(rot_rad)
    x, y = float(v[0]), float(v[1])
    return np.array([x * cs - y * sn, x * sn + y * cs], dtype=np.float32)


def crop_affine(
    center_xy: tuple[float, float],
    side: float,
    image_width: int,
    cfg: PreprocessConfig = PreprocessConfig(),
    *,
    scale: float = 1.0,
    rot_deg: float = 0.0,
    flip: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Affines between the ORIGINAL image and the ``cfg.input_size`` crop of a square box.

    Args:
        center_xy: box centre (cx, cy) in original image px (before any flip).
        side: box side in px; the crop covers side · scale.
        image_width: W, for the flip x -> W - 1 - x.
        scale, rot_deg, flip: see :class:`AugmentParams` and the module docstring.

    Returns:
        (img2crop, crop2img), each (2,3) float32. img2crop maps original-image px to crop px (flip
        included, so its determinant is negative when flipped). With scale 1, rot 0, no flip it is
        bit-identical to :func:`dpmesh_infer.geometry.crops.crop_affines` (upstream ``gen_trans_from_patch_cv``).
    """
    import cv2

    cx, cy = float(center_xy[0]), float(center_xy[1])
    if flip:
        cx = image_width - cx - 1.0
    d = float(cfg.input_size)
    half = side * scale * 0.5
    rot_rad = math.pi * rot_deg / 180.0
    center = np.array([cx, cy], dtype=np.float32)
    src = np.stack([center, center + _rotate_2d(np.array([0.0, half]), rot_rad),
                    center + _rotate_2d(np.array([half, 0.0]), rot_rad)]).astype(np.float32)
    dst = np.array([[d * 0.5, d * 0.5], [d * 0.5, d], [d, d * 0.5]], dtype=np.float32)
    img2crop = cv2.getAffineTransform(src, dst).astype(np.float32)
    crop2img = cv2.getAffineTransform(dst, src).astype(np.float32)
    if flip:
        # img2crop ∘ F and F ∘ crop2img with F(x, y) = (W - 1 - x, y)  (F is its own inverse)
        a = img2crop.astype(np.float64)
        img2crop = np.stack([-a[:, 0], a[:, 1], a[:, 2] + a[:, 0] * (image_width - 1.0)], axis=1).astype(np.float32)
        b = crop2img.astype(np.float64)
        b[0] = -b[0]
        b[0, 2] += image_width - 1.0
        crop2img = b.astype(np.float32)
    return img2crop, crop2img


def apply_affine(points_xy: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(N,2) points through a (2,3) affine -> (N,2) float64 (float32 affine, float64 products)."""
    a = np.asarray(affine, dtype=np.float32).astype(np.float64)
    p = np.asarray(points_xy, dtype=np.float64)
    return p @ a[:, :2].T + a[:, 2]


# --------------------------------------------------------------------------- label transforms


def flip_permutation(names: tuple[str, ...]) -> np.ndarray:
    """Index permutation swapping every ``L_<x>`` with ``R_<x>`` (others map to themselves)."""
    index = {n: i for i, n in enumerate(names)}
    perm = np.arange(len(names))
    for i, n in enumerate(names):
        if n[:2] in ("L_", "R_"):
            other = ("R_" if n[0] == "L" else "L_") + n[2:]
            if other not in index:
                raise ValueError(f"{n} has no mirror joint {other} in {names}")
            perm[i] = index[other]
    return perm


#: SMPL's 24 kinematic joints (smplx order).
SMPL_JOINT_NAMES = (
    "Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle", "R_Ankle", "Spine3",
    "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
    "R_Elbow", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand",
)  # fmt: skip
J30_FLIP_PERM = flip_permutation(J30_NAMES)
COCO17_FLIP_PERM = flip_permutation(COCO17_NAMES)
SMPL_FLIP_PERM = flip_permutation(SMPL_JOINT_NAMES)


def rotation_z(rot_deg: float) -> np.ndarray:
    """(3,3) float64 rotation applied to camera-frame points for a crop rotated by ``rot_deg``:
    Rz(-rot_deg) = [[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]] of -rot_deg (module docstring)."""
    a = -math.pi * rot_deg / 180.0
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def transform_joints_3d(joints: np.ndarray, valid: np.ndarray, *, flip: bool, rot_deg: float,
                        root: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """J30 camera-frame joints (30,3) metres + valid (30,) -> root-relative, flipped, rotated.

    Returns (joints (30,3) float32 relative to joint ``root``, valid (30,) float32), both permuted by
    :data:`J30_FLIP_PERM` when flipped. A joint is valid only if it and the root are valid.
    """
    j = np.asarray(joints, dtype=np.float64)
    v = (np.asarray(valid, dtype=np.float64) > 0).astype(np.float32)
    rel = j - j[root]
    v = v * v[root]
    if flip:
        rel = rel * np.array([-1.0, 1.0, 1.0])
        rel, v = rel[J30_FLIP_PERM], v[J30_FLIP_PERM]
    rel = rel @ rotation_z(rot_deg).T
    return rel.astype(np.float32), v


def transform_smpl_pose(pose72: np.ndarray, *, flip: bool, rot_deg: float) -> np.ndarray:
    """SMPL pose (72,) axis-angle radians [root, 23 body joints] -> the pose of the flipped/rotated crop.

    Flip: joints permuted by :data:`SMPL_FLIP_PERM`, y and z of every axis-angle negated. Rotation:
    root R <- Rz(-rot_deg) · R (:func:`rotation_z`, same as the 3D joints). Returns (72,) float32.
    """
    import cv2

    p = np.asarray(pose72, dtype=np.float64).reshape(24, 3).copy()
    if flip:
        p = p[SMPL_FLIP_PERM] * np.array([1.0, -1.0, -1.0])
    if rot_deg != 0.0:
        root, _ = cv2.Rodrigues(p[0].reshape(3, 1))
        p[0] = cv2.Rodrigues(rotation_z(rot_deg) @ root)[0].reshape(3)
    return p.reshape(72).astype(np.float32)


def apply_color(crop_chw: np.ndarray, color_scale) -> np.ndarray:
    """(3,S,S) float32 in [0,1] x per-channel (3,) scale, clipped to [0,1] (upstream clips at 255)."""
    c = np.asarray(color_scale, dtype=np.float32)
    if np.all(c == 1.0):
        return crop_chw
    return np.clip(crop_chw * c[:, None, None], 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- synthetic occlusion


def synthetic_occlusion(
    crop: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, box_in_crop
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """Paste one uniform-noise rectangle over the person (PARE SynthOcc, upstream ``occlusion_aug``).

    Args:
        crop: (S,S,3) float32 in [0,1]; not modified.
        box_in_crop: (x, y, w, h) of the person box in crop px (may extend past the crop).

    Area U[0, occlusion_max_area) · w·h, aspect h/w U[occlusion_aspect], top-left uniform in
    [x, x + w - rect_w - 1] x [y, y + h - rect_h - 1]; a placement is kept only if the rectangle lies
    inside the crop, at most ``occlusion_tries`` tries; the sides are then truncated to whole pixels.

    Upstream bug fixed: upstream computes the rectangle from the bbox in ORIGINAL-image coordinates and
    pastes it into the 256x256 crop, so it lands at an unrelated place and only fits when the bbox
    coordinates happen to lie inside 256x256. Here everything is in crop coordinates.

    Returns (occluded copy, (x, y, w, h) ints with x + w <= S and y + h <= S) or (crop, None) when no
    placement fitted or the truncated rectangle is empty.
    """
    size_h, size_w = crop.shape[:2]
    bx, by, bw, bh = (float(v) for v in box_in_crop)
    alo, ahi = cfg.occlusion_aspect
    for _ in range(cfg.occlusion_tries):
        area = rng.uniform(0.0, cfg.occlusion_max_area) * bw * bh
        ratio = rng.uniform(alo, ahi)
        h, w = math.sqrt(area * ratio), math.sqrt(area / ratio)
        x0 = rng.random() * (bw - w - 1.0) + bx
        y0 = rng.random() * (bh - h - 1.0) + by
        if x0 >= 0 and y0 >= 0 and x0 + w < size_w and y0 + h < size_h:
            xi, yi, wi, hi = int(x0), int(y0), int(w), int(h)
            if wi == 0 or hi == 0:
                return crop, None
            out = crop.copy()
            out[yi:yi + hi, xi:xi + wi, :] = rng.random((hi, wi, crop.shape[2]), dtype=np.float32)
            return out, (xi, yi, wi, hi)
    return crop, None


# --------------------------------------------------------------------------- PoseFix detector errors

#: COCO OKS sigmas of the 17 COCO keypoints (COCO17_NAMES order).
COCO_KPS_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                            .89, .89]) / 10.0
#: Error kinds reported by :func:`synthesize_detector_errors_labelled` (codes = index).
ERROR_KINDS = ("good", "jitter", "miss", "inversion", "swap")
GOOD, JITTER, MISS, INVERSION, SWAP = range(5)
_CANDIDATES = 32  # candidate points per sampling attempt
_OVERLAP_IOU = 0.1

_FACE = np.arange(17) <= 4
_UPPER = (np.arange(17) >= 5) & (np.arange(17) <= 10)


def _error_probabilities(j: int, num_valid: int, num_overlap: int) -> np.ndarray:
    """PoseFix's per-joint probabilities (jitter, miss, inversion, swap) for COCO joint ``j``."""
    if j == 0 or 13 <= j <= 16:  # nose, knees, ankles
        jitter = (0.15, 0.10)
    elif 1 <= j <= 10:  # eyes, ears, arms
        jitter = (0.20, 0.15)
    else:  # hips
        jitter = (0.25, 0.20)
    p_jitter = jitter[0] if num_valid <= 10 else jitter[1]
    group = 0 if _FACE[j] else (1 if j in (5, 6, 15, 16) else 2)  # face / shoulders+ankles / rest
    if num_valid <= 5:
        p_miss = (0.15, 0.20, 0.25)[group]
    elif num_valid <= 10:
        p_miss = (0.10, 0.13, 0.15)[group]
    else:
        p_miss = (0.02, 0.05, 0.10)[group]
    part = 0 if _FACE[j] else (1 if _UPPER[j] else 2)  # face / upper body / lower body
    p_inv = (0.01, 0.03, 0.06)[part]
    crowded = (num_valid <= 10 and num_overlap > 0) or (num_valid <= 15 and num_overlap >= 3)
    p_swap = ((0.02, 0.15, 0.10) if crowded else (0.01, 0.06, 0.03))[part]
    return np.array([p_jitter, p_miss, p_inv, p_swap])


def _keypoint_box(kp: np.ndarray) -> np.ndarray | None:
    """Tight (x0, y0, x1, y1) of the visible joints, x1.2 about the centre (upstream get_bbox)."""
    vis = kp[:, 2] > 0
    if not vis.any():
        return None
    lo, hi = kp[vis, :2].min(0), kp[vis, :2].max(0)
    c, half = (lo + hi) / 2, (hi - lo) / 2 * 1.2
    return np.concatenate([c - half, c + half])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _ring_point(rng, centre, r_lo, r_hi, obstacles, min_dist) -> np.ndarray | None:
    """First of _CANDIDATES points at radius U[r_lo, r_hi), uniform angle, around ``centre`` that is
    farther than ``min_dist`` (None: the point's own radius) from every obstacle (K,2); None if none is."""
    ang = rng.uniform(0.0, 2 * math.pi, _CANDIDATES)
    r = rng.uniform(r_lo, r_hi, _CANDIDATES) if r_hi > r_lo else np.full(_CANDIDATES, r_lo)
    pts = centre[None, :] + r[:, None] * np.stack([np.cos(ang), np.sin(ang)], axis=1)
    if len(obstacles):
        d = np.linalg.norm(pts[:, None, :] - obstacles[None, :, :], axis=-1).min(axis=1)
        ok = d > (r if min_dist is None else min_dist)
        if not ok.any():
            return None
        return pts[int(np.argmax(ok))]
    return pts[0]


def synthesize_detector_errors_labelled(
    kp17: np.ndarray, others: list[np.ndarray], bbox_area: float, rng: np.random.Generator,
    scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`synthesize_detector_errors` that also returns the error kind of each joint.

    Returns (kp17 (17,3) float32, kinds (17,) int8 with codes into :data:`ERROR_KINDS`; -1 for joints
    that were not annotated, which are returned unchanged).
    """
    kp = np.asarray(kp17, dtype=np.float64)
    if kp.shape != (17, 3):
        raise ValueError(f"expected kp17 of shape (17, 3), got {kp.shape}")
    if not bbox_area >= 0:
        raise ValueError(f"bbox_area must be >= 0 px², got {bbox_area}")
    if not 0 <= scale <= MAX_POSEFIX_SCALE:
        raise ValueError(f"scale must be in [0, {MAX_POSEFIX_SCALE}], got {scale}")
    var = (2 * COCO_KPS_SIGMAS) ** 2
    d10, d50, d85 = (np.sqrt(-2.0 * bbox_area * var * math.log(ks)) for ks in (0.10, 0.50, 0.85))

    own_box = _keypoint_box(kp)
    near = []
    for o in others:
        o = np.asarray(o, dtype=np.float64)
        if o.shape != (17, 3):
            raise ValueError(f"expected other people's keypoints of shape (17, 3), got {o.shape}")
        ob = _keypoint_box(o)
        if own_box is not None and ob is not None and _iou(own_box, ob) > _OVERLAP_IOU:
            near.append(o)
    valid = kp[:, 2] > 0
    num_valid, num_overlap = int(valid.sum()), len(near)

    out = kp.copy()
    kinds = np.full(17, -1, dtype=np.int8)
    for j in np.flatnonzero(valid):
        pair = int(COCO17_FLIP_PERM[j])
        gt = kp[j, :2]
        inv_src = kp[pair, :2][None] if pair != j and valid[pair] else np.zeros((0, 2))
        swap_src = [o[j, :2] for o in near if o[j, 2] > 0]
        if pair != j:
            swap_src += [o[pair, :2] for o in near if o[pair, 2] > 0]
        swap_src = np.array(swap_src).reshape(-1, 2)

        p_err = _error_probabilities(j, num_valid, num_overlap) * scale
        probs = np.concatenate([[1.0 - p_err.sum()], p_err])  # good, jitter, miss, inversion, swap
        if len(inv_src) == 0:
            probs[INVERSION] = 0.0
        if len(swap_src) == 0:
            probs[SWAP] = 0.0
        not_gt = np.concatenate([inv_src, swap_src])
        while probs.sum() > 0:
            kind = int(rng.choice(5, p=probs / probs.sum()))
            if kind == GOOD:
                pt = _ring_point(rng, gt, 0.0, d85[j], not_gt, None)
            elif kind == JITTER:
                pt = _ring_point(rng, gt, d85[j], d50[j], not_gt, None)
            elif kind == MISS:
                pt = _ring_point(rng, gt, d50[j], d10[j], not_gt, d50[j])
            elif kind == INVERSION:
                pt = _ring_point(rng, inv_src[0], 0.0, d50[j], np.concatenate([gt[None], swap_src]), None)
            else:
                centre = swap_src[int(rng.integers(len(swap_src)))]
                pt = _ring_point(rng, centre, 0.0, d50[j], np.concatenate([gt[None], inv_src]), None)
            if pt is not None:
                break
            probs[kind] = 0.0  # no admissible point for this kind: renormalise over the others
        else:  # nothing admissible at all (PoseFix zeroes the joint)
            out[j] = 0.0
            kinds[j] = MISS
            continue
        out[j, :2] = pt
        out[j, 2] = 0.0 if kind == MISS else kp[j, 2]
        kinds[j] = kind
    return out.astype(np.float32), kinds


def synthesize_detector_errors(
    kp17: np.ndarray, others: list[np.ndarray], bbox_area: float, rng: np.random.Generator,
    scale: float = 1.0,
) -> np.ndarray:
    """PoseFix-style detector errors on ground-truth COCO-17 keypoints (3DCrowdNet ``synthesize_pose``).

    Args:
        kp17: (17,3) GT [x, y, visibility] image px (COCO17_NAMES order); visibility 0 = not annotated.
        others: (17,3) GT keypoints of the other people of the image (same frame); only those whose
            keypoint box (visible joints, x1.2) overlaps this person's with IoU > 0.1 are used.
        bbox_area: person box area in px² (sets the displacement radii).
        rng: random generator (the only source of randomness).
        scale: multiplier on the four error probabilities (``AugmentConfig.posefix_scale``).

    Each annotated joint j becomes one of (probabilities by joint group, number of visible joints and
    number of overlapping people — PoseFix's table, :func:`_error_probabilities`):

    - good: within d85 of the GT; jitter: between d85 and d50 of the GT;
    - miss: between d50 and d10 of the GT and farther than d50 from the other candidate sources,
      **confidence 0** (a dropped detection; see below);
    - inversion: within d50 of the same person's mirror joint (L<->R), if that joint is annotated;
    - swap: within d50 of joint j or its mirror joint of an overlapping person.

    d_ks = sqrt(-2 · area · (2σ_j)² · ln ks) is the distance at which the COCO keypoint similarity
    drops to ks (σ_j: :data:`COCO_KPS_SIGMAS`). Every point must be farther from the other candidate
    sources (GT, mirror joint, other people's joints) than its own displacement radius, as in PoseFix.
    Non-miss joints keep the GT visibility as confidence; unannotated joints are returned unchanged.

    Simplifications vs PoseFix (documented choices, not bugs):

    - PoseFix's "miss" is a confident detection far from the joint (conf 1). Here a miss is a dropped
      detection: confidence 0 (masked out of heatmaps), position still displaced by d50..d10 so that
      the unmasked joint token sees a wrong location. Misses are centred on the GT only (PoseFix also
      centres them on the swap / inversion sources).
    - PoseFix samples a point for every kind, zeroes the probability of kinds without an admissible
      point and then draws the kind. Here the kind is drawn first and a point is sampled for it (32
      candidates); a kind without an admissible point is removed and the kind redrawn. The two agree
      whenever admissibility does not depend on the draw (the common case).
    - Overlap is decided from keypoint boxes (3DCrowdNet uses the dataset boxes).

    Returns:
        (17,3) float32 [x, y, confidence].
    """
    return synthesize_detector_errors_labelled(kp17, others, bbox_area, rng, scale)[0]
