"""The photo with the 2D keypoints and boxes each person was reconstructed from (OpenCV drawing).

Reconstructed persons are drawn in the colour their mesh has in the overlay
(:func:`~dpmesh_infer.render.person_colors`), with their square crop box and ``#index score``; persons
that were skipped are drawn in grey with ``#index skipped``. Keypoints are mapped to the 30-joint set
first, so COCO-17 and OpenPose inputs look alike; joints at or below the pipeline's confidence
threshold are not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.joints import J30_NAMES

#: Limbs of the 30-joint set drawn between keypoints (by name).
LIMBS = (
    ("L_Hip", "L_Knee"), ("L_Knee", "L_Ankle"), ("R_Hip", "R_Knee"), ("R_Knee", "R_Ankle"),
    ("L_Hip", "R_Hip"), ("L_Shoulder", "L_Hip"), ("R_Shoulder", "R_Hip"), ("L_Shoulder", "R_Shoulder"),
    ("L_Shoulder", "L_Elbow"), ("L_Elbow", "L_Wrist"), ("R_Shoulder", "R_Elbow"), ("R_Elbow", "R_Wrist"),
    ("Neck", "Nose"), ("Nose", "L_Eye"), ("Nose", "R_Eye"), ("L_Eye", "L_Ear"), ("R_Eye", "R_Ear"),
)  # fmt: skip
_LIMB_IDX = tuple((J30_NAMES.index(a), J30_NAMES.index(b)) for a, b in LIMBS)
SKIPPED_RGB = (150, 150, 150)


@dataclass
class DrawnPerson:
    """One person to draw. kp30 (30, 3) [x, y, confidence] image px; box (4,) [x, y, w, h] px or None;
    rgb: colour (0-255); label: text near the box (or the top keypoint)."""

    kp30: np.ndarray
    box: np.ndarray | None
    rgb: tuple[int, int, int]
    label: str


def draw_people(image_rgb: np.ndarray, people: list[DrawnPerson], conf_thr: float = 0.05) -> np.ndarray:
    """A copy of ``image_rgb`` (H, W, 3) uint8 with every person's skeleton, keypoints, box and label."""
    import cv2

    out = np.ascontiguousarray(image_rgb[..., :3], dtype=np.uint8).copy()
    h, w = out.shape[:2]
    unit = max(1, int(round(max(w, h) / 320)))
    for p in people:
        kp = np.asarray(p.kp30, np.float64)
        ok = kp[:, 2] > conf_thr
        color = tuple(int(c) for c in p.rgb)
        for a, b in _LIMB_IDX:
            if ok[a] and ok[b]:
                cv2.line(out, _pt(kp[a]), _pt(kp[b]), color, 2 * unit, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(out, _pt(kp[j]), 2 * unit + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, _pt(kp[j]), 2 * unit, color, -1, cv2.LINE_AA)
        if p.box is not None:
            x, y, bw, bh = (float(v) for v in p.box)
            cv2.rectangle(out, _pt((x, y)), _pt((x + bw, y + bh)), color, unit, cv2.LINE_AA)
            anchor = (x, y)
        elif ok.any():
            anchor = (kp[ok, 0].min(), kp[ok, 1].min())
        else:
            continue
        _label(out, p.label, anchor, color, unit)
    return out


def _pt(xy) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def _label(img: np.ndarray, text: str, anchor, color, unit: int) -> None:
    """``text`` on a filled box of ``color`` just above ``anchor`` (kept inside the image)."""
    import cv2

    scale = 0.4 * unit
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, unit)
    h, w = img.shape[:2]
    x = int(min(max(0, anchor[0]), max(0, w - tw - 4)))
    y = int(min(max(th + base + 4, anchor[1]), h))
    cv2.rectangle(img, (x, y - th - base - 4), (x + tw + 4, y), color, -1)
    dark = sum(color) < 3 * 110
    cv2.putText(img, text, (x + 2, y - base - 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255) if dark else (0, 0, 0), unit, cv2.LINE_AA)
