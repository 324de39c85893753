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


def synthetic_crowd(width: int = 1280, height: int = 720, people: int = 10, seed: int = 0):
    """A wider crowd photo: ``people`` stick figures in two overlapping rows (the back row smaller and
    higher, as people farther away), with textured noise in the background so that JPEG decoding costs
    what a real photo of that size costs. Returns (image (H, W, 3) uint8, COCO-17 keypoints (P, 17, 3)
    pixels with confidence 0.9)."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(90, 230, (height, width, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    kps = {}
    front = (people + 1) // 2
    for k in [*range(front, people), *range(front)]:  # the back row first: the front row occludes it
        back = k >= front
        row_n = people - front if back else front
        j = k - front if back else k
        s = height * (0.55 if back else 0.8)
        x0 = (j + 0.5) * width / max(row_n, 1) - s / 2 + rng.normal(0, width * 0.01)
        x0 = float(np.clip(x0, -0.15 * s, width - 0.85 * s))  # the body (not the box margin) in the photo
        y0 = height * (0.05 if back else 0.18)
        xy = _COCO_T_POSE * s + np.array([x0, y0]) + rng.normal(0, 2.0, (17, 2))
        color = tuple(int(c) for c in rng.integers(20, 120, 3))
        for a, b in _LIMBS:
            cv2.line(img, tuple(int(v) for v in xy[a]), tuple(int(v) for v in xy[b]), color, 9, cv2.LINE_AA)
        cv2.circle(img, tuple(int(v) for v in xy[0]), int(s * 0.06), color, -1, cv2.LINE_AA)
        kps[k] = np.concatenate([xy, np.full((17, 1), 0.9)], axis=1)
    return img, np.stack([kps[k] for k in range(people)])
