"""Per-person visibility: the share of confident keypoints, and the occlusion ratio from rendered depth.

- ``confident_keypoints`` (always known): the fraction of the 17 body keypoints with confidence >= 0.3
  (:class:`~dpmesh_infer.outputs.Visibility`, computed for every :class:`~dpmesh_infer.outputs.Person`).
- ``occlusion_ratio`` (when a renderer is available, e.g. ``dpmesh predict --render``): every person of
  the image is rendered in one scene with the photo's K and one depth buffer, and each person alone
  (:meth:`~dpmesh_infer.render.Renderer.person_depths`). A pixel of person p's own silhouette is hidden
  when the scene's nearest surface there is more than ``tolerance_m`` in front of p's own surface:

      occlusion_ratio(p) = |{x in S_p : D_scene(x) < D_p(x) − tolerance_m}| / |S_p|

  so 0 for a person nobody covers and 1 for a person entirely behind others. Self-occlusion does not
  count (it is the same in both renders), nor does the photo's border (pixels outside the image are not
  in S_p). Rendered at most ``max_side`` pixels on the long side (the ratio is a share; scaling the
  camera keeps it up to the pixel rounding at silhouette edges). Cost: P + 1 depth-only renders.
"""

from __future__ import annotations

import numpy as np

from ..outputs import CONFIDENT_KEYPOINT, VISIBILITY_JOINTS, ImageResult, Visibility

__all__ = ["CONFIDENT_KEYPOINT", "VISIBILITY_JOINTS", "Visibility", "add_occlusion_ratios", "occlusion_ratios",
           "scaled_camera"]

#: Long side (pixels) of the depth renders.
DEFAULT_MAX_SIDE = 800
#: A nearer surface must be this much (metres) in front of the person's own surface to hide it.
DEPTH_TOLERANCE_M = 0.01


def scaled_camera(K: np.ndarray, size: tuple[int, int], max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(K, (W, H)) of the same camera at most ``max_side`` pixels on the long side (pixel centres at
    integer coordinates: u' = (u + 0.5)·s − 0.5)."""
    w, h = int(size[0]), int(size[1])
    s = min(1.0, float(max_side) / max(w, h))
    if s >= 1.0:
        return np.asarray(K, np.float64), (w, h)
    k = np.asarray(K, np.float64).copy()
    k[0, 0] *= s
    k[1, 1] *= s
    k[0, 2] = (k[0, 2] + 0.5) * s - 0.5
    k[1, 2] = (k[1, 2] + 0.5) * s - 0.5
    return k, (max(1, int(round(w * s))), max(1, int(round(h * s))))


def occlusion_ratios(renderer, vertices: list[np.ndarray], faces: np.ndarray, K: np.ndarray, size: tuple[int, int],
                     *, max_side: int = DEFAULT_MAX_SIDE,
                     tolerance_m: float = DEPTH_TOLERANCE_M) -> tuple[np.ndarray, np.ndarray]:
    """Occlusion ratio of each person (see the module docstring).

    Args:
        renderer: a :class:`~dpmesh_infer.render.Renderer`.
        vertices: P arrays (V, 3), OpenCV camera frame of the photo, metres.
        faces: (F, 3) triangles shared by all people.
        K: (3, 3) photo intrinsics; size: (W, H) photo size in pixels.

    Returns:
        ratios (P,) float64 in [0, 1] (NaN where a silhouette is empty: the person is outside the image)
        and silhouette sizes (P,) int64 in pixels of the render resolution.
    """
    if not vertices:
        return np.zeros(0), np.zeros(0, np.int64)
    k, render_size = scaled_camera(K, size, max_side)
    faces = np.asarray(faces)
    together, alone = renderer.person_depths([(np.asarray(v, np.float64), faces) for v in vertices], k, render_size)
    own = alone > 0
    hidden = own & (together > 0) & (together < alone - tolerance_m)
    area = own.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(area > 0, hidden.sum(axis=(1, 2)) / np.maximum(area, 1), np.nan)
    return ratios.astype(np.float64), area.astype(np.int64)


def add_occlusion_ratios(result: ImageResult, renderer, faces: np.ndarray, **kwargs) -> ImageResult:
    """Fill ``occlusion_ratio`` and ``silhouette_px`` of every person's visibility (in place; returns
    ``result``). Keyword arguments go to :func:`occlusion_ratios`."""
    ratios, area = occlusion_ratios(renderer, [p.vertices for p in result.persons], faces, result.K,
                                    result.image_size, **kwargs)
    for p, r, a in zip(result.persons, ratios, area):
        if p.visibility is None:
            p.visibility = Visibility.from_keypoints(p.keypoints_2d)
        p.visibility.occlusion_ratio = None if np.isnan(r) else float(r)
        p.visibility.silhouette_px = int(a)
    return result
