"""``overlay.mp4`` and ``side.mp4``: the tracked, smoothed people rendered over every sample, encoded
with PyAV (H.264 ``libx264`` when FFmpeg has it, else MPEG-4 part 2), at the samples' frame rate.

Each person keeps its track's colour in every frame. The overlay is one scene per frame with the video's
``K`` and one depth buffer (nearer people hide farther ones). The side view turns all people 90 degrees
about the vertical axis through the centroid of every track's root over the whole video, with one camera
distance for the whole video (so the side view does not jump from frame to frame). Frames are rendered
and encoded one at a time; vertices are computed for windows of samples, never for the whole video.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..atomic import AtomicFile

logger = logging.getLogger(__name__)


class Mp4Writer:
    """Write RGB frames to an .mp4 atomically (the file appears complete on :meth:`close`).

    Args:
        path: the output file.
        fps: frame rate.
        size: (width, height); odd sizes are padded by one black pixel (yuv420p needs even sizes).
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        import av

        self.path = Path(path)
        self._file = AtomicFile(self.path, "wb")
        self.w, self.h = int(size[0]), int(size[1])
        self.ew, self.eh = self.w + self.w % 2, self.h + self.h % 2
        try:
            self.container = av.open(self._file.file, mode="w", format="mp4")
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
            self.stream.width, self.stream.height, self.stream.pix_fmt = self.ew, self.eh, "yuv420p"
            if codec == "libx264":
                self.stream.options = {"crf": "20", "preset": "veryfast"}
        except BaseException:
            self._file.discard()
            raise
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        img = np.asarray(rgb, np.uint8)
        if img.shape[:2] != (self.eh, self.ew):
            pad = np.zeros((self.eh, self.ew, 3), np.uint8)
            pad[: img.shape[0], : img.shape[1]] = img[: self.eh, : self.ew]
            img = pad
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> Path:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        return self._file.commit()

    def discard(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 -- best effort before removing the temporary file
            pass
        self._file.discard()


def _window_vertices(ts, body, lo: int, hi: int) -> dict[int, list[tuple[int, np.ndarray]]]:
    """Per sample in [lo, hi): [(track id, vertices (6890, 3) of the smoothed body)]."""
    import torch

    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    for t in ts.tracks:
        m = (t.samples >= lo) & (t.samples < hi)
        if not m.any():
            continue
        f32 = dict(dtype=torch.float32, device=body.device)
        with torch.no_grad():
            verts = body(torch.as_tensor(t.smoothed["global_orient"][m], **f32),
                         torch.as_tensor(t.smoothed["body_pose"][m], **f32),
                         torch.as_tensor(t.smoothed["betas"][m], **f32),
                         torch.as_tensor(t.smoothed["transl"][m], **f32)).vertices.cpu().numpy()
        for s, v in zip(t.samples[m], verts):
            out.setdefault(int(s), []).append((t.track_id, v.astype(np.float64)))
    return out


def _side_setup(ts, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre (3,), rotation (3, 3), z shift) of the side view, fixed for the whole video."""
    from ..render import _fit_shift

    joints = [t.smoothed["joints"].reshape(-1, 3) for t in ts.tracks if len(t.samples)]
    pts = np.concatenate(joints) if joints else np.zeros((1, 3))
    centre = np.array([pts[:, 0].mean(), pts[:, 1].mean(), pts[:, 2].mean()])
    a = np.radians(90.0)
    rot = np.array([[np.cos(a), 0.0, np.sin(a)], [0.0, 1.0, 0.0], [-np.sin(a), 0.0, np.cos(a)]])
    turned = (pts - centre) @ rot.T + centre
    return centre, rot, _fit_shift(turned, K, size, margin=0.75)


def render_videos(info, plan, ts, body, faces: np.ndarray, renderer, out_dir: Path, window: int = 32) -> list[Path]:
    """Write ``overlay.mp4`` and ``side.mp4`` into ``out_dir`` (returns their paths)."""
    from ..render import person_colors
    from .decode import iter_frames

    w, h = ts.image_size
    K = ts.K
    n_colors = max((t.track_id for t in ts.tracks), default=-1) + 1
    colors = person_colors(n_colors)
    centre, rot, shift = _side_setup(ts, K, (w, h))
    overlay = Mp4Writer(out_dir / "overlay.mp4", plan.fps, (w, h))
    side = Mp4Writer(out_dir / "side.mp4", plan.fps, (w, h))
    try:
        cache: dict[int, list] = {}
        cache_hi = 0
        for sample, img in iter_frames(info, plan.samples):
            if sample.index >= cache_hi:
                cache_hi = sample.index + window
                cache = _window_vertices(ts, body, sample.index, cache_hi)
            people = cache.get(sample.index, [])
            photo = img if img is not None else np.zeros((h, w, 3), np.uint8)
            meshes = [(v, faces, colors[tid]) for tid, v in people]
            if meshes:
                color, depth = renderer.render(meshes, K, (w, h))
                a = (depth > 0)[..., None]
                frame = np.where(a, color, photo[..., :3])
                turned = [((v - centre) @ rot.T + centre + np.array([0.0, 0.0, shift]), f, c) for v, f, c in meshes]
                side_img, _ = renderer.render(turned, K, (w, h), bg_color=(1.0, 1.0, 1.0))
            else:
                frame = photo
                side_img = np.full((h, w, 3), 255, np.uint8)
            overlay.write(frame)
            side.write(side_img)
        return [overlay.close(), side.close()]
    except BaseException:
        overlay.discard()
        side.discard()
        raise
