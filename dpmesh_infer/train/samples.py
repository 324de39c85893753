"""Training samples: one person of one dataset record -> the arrays a training step needs.

:func:`make_training_sample` builds the teacher/student inputs and all targets of upstream-dpmesh §6
(augmentation §6.2, NKR inputs §6.5) from an :class:`~dpmesh_infer.data.format.ImageAnnotation`.
With ``train=False`` it is the test-time preprocessing of :func:`dpmesh_infer.geometry.crops.prepare_persons`
applied to the person's ground-truth keypoints seen through a COCO detector (:func:`gt_detector_j30`),
bit for bit. Sign conventions of flip and rotation: :mod:`dpmesh_infer.train.augment`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..data.format import ImageAnnotation, PersonAnnotation
from ..geometry.crops import (  # fmt: skip
    PreprocessConfig,
    Skip,
    SquareBox,
    box_from_keypoints,
    crop_image,
    joint_inputs,
)
from ..geometry.joints import COCO17_NAMES, J30_NAMES, coco17_to_j30  # fmt: skip
from .augment import (
    J30_FLIP_PERM,
    AugmentConfig,
    AugmentParams,
    apply_affine,
    apply_color,
    crop_affine,
    identity_augmentation,
    sample_augmentation,
    synthesize_detector_errors,
    synthetic_occlusion,
    transform_joints_3d,
    transform_smpl_pose,
)  # fmt: skip

__all__ = ["SAMPLE_KEYS", "POSE_VALID", "j30_to_coco17", "gt_detector_j30", "person_box", "usable_person",
           "make_training_sample"]

#: Keys of the dict returned by :func:`make_training_sample` (exactly these).
SAMPLE_KEYS = (
    "img_teacher", "img_student", "joints32_teacher", "mask_teacher", "joints32_student", "mask_student",
    "target_j2d", "target_j3d", "j3d_valid", "has_j3d", "smpl_pose", "smpl_betas", "has_smpl", "pose_valid",
    "focal", "box", "img2crop", "flipped", "rot_deg",
)  # fmt: skip
#: (24,) float32 SMPL pose supervision mask (upstream ``smpl_param_valid``): 0 for ankles 7, 8, feet
#: 10, 11, wrists 20, 21, hands 22, 23; 1 elsewhere. Flip-invariant.
POSE_VALID = np.ones(24, dtype=np.float32)
POSE_VALID[[7, 8, 10, 11, 20, 21, 22, 23]] = 0.0
_COCO_IN_J30 = np.array([J30_NAMES.index(n) for n in COCO17_NAMES])


def j30_to_coco17(kp30: np.ndarray) -> np.ndarray:
    """(30,3) J30 [x, y, v] -> (17,3) COCO-17 by joint name (same dtype)."""
    return np.asarray(kp30)[_COCO_IN_J30].copy()


def gt_detector_j30(kp30_gt: np.ndarray) -> np.ndarray:
    """GT J30 keypoints as a perfect COCO-17 detector would report them, in the J30 layout.

    (30,3) [x, y, visibility] image px -> (30,3) float32: J30 -> COCO-17 by name, then
    :func:`~dpmesh_infer.geometry.crops.coco17_to_j30` (Pelvis / Neck = pair means with product confidence,
    exactly like test time; slots without a COCO source are zero). Visibility acts as confidence.
    """
    kp = np.asarray(kp30_gt, dtype=np.float32)
    if kp.shape != (30, 3):
        raise ValueError(f"expected keypoints of shape (30, 3), got {kp.shape}")
    return coco17_to_j30(j30_to_coco17(kp)[None])[0]


def person_box(person: PersonAnnotation, cfg: PreprocessConfig = PreprocessConfig()) -> np.ndarray | None:
    """(4,) float64 [x, y, w, h] px of the person: the ``bbox`` field, else the tight box of the
    annotated GT J30 joints x cfg.bbox_expand (upstream ``get_bbox``); None without either."""
    if person.bbox is not None:
        return np.asarray(person.bbox, dtype=np.float64).reshape(4)
    kp = np.asarray(person.keypoints_2d, dtype=np.float64)
    vis = kp[:, 2] > 0
    if not vis.any():
        return None
    lo, hi = kp[vis, :2].min(axis=0), kp[vis, :2].max(axis=0)
    wh = (hi - lo) * cfg.bbox_expand
    return np.concatenate([(lo + hi) / 2 - wh / 2, wh])


_FACE = [J30_NAMES.index(n) for n in ("Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear")]
_HEAD_TOP = J30_NAMES.index("Head_top")


def _square_box(person: PersonAnnotation, width: int, height: int, cfg: PreprocessConfig) -> SquareBox | Skip:
    """Test-time box of the detector-view GT keypoints; fallback: :func:`person_box`.

    Data without face keypoints but with a head top (CrowdPose) would get a box that ends at the
    neck: there the annotated head top joins the box keypoints (not the network inputs).
    """
    kp = gt_detector_j30(person.keypoints_2d)
    gt = np.asarray(person.keypoints_2d, dtype=np.float32)
    if not (gt[_FACE, 2] > 0).any() and gt[_HEAD_TOP, 2] > 0:
        kp[_HEAD_TOP] = gt[_HEAD_TOP]
    return box_from_keypoints(kp, width, height, cfg, person_box(person, cfg))


def usable_person(person: PersonAnnotation, width: int, height: int,
                  preprocess_cfg: PreprocessConfig = PreprocessConfig()) -> bool:
    """Whether :func:`make_training_sample` can crop this person (a box from keypoints or fallback).

    Independent of the random box scale (the degenerate-box rule is applied before scaling).
    """
    return isinstance(_square_box(person, width, height, preprocess_cfg), SquareBox)


def _inputs(kp30_img: np.ndarray, img2crop: np.ndarray, cfg: PreprocessConfig, flip: bool):
    joints32, mask = joint_inputs(kp30_img[None], img2crop[None], cfg)
    joints32, mask = joints32[0], mask[0]
    if flip:
        joints32, mask = joints32[J30_FLIP_PERM], mask[J30_FLIP_PERM]
    return np.ascontiguousarray(joints32, dtype=np.float32), np.ascontiguousarray(mask, dtype=bool)


def make_training_sample(
    image_rgb: np.ndarray,
    record: ImageAnnotation,
    person_index: int,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    preprocess_cfg: PreprocessConfig = PreprocessConfig(),
    *,
    train: bool = True,
    params: AugmentParams | None = None,
) -> dict[str, np.ndarray]:
    """All arrays of one training sample for ``record.persons[person_index]``.

    Args:
        image_rgb: (H,W,3) uint8 RGB, the record's image (H, W must match the record).
        rng: the only source of randomness (same seed -> identical sample).
        train: False = no augmentation, no keypoint noise, no drop, no occlusion: the crop, joints32 and
            mask equal ``prepare_persons(image, gt_detector_j30(kp)[None], preprocess_cfg, [person_box])``.
        params: fixed geometry/colour (:class:`AugmentParams`) instead of drawing them (tests, tools);
            ``train`` still decides keypoint noise, drop and occlusion.

    Box: the test-time box (:func:`~dpmesh_infer.geometry.crops.box_from_keypoints`) of the detector-view GT
    keypoints with the square scale params.bbox_scale, falling back to :func:`person_box`; the crop then
    covers side · params.scale, turned by params.rot_deg, the image mirrored first when params.flip.

    Returns (float32 unless noted; "crop" = the 256 crop as the network sees it, flipped if flipped):
        img_teacher (3,S,S) [0,1]: geometric + colour augmentation.
        img_student (3,S,S): img_teacher plus a synthetic occluder (equal to it when none was drawn).
        joints32_teacher (30,2) grid units, mask_teacher (30,) bool: :func:`gt_detector_j30` through the
            crop affine / 8, mask = conf > conf_thr and inside the grid (``joint_inputs``).
        joints32_student, mask_student: the same from PoseFix-noised COCO-17 GT (other people of the
            record as swap sources), then each mask entry dropped with probability cfg.student_drop. The
            noise is drawn in the original image and then goes through the same flip/rotation as
            everything else, so the swap sources are flipped consistently.
        target_j2d (30,3): GT J30 [u, v] crop px and validity (visibility > 0 and 0 <= u, v < S).
        target_j3d (30,3) metres, camera frame relative to joint 0 (pelvis), flipped/rotated;
            j3d_valid (30,); has_j3d () 1 if the person has joints_3d with a valid pelvis.
        smpl_pose (72,) axis-angle rad (flipped/rotated), smpl_betas (10,) (zero if any |beta| >
            cfg.zero_betas_above), has_smpl () 1 if SMPL is present and valid, pose_valid (24,)
            (:data:`POSE_VALID`).
        focal (): sqrt(W² + H²) px of the original image (the model focal).
        box (3,): (cx, cy, side · scale) px of the crop box in the original image (before flip).
        img2crop (2,3): original image px -> crop px (flip included). flipped () 0/1. rot_deg ()
            degrees, applied after the flip (sign: :mod:`dpmesh_infer.train.augment`).

    Raises:
        ValueError: wrong image shape, person index out of range, or no usable box (check
            :func:`usable_person` first).
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
    height, width = image_rgb.shape[:2]
    if (width, height) != (record.width, record.height):
        raise ValueError(f"image is {width}x{height} but record {record.image!r} says {record.width}x{record.height}")
    if not 0 <= person_index < len(record.persons):
        raise ValueError(f"person_index {person_index} out of range ({len(record.persons)} persons)")
    person = record.persons[person_index]
    if params is None:
        params = sample_augmentation(rng, cfg) if train else identity_augmentation(preprocess_cfg)
    flip, rot = bool(params.flip), float(params.rot_deg)
    size = preprocess_cfg.input_size

    box = _square_box(person, width, height, dataclasses.replace(preprocess_cfg, bbox_square_scale=params.bbox_scale))
    if isinstance(box, Skip):
        raise ValueError(f"person {person_index} of {record.image!r} has no usable box: {box.reason}")
    img2crop, _ = crop_affine(box.center, box.size, width, preprocess_cfg, scale=params.scale, rot_deg=rot, flip=flip)

    # images
    img_teacher = apply_color(crop_image(image_rgb.astype(np.float32), img2crop, preprocess_cfg), params.color_scale)

    # keypoint inputs
    kp_gt = np.asarray(person.keypoints_2d, dtype=np.float32)
    joints32_t, mask_t = _inputs(gt_detector_j30(kp_gt), img2crop, preprocess_cfg, flip)
    if train and cfg.posefix:
        box_xywh = person_box(person, preprocess_cfg)
        area = float(box_xywh[2] * box_xywh[3]) if box_xywh is not None else 0.0
        others = [j30_to_coco17(np.asarray(p.keypoints_2d, dtype=np.float32))
                  for i, p in enumerate(record.persons) if i != person_index]
        noisy17 = synthesize_detector_errors(j30_to_coco17(kp_gt), others, area, rng, cfg.posefix_scale)
        joints32_s, mask_s = _inputs(coco17_to_j30(noisy17[None])[0], img2crop, preprocess_cfg, flip)
    else:
        joints32_s, mask_s = joints32_t.copy(), mask_t.copy()
    if train and cfg.student_drop > 0:
        mask_s &= rng.random(30) >= cfg.student_drop

    img_student = img_teacher
    if train and cfg.occlusion_prob > 0 and rng.random() < cfg.occlusion_prob:
        side = size / params.scale  # the square box (before the extra scale) is axis-aligned in the crop
        box_in_crop = (size / 2 - side / 2, size / 2 - side / 2, side, side)
        occluded, _ = synthetic_occlusion(img_teacher.transpose(1, 2, 0), rng, cfg, box_in_crop)
        img_student = np.ascontiguousarray(occluded.transpose(2, 0, 1))
    img_student = img_student.copy() if img_student is img_teacher else img_student

    # 2D target
    uv = apply_affine(kp_gt[:, :2], img2crop)
    valid2d = (kp_gt[:, 2] > 0) & (uv >= 0).all(1) & (uv < size).all(1)
    target_j2d = np.concatenate([uv, valid2d[:, None]], axis=1).astype(np.float32)
    if flip:
        target_j2d = target_j2d[J30_FLIP_PERM]

    # 3D target
    target_j3d, j3d_valid = np.zeros((30, 3), np.float32), np.zeros(30, np.float32)
    has_j3d = 0.0
    if person.joints_3d is not None:
        v = person.joints_3d_valid if person.joints_3d_valid is not None else np.ones(30)
        target_j3d, j3d_valid = transform_joints_3d(person.joints_3d, v, flip=flip, rot_deg=rot)
        has_j3d = float(j3d_valid.any())

    # SMPL
    smpl_pose, betas, has_smpl = np.zeros(72, np.float32), np.zeros(10, np.float32), 0.0
    if person.smpl is not None:
        smpl_pose = transform_smpl_pose(person.smpl.pose72, flip=flip, rot_deg=rot)
        betas = np.asarray(person.smpl.betas, dtype=np.float32).copy()
        if np.any(np.abs(betas) > cfg.zero_betas_above):
            betas[:] = 0.0
        has_smpl = float(bool(person.smpl.valid))

    f32 = np.float32

    def scalar(x: float) -> np.ndarray:
        return np.array(x, dtype=f32)

    return {
        "img_teacher": img_teacher.astype(f32, copy=False),
        "img_student": img_student.astype(f32, copy=False),
        "joints32_teacher": joints32_t, "mask_teacher": mask_t,
        "joints32_student": joints32_s, "mask_student": mask_s,
        "target_j2d": target_j2d,
        "target_j3d": target_j3d.astype(f32), "j3d_valid": j3d_valid.astype(f32), "has_j3d": scalar(has_j3d),
        "smpl_pose": smpl_pose, "smpl_betas": betas, "has_smpl": scalar(has_smpl), "pose_valid": POSE_VALID.copy(),
        "focal": scalar(np.hypot(width, height)),
        "box": np.array([*box.center, box.size * params.scale], dtype=f32),
        "img2crop": img2crop.astype(f32), "flipped": scalar(flip), "rot_deg": scalar(rot),
    }  # fmt: skip
