"""A synthetic crowd video: stick figures that walk across each other, written with PyAV, and their
exact per-frame COCO-17 keypoint tracks (tests, examples).

People walk on straight lines at constant speed; figures 0 and 1 cross in the middle of the clip (the
nearer one, drawn last, hides the other). Keypoints are exact (the drawing's joints); a keypoint file
with jitter and short dropouts is written by :func:`write_frame_keypoints`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .scene import _COCO_T_POSE, _LIMBS


@dataclass
class SyntheticVideo:
    """path: the video; keypoints (F, P, 17, 3) [x, y, 1] px per frame and person (ground truth);
    fps; size (width, height)."""

    path: Path
    keypoints: np.ndarray
    fps: float
    size: tuple[int, int]


def figure_tracks(frames: int = 30, size: tuple[int, int] = (320, 240), people: int = 3) -> np.ndarray:
    """(F, P, 17, 3) keypoints of ``people`` walking figures (a little arm swing) over ``frames``."""
    w, h = size
    paths = [  # (x start, x end, top y, height) in units of the frame size
        (0.10, 0.62, 0.16, 0.72),
        (0.62, 0.10, 0.20, 0.66),
        (0.80, 0.86, 0.12, 0.60),
    ][:people]
    out = np.zeros((frames, len(paths), 17, 3))
    for f in range(frames):
        u = f / max(frames - 1, 1)
        for p, (x0, x1, y0, s) in enumerate(paths):
            side = s * h
            pose = _COCO_T_POSE.copy()
            swing = 0.05 * np.sin(2 * np.pi * (u * 2 + p / 3))
            pose[[9, 10], 1] += [swing, -swing]
            pose[[15, 16], 0] += [swing, -swing]
            xy = pose * side + np.array([(x0 + (x1 - x0) * u) * w - side / 2, y0 * h])
            out[f, p, :, :2] = xy
            out[f, p, :, 2] = 1.0
    return out


def draw_frame(keypoints: np.ndarray, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 frame with the figures of ``keypoints`` (P, 17, 3); later persons are nearer."""
    import cv2

    w, h = size
    img = np.full((h, w, 3), 200, np.uint8)
    img[: h // 2] = (150, 180, 220)
    rng = np.random.default_rng(seed)
    colors = [tuple(int(c) for c in rng.integers(20, 120, 3)) for _ in range(len(keypoints))]
    for p in range(len(keypoints)):
        xy = keypoints[p, :, :2]
        th = max(2, int(h / 60))
        for a, b in _LIMBS:
            cv2.line(img, tuple(int(v) for v in xy[a]), tuple(int(v) for v in xy[b]), colors[p], th, cv2.LINE_AA)
        cv2.circle(img, tuple(int(v) for v in xy[0]), max(4, int(h / 25)), colors[p], -1, cv2.LINE_AA)
    return img


def write_synthetic_video(path: str | Path, frames: int = 30, size: tuple[int, int] = (320, 240), fps: float = 30.0,
                          people: int = 3, codec: str | None = None) -> SyntheticVideo:
    """Write the clip with PyAV (codec by suffix: H.264 for .mp4/.mov/.mkv, VP9 for .webm, MPEG-4 for .avi)."""
    import av

    from ..atomic import AtomicFile

    path = Path(path)
    kp = figure_tracks(frames, size, people)
    codec = codec or {".webm": "libvpx-vp9", ".avi": "mpeg4"}.get(path.suffix.lower(), "libx264")
    fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}.get(path.suffix.lower())
    with AtomicFile(path, "wb") as f:
        with av.open(f.file, mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=int(round(fps)))
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            for i in range(frames):
                frame = av.VideoFrame.from_ndarray(draw_frame(kp[i], size), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return SyntheticVideo(path=path, keypoints=kp, fps=float(fps), size=size)


def jittered(keypoints: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Keypoints with Gaussian noise of ``sigma`` px added to x and y (confidences kept)."""
    rng = np.random.default_rng(seed)
    out = np.array(keypoints, np.float64)
    out[..., :2] += rng.normal(0.0, sigma, out[..., :2].shape)
    return out


def write_frame_keypoints(path: str | Path, keypoints: np.ndarray, video_name: str,
                          drop: dict[int, list[int]] | None = None, shuffle_seed: int | None = 0) -> Path:
    """A COCO-style per-frame keypoint list (``frame``, ``file_name``, ``keypoints``, ``score``) for
    ``keypoints`` (F, P, 17, 3); ``drop`` = {frame: [persons left out]} simulates missed detections.
    Persons are listed in a shuffled order per frame (a detector has no identities)."""
    rng = np.random.default_rng(shuffle_seed)
    entries = []
    for f in range(len(keypoints)):
        order = list(range(keypoints.shape[1]))
        if shuffle_seed is not None:
            rng.shuffle(order)
        for p in order:
            if drop and p in drop.get(f, []):
                continue
            entries.append({"file_name": video_name, "frame": f, "category_id": 1, "score": 0.95,
                            "keypoints": [round(float(v), 3) for v in keypoints[f, p].reshape(-1)]})
    Path(path).write_text(json.dumps(entries))
    return Path(path)
