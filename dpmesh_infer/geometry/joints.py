"""Joint sets and mappings: the internal 30-joint set (3DCrowdNet/JOTR) and the detector formats.

Pure numpy. Mappings copy joints by name and add Pelvis (and Neck for COCO-17) as the mean of the pair
with confidence = the product of the pair's confidences (ARCHITECTURE §2, upstream-dpmesh §1.1).
"""

from __future__ import annotations

import numpy as np

J30_NAMES = (
    "Pelvis", "L_Hip", "R_Hip", "Torso", "L_Knee", "R_Knee", "Spine", "L_Ankle", "R_Ankle", "Chest",
    "L_Toe", "R_Toe", "Neck", "L_Thorax", "R_Thorax", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
    "R_Elbow", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand", "Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear",
    "Head_top",
)  # fmt: skip
#: The 15 joints predicted by the regressor's joint queries, as indices into J30_NAMES.
GRAPH_JOINTS = (0, 1, 2, 4, 5, 7, 8, 12, 29, 16, 17, 18, 19, 20, 21)
COCO17_NAMES = (
    "Nose", "L_Eye", "R_Eye", "L_Ear", "R_Ear", "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow",
    "L_Wrist", "R_Wrist", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle",
)  # fmt: skip
OPENPOSE18_NAMES = (
    "Nose", "Neck", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist", "R_Hip",
    "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "R_Eye", "L_Eye", "R_Ear", "L_Ear",
)  # fmt: skip
#: OpenPose BODY_25. Only the 18 names shared with OPENPOSE18_NAMES are used; MidHip, toes and heels
#: are dropped (the checkpoints never saw them at test time) and Pelvis is the hip mean, as for
#: OpenPose-18, not OpenPose's MidHip.
OPENPOSE25_NAMES = (
    "Nose", "Neck", "R_Shoulder", "R_Elbow", "R_Wrist", "L_Shoulder", "L_Elbow", "L_Wrist", "MidHip",
    "R_Hip", "R_Knee", "R_Ankle", "L_Hip", "L_Knee", "L_Ankle", "R_Eye", "L_Eye", "R_Ear", "L_Ear",
    "L_BigToe", "L_SmallToe", "L_Heel", "R_BigToe", "R_SmallToe", "R_Heel",
)  # fmt: skip
#: Halpe-26 (AlphaPose's Halpe body set, also mmpose's ``halpe26``; Halpe-FullBody README "Keypoints
#: format"): the COCO-17 order, then Head (the top of the head: J30 Head_top), Neck, Hip (the hip centre),
#: toes and heels. Copied by name: the 17 COCO joints, Neck (Halpe's own, as OpenPose's) and Head_top;
#: Hip, toes and heels are dropped and Pelvis is the hip mean, as for OpenPose.
HALPE26_NAMES = COCO17_NAMES + (
    "Head_top", "Neck", "MidHip", "L_BigToe", "R_BigToe", "L_SmallToe", "R_SmallToe", "L_Heel", "R_Heel",
)  # fmt: skip
_FACE68 = tuple(f"Face_{i}" for i in range(68))
_HANDS = tuple(f"{side}_Hand_{i}" for side in ("L", "R") for i in range(21))  # root, then 4 per finger
#: Halpe-136 (Halpe-FullBody; AlphaPose's 136-keypoint models, mmpose's ``halpe``): Halpe-26, 68 face
#: points, 21 left-hand and 21 right-hand points. Only the body joints are used (as Halpe-26).
HALPE136_NAMES = HALPE26_NAMES + _FACE68 + _HANDS
#: COCO-WholeBody (133: mmpose's ``coco_wholebody``, RTMW / DWPose): COCO-17, 6 foot points, 68 face,
#: 2 x 21 hand points. Only the COCO-17 body joints are used (Pelvis and Neck as for COCO-17).
COCO_WHOLEBODY_NAMES = COCO17_NAMES + (
    "L_BigToe", "L_SmallToe", "L_Heel", "R_BigToe", "R_SmallToe", "R_Heel",
) + _FACE68 + _HANDS  # fmt: skip
JOINT_FORMATS = {"coco17": COCO17_NAMES, "openpose18": OPENPOSE18_NAMES, "openpose25": OPENPOSE25_NAMES,
                 "halpe26": HALPE26_NAMES, "halpe136": HALPE136_NAMES, "coco_wholebody": COCO_WHOLEBODY_NAMES}
