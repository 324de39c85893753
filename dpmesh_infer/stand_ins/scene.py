"""A synthetic crowd photo: stick figures drawn with OpenCV and their exact COCO-17 keypoints."""

from __future__ import annotations

import numpy as np

# COCO-17 skeleton of a standing person in a unit box (x right, y down), used to draw and to label.
_COCO_T_POSE = np.array([
    [0.50, 0.08], [0.53, 0.06], [0.47, 0.06], [0.56, 0.08], [0.44, 0.08],
    [0.62, 0.22], [0.38, 0.22], [0.72, 0.38], [0.28, 0.38], [0.78, 0.52], [0.22, 0.52],
    [0.58, 0.55], [0.42, 0.55], [0.60, 0.76], [0.40, 0.76], [0.61, 0.97], [0.39, 0.97],
])
_LIMBS = [(5, 7), (7, 9), (6, 8), (8, 10), (5, 6), (11, 12), (5, 11), (6, 12), (11, 13), (13, 15), (12, 14),
          (14, 16), (0, 5), (0, 6)]


def synthetic_scene(width: int = 640, height: int = 480, seed: int = 0):
    """A photo (H, W, 3) uint8 with two overlapping stick figures and their COCO-17 keypoints (2, 17, 3)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 200, np.uint8)
    img[: height // 2] = (150, 180, 220)
    kps = []
    for (x0, y0, s) in ((180, 80, 330), (330, 110, 300)):
        xy = _COCO_T_POSE * s + np.array([x0, y0]) + rng.normal(0, 2.0, (17, 2))
        color = tuple(int(c) for c in rng.integers(20, 120, 3))
        for a, b in _LIMBS:
            cv2.line(img, tuple(int(v) for v in xy[a]), tuple(int(v) for v in xy[b]), color, 9, cv2.LINE_AA)
        cv2.circle(img, tuple(int(v) for v in xy[0]), 22, color, -1, cv2.LINE_AA)
        kps.append(np.concatenate([xy, np.full((17, 1), 0.9)], axis=1))
    return img, np.stack(kps)
