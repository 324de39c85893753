"""Tracking: the persons of consecutive frames associated into tracks with stable ids.

Per frame, every live track's keypoints and box are predicted forward with the track's (smoothed)
image velocity; the similarity of a prediction and a detection is
``w * OKS + (1 - w) * IoU`` (COCO object keypoint similarity on the 17 COCO joints, with the
predicted box area as the scale, widened for tracks unseen for a while; box IoU of the keypoints'
tight boxes). The optimal one-to-one assignment is scipy's Hungarian solver
(:func:`scipy.optimize.linear_sum_assignment`); pairs below ``min_similarity`` stay unmatched.
Confirmed tracks are matched first, those seen in the previous frame before those unseen for longer (a
matching cascade, as DeepSORT's), then tentative ones with the remaining detections.

Lifecycle: an unmatched detection starts a *tentative* track; it is *born* (gets an id, retroactively
for its first frames) after ``min_hits`` consecutive matched frames, and dropped if it misses a frame
before that. A confirmed track that is not matched keeps its id for up to ``max_gap`` frames
(re-identification: a person hidden behind another for a moment comes back under the same id) and
*dies* after that. Ids are 0, 1, 2, ... in order of birth.

Limits (documented in README): no appearance model, so two people who cross while both hidden, or
who change direction while hidden, may swap ids; a person hidden for longer than ``max_gap`` comes back
with a new id; motion is predicted in the image (constant velocity), not in 3D; people detected in
fewer than ``min_hits`` consecutive frames get no track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import ConfigBase
from ..geometry.joints import COCO17_NAMES, J30_NAMES

#: J30 indices of the 17 COCO joints, in COCO order.
COCO_IN_J30 = np.array([J30_NAMES.index(n) for n in COCO17_NAMES])
#: COCO keypoint sigmas (cocoapi) for the OKS, COCO order.
COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87,
                        0.89, 0.89]) / 10.0


@dataclass(frozen=True)
class TrackerConfig(ConfigBase):
    """Tracker parameters (``--track-*`` options).

    Attributes:
        min_hits: consecutive frames a new person must be seen before it becomes a track (birth).
        max_gap: frames a track may go unseen and still be re-identified; it dies after that.
        min_similarity: smallest ``w*OKS + (1-w)*IoU`` accepted as the same person.
        oks_weight: ``w``, the weight of the keypoint similarity against the box IoU.
        kpt_thr: keypoint confidence above which a joint counts for the OKS and the tight box.
    """

    min_hits: int = 3
    max_gap: int = 30
    min_similarity: float = 0.3
    oks_weight: float = 0.5
    kpt_thr: float = 0.1

    def validate(self) -> None:
        from ..errors import InputError

        if self.min_hits < 1 or self.max_gap < 0:
            raise InputError("--track-min-frames must be >= 1 and --track-max-gap >= 0")
        if not 0.0 <= self.min_similarity <= 1.0 or not 0.0 <= self.oks_weight <= 1.0:
            raise InputError("--track-min-similarity and the OKS weight must lie in [0, 1]")


@dataclass
class Detection:
    """One person in one frame: ``keypoints`` (30, 3) [x, y, confidence] px (30-joint set) and a
    fallback ``box`` (4,) [x, y, w, h] px used when fewer than two joints are confident."""

    keypoints: np.ndarray
    box: np.ndarray


def tight_box(keypoints: np.ndarray, fallback: np.ndarray, thr: float) -> np.ndarray:
    """(4,) [x, y, w, h] of the confident joints of ``keypoints`` (30, 3), else ``fallback``."""
    ok = keypoints[:, 2] > thr
    if ok.sum() < 2:
        return np.asarray(fallback, np.float64)
    xy = keypoints[ok, :2]
    lo, hi = xy.min(0), xy.max(0)
    return np.array([lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (N, 4) and b (M, 4), [x, y, w, h] -> (N, M)."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    x1 = np.maximum(a[..., 0], b[..., 0])
    y1 = np.maximum(a[..., 1], b[..., 1])
    x2 = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
    y2 = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def oks(pred: np.ndarray, det: np.ndarray, area: np.ndarray, thr: float) -> np.ndarray:
    """COCO OKS between predictions (N, 17, 3) with scale areas (N,) px^2 and detections (M, 17, 3)
    -> (N, M); joints count when confident in both; no common joint gives 0."""
    d2 = ((pred[:, None, :, :2] - det[None, :, :, :2]) ** 2).sum(-1)  # (N, M, 17)
    k2 = (2.0 * COCO_SIGMAS) ** 2
    e = d2 / (2.0 * np.maximum(area, 1.0)[:, None, None] * k2)
    vis = (pred[:, None, :, 2] > thr) & (det[None, :, :, 2] > thr)
    n = vis.sum(-1)
    return np.where(n > 0, (np.exp(-e) * vis).sum(-1) / np.maximum(n, 1), 0.0)


@dataclass
class _Track:
    keypoints: np.ndarray  # (17, 3) last seen, COCO order
    box: np.ndarray  # (4,) last seen
    last: int  # sample position last seen
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # px per frame (box centre)
    hits: int = 1
    track_id: int = -1  # -1 while tentative
    members: list[tuple[int, int]] = field(default_factory=list)  # (frame position, detection index)

    def predict(self, t: int, max_gap: int) -> tuple[np.ndarray, np.ndarray, float]:
        dt = min(t - self.last, max(max_gap, 1))
        shift = self.velocity * dt
        kp = self.keypoints.copy()
        kp[:, :2] += shift
        box = self.box.copy()
        box[:2] += shift
        widen = 1.0 + 0.25 * (t - self.last - 1)  # less certain after a gap
        return kp, box, float(box[2] * box[3]) * widen ** 2

    def update(self, t: int, kp: np.ndarray, box: np.ndarray, det_index: int) -> None:
        c_old = self.box[:2] + self.box[2:] / 2
        c_new = box[:2] + box[2:] / 2
        v = (c_new - c_old) / max(t - self.last, 1)
        self.velocity = v if self.hits == 1 else 0.5 * self.velocity + 0.5 * v
        self.keypoints, self.box, self.last = kp, box, t
        self.hits += 1
        self.members.append((t, det_index))


def track_detections(frames: list[list[Detection]], config: TrackerConfig | None = None) -> list[list[int]]:
    """Associate per-frame detections into tracks.

    Args:
        frames: for each processed frame in order, its detections (possibly none; a frame that failed
            to decode is an empty list, and counts as a frame in which nobody was seen).
        config: :class:`TrackerConfig`.

    Returns:
        The track id of every detection, nested like ``frames``; -1 for detections that never became
        part of a confirmed track.
    """
    from scipy.optimize import linear_sum_assignment

    cfg = config or TrackerConfig()
    cfg.validate()
    out = [[-1] * len(dets) for dets in frames]
    alive: list[_Track] = []
    next_id = 0
    for t, dets in enumerate(frames):
        kps = [np.asarray(d.keypoints, np.float64)[COCO_IN_J30] for d in dets]
        boxes = [tight_box(np.asarray(d.keypoints, np.float64), d.box, cfg.kpt_thr) for d in dets]
        free = list(range(len(dets)))
        matched: set[int] = set()
        # matching cascade: confirmed tracks by time since last seen (seen in the previous frame first,
        # so a hidden person predicted onto a visible one cannot take its detection), then tentative ones
        confirmed = sorted({t - tr.last for tr in alive if tr.track_id >= 0})
        stages = [[tr for tr in alive if tr.track_id >= 0 and t - tr.last == age] for age in confirmed]
        stages.append([tr for tr in alive if tr.track_id < 0])
        for cands in stages:
            if not cands or not free:
                continue
            preds = [tr.predict(t, cfg.max_gap) for tr in cands]
            p_kp = np.stack([p[0] for p in preds])
            p_box = np.stack([p[1] for p in preds])
            p_area = np.array([p[2] for p in preds])
            d_kp = np.stack([kps[j] for j in free])
            d_box = np.stack([boxes[j] for j in free])
            sim = cfg.oks_weight * oks(p_kp, d_kp, p_area, cfg.kpt_thr) + \
                (1.0 - cfg.oks_weight) * box_iou(p_box, d_box)
            rows, cols = linear_sum_assignment(-sim)
            used = set()
            for r, c in zip(rows, cols):
                if sim[r, c] < cfg.min_similarity:
                    continue
                j = free[c]
                cands[r].update(t, kps[j], boxes[j], j)
                matched.add(id(cands[r]))
                used.add(j)
            free = [j for j in free if j not in used]
        survivors = []
        for tr in alive:
            if id(tr) in matched:
                if tr.track_id < 0 and tr.hits >= cfg.min_hits:
                    tr.track_id = next_id  # born: its earlier frames get the id too
                    next_id += 1
                    for ft, fj in tr.members:
                        out[ft][fj] = tr.track_id
                elif tr.track_id >= 0:
                    out[t][tr.members[-1][1]] = tr.track_id
                survivors.append(tr)
            elif tr.track_id >= 0 and t - tr.last <= cfg.max_gap:
                survivors.append(tr)  # unseen for a while: may be re-identified
            # tentative tracks that miss a frame, and tracks past max_gap, die here
        for j in free:
            tr = _Track(keypoints=kps[j], box=boxes[j], last=t, members=[(t, j)])
            if cfg.min_hits <= 1:
                tr.track_id = next_id
                next_id += 1
                out[t][j] = tr.track_id
            survivors.append(tr)
        alive = survivors
    return out