#: Formats without a Neck of their own: Neck = shoulder mean (confidence = product), as upstream for COCO.
_ADD_NECK = {"coco17": True, "coco_wholebody": True}


def map_to_j30(kp: np.ndarray, names: tuple[str, ...], add_neck: bool) -> np.ndarray:
    """(N,J,3) keypoints of the joint set ``names`` (J30 names) -> (N,30,3): copied by name, Pelvis
    (and Neck with ``add_neck``) = mean of the pair with confidence = product; other slots zero."""
    kp = np.asarray(kp)
    if kp.ndim != 3 or kp.shape[1:] != (len(names), 3):
        raise ValueError(f"expected keypoints of shape (N, {len(names)}, 3), got {kp.shape}")
    dtype = kp.dtype if kp.dtype in (np.float32, np.float64) else np.float64
    kp = kp.astype(dtype, copy=False)
    out = np.zeros((kp.shape[0], 30, 3), dtype=dtype)
    for src, name in enumerate(names):
        if name in J30_NAMES:
            out[:, J30_NAMES.index(name)] = kp[:, src]
    pairs = [("Pelvis", "L_Hip", "R_Hip")] + ([("Neck", "L_Shoulder", "R_Shoulder")] if add_neck else [])
    for dst, a, b in pairs:
        ja, jb = kp[:, names.index(a)], kp[:, names.index(b)]
        # mean of the pair even when one is missing (upstream), confidence = product
        out[:, J30_NAMES.index(dst), :2] = (ja[:, :2] + jb[:, :2]) * 0.5
        out[:, J30_NAMES.index(dst), 2] = ja[:, 2] * jb[:, 2]
    return out


def coco17_to_j30(kp: np.ndarray) -> np.ndarray:
    """COCO-17 (N,17,3) [x, y, score] px -> (N,30,3); adds Pelvis and Neck (pair mean, conf product)."""
    return map_to_j30(kp, COCO17_NAMES, add_neck=True)


def openpose18_to_j30(kp: np.ndarray) -> np.ndarray:
    """OpenPose-18 (N,18,3) -> (N,30,3); adds Pelvis (hip mean, conf product); Neck is OpenPose's own."""
    return map_to_j30(kp, OPENPOSE18_NAMES, add_neck=False)


def openpose25_to_j30(kp: np.ndarray) -> np.ndarray:
    """OpenPose BODY_25 (N,25,3) -> (N,30,3): the OpenPose-18 subset by name, Pelvis = hip mean."""
    return map_to_j30(kp, OPENPOSE25_NAMES, add_neck=False)


def to_j30(kp: np.ndarray, joint_format: str) -> np.ndarray:
    """Dispatch on ``joint_format`` (a key of :data:`JOINT_FORMATS`): (N,J,3) -> (N,30,3).

    Halpe-26/136 and COCO-WholeBody map their body joints by name (tables above); their face, hand and
    foot points have no J30 slot and are dropped.
    """
    fn = {"coco17": coco17_to_j30, "openpose18": openpose18_to_j30, "openpose25": openpose25_to_j30}
    if joint_format in fn:
        return fn[joint_format](kp)
    if joint_format not in JOINT_FORMATS:
        raise ValueError(f"unknown joint format {joint_format!r}; expected one of {sorted(JOINT_FORMATS)}")
    return map_to_j30(kp, JOINT_FORMATS[joint_format], add_neck=_ADD_NECK.get(joint_format, False))
