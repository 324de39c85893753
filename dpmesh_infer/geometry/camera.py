"""Cameras: the model's crop camera, projection, and placing each person in ONE camera per photo.

Frame and units: OpenCV camera (x right, y down, z forward), metres in 3D, pixels in 2D. Pure torch,
batched over persons (B); no state.

The crop camera (what the network predicts, upstream ``get_camera_trans``)
-------------------------------------------------------------------------
Each person is seen through a 256×256 crop of a square box (centre (cx_box, cy_box), side S pixels)
of the photo. The regressor outputs ``cam = (t_x, t_y, c)`` and the body is ``LBS(θ, β) + T`` with

    T = (t_x, t_y, t_z),   t_z = (2.5 · f / 256) · sigmoid(c)          (:func:`camera_translation`)

(upstream: k = sqrt(f² · 2.5² / (256 · 256))), where f = sqrt(W² + H²) of the full photo
(:func:`default_focal`). The crop camera has focal f and principal point (128, 128) in crop pixels:
``u_crop = X / (Z + 1e-4) · f + 128`` (:func:`project`; upstream's +1e-4 kept for parity).

The full-image camera (what users get)
--------------------------------------
Every person of a photo is placed in the same pinhole camera

    K = [[f, 0, px], [0, f, py], [0, 0, 1]]                              (:func:`intrinsics`)

with (px, py) = (W/2, H/2) by default (:func:`default_principal`; configurable), and f the model's
focal unless the user overrides it. :func:`place_in_image` moves the root joint (pelvis) from the crop
camera to this camera so that:

1. depth:  Z' = Z · (256 / S) · (f_K / f_model)  (the crop shows S pixels at 256/S zoom; the ratio of
   focals is 1 without an override);
2. the root's projection through K equals its crop projection mapped back to the image through the
   crop affine: u_img = (u_crop − 128) · S / 256 + cx_box (same for v), i.e.
   X' = (u_img − px) · Z' / f_K and Y' = (v_img − py) · Z' / f_K.

The whole body is then moved rigidly: ``mesh_full = mesh − root + root_full`` (root-relative mesh plus
the placed root). :func:`full_translation` gives the SMPL ``transl`` that produces it directly:
``smpl(θ, β, transl) = mesh_full`` with ``transl = root_full − root_offset``, where root_offset is the
root joint of the untranslated posed body.

Approximation (the same as upstream's render recipe): the depth offsets of non-root points are not
rescaled by 256/S, and the body keeps the orientation it has in the crop camera even when the box is
off the optical axis. Non-root points therefore reproject close to, not exactly onto, their crop
positions mapped to the image. For a point with depth offset dz from the root the difference is exactly
(with eps = 0)

    uv_full − uv_mapped = f · dz / (Z' + dz) · ( s_crop · (1 − S/256) − m )      (pixels, 2-vectors)

where s_crop = (uv_crop − 128) / f is the point's ray slope in the crop camera and
m = ((cx_box, cy_box) − (px, py)) / f the box centre's slope in K (``tests/test_camera.py`` checks this
identity; it holds without a focal override). Example: f = 2000 px, Z' = 5 m (box S ≈ 750 px), a hand
0.3 m in front of the pelvis near the crop centre, box centre at m = 0.3: about 34 px, 4.5 % of the
box (with the box at the image centre, only the smaller s_crop term remains). Rotating the body
towards the box's ray (CLIFF-style) would remove the m term; it is not done, to keep the network's
pose untouched.
Upstream differs in a detail: it scales only t_z (not the root's full depth Z) and puts the principal
point at each box centre (one camera per person); here each photo has one K and the root is exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: upstream ``camera_3d_size``: the crop camera's depth range is 2.5 m · f / 256 (ARCHITECTURE §5).
CAMERA_3D_SIZE = 2.5
PROJECTION_EPS = 1e-4
#: OpenCV camera frame (x right, y down, z forward) -> glTF/OpenGL camera frame (x right, y up, z toward
#: the viewer): 180 degrees about x (a rotation, det +1). scene.glb, the video glTF and the renderer use it.
OPENCV_TO_GL = np.diag([1.0, -1.0, -1.0])


def _batch(x: torch.Tensor | float, ref: torch.Tensor) -> torch.Tensor:
    """(B,) float tensor on ``ref``'s device/dtype from a scalar or a (B,) tensor."""
    t = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
    return t.expand(ref.shape[0]) if t.ndim == 0 else t


def default_focal(width: float | torch.Tensor, height: float | torch.Tensor) -> float | torch.Tensor:
    """Focal length in pixels used by DPMesh: the image diagonal sqrt(W² + H²) (CLIFF convention)."""
    if isinstance(width, torch.Tensor) or isinstance(height, torch.Tensor):
        w, h = torch.as_tensor(width, dtype=torch.float32), torch.as_tensor(height, dtype=torch.float32)
        return torch.sqrt(w * w + h * h)
    w, h = float(width), float(height)
    return math.sqrt(w * w + h * h)


def default_principal(width: float, height: float) -> tuple[float, float]:
    """Default principal point (px, py) = (W/2, H/2) in pixels (keypoint pixel coordinates)."""
    return float(width) / 2.0, float(height) / 2.0


def camera_translation(
    cam: torch.Tensor,
    focal: torch.Tensor | float,
    *,
    input_size: int,
    camera_3d_size: float = CAMERA_3D_SIZE,
) -> torch.Tensor:
    """Crop-camera translation T (B, 3) in metres from the regressor's camera output.

    Args:
        cam: (B, 3) raw camera head output (t_x, t_y, c).
        focal: (B,) or scalar focal length f in pixels (f = sqrt(W² + H²) of the photo).
        input_size: crop side in pixels (256).
        camera_3d_size: upstream ``camera_3d_size`` (2.5 m).

    Returns:
        (B, 3): (t_x, t_y, k · sigmoid(c)) with k = sqrt(f² · camera_3d_size² / input_size²).
    """
    f = _batch(focal, cam)
    k = torch.sqrt(f * f * camera_3d_size * camera_3d_size / (input_size * input_size))
    return torch.cat([cam[:, 0:2], (k * torch.sigmoid(cam[:, 2]))[:, None]], dim=1)


def project(
    points: torch.Tensor, focal: torch.Tensor | float, principal: torch.Tensor, eps: float = PROJECTION_EPS
) -> torch.Tensor:
    """Pinhole projection: (B, N, 3) metres → (B, N, 2) pixels.

    ``u = X / (Z + eps) · f + px``, ``v = Y / (Z + eps) · f + py``. ``eps`` = 1e-4 reproduces upstream;
    pass ``eps=0`` for the exact pinhole of :func:`intrinsics`.

    Args:
        points: (B, N, 3) camera-frame points.
        focal: (B,) or scalar focal length in pixels.
        principal: (B, 2) or (2,) principal point (px, py) in pixels.
    """
    f = _batch(focal, points)[:, None, None]
    pp = torch.as_tensor(principal, dtype=points.dtype, device=points.device)
    pp = pp.expand(points.shape[0], 2) if pp.ndim == 1 else pp
    return points[..., :2] / (points[..., 2:3] + eps) * f + pp[:, None, :]


def intrinsics(focal: torch.Tensor | float, principal: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) intrinsics K = [[f, 0, px], [0, f, py], [0, 0, 1]] from (B,) focal and (B, 2) principal."""
    ref = focal if isinstance(focal, torch.Tensor) and focal.is_floating_point() else None
    pp = torch.as_tensor(
        principal,
        dtype=ref.dtype if ref is not None else torch.get_default_dtype(),
        device=ref.device if ref is not None else None,
    )
    pp = pp[None] if pp.ndim == 1 else pp
    if ref is not None and ref.ndim == 1 and pp.shape[0] == 1:
        pp = pp.expand(ref.shape[0], 2)
    f = _batch(focal, pp)
    k = torch.zeros(pp.shape[0], 3, 3, dtype=pp.dtype, device=pp.device)
    k[:, 0, 0] = f
    k[:, 1, 1] = f
    k[:, 0, 2] = pp[:, 0]
    k[:, 1, 2] = pp[:, 1]
    k[:, 2, 2] = 1.0
    return k


def crop_to_image(points_crop: torch.Tensor, box: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Map crop pixels (B, N, 2) to image pixels through the (rotation-free) crop affine.

    ``u_img = (u_crop − crop_size/2) · S / crop_size + cx_box`` (same for v), with box (B, 3) =
    (cx_box, cy_box, S) in image pixels.
    """
    half = crop_size / 2.0
    scale = (box[:, 2] / crop_size)[:, None, None]
    return (points_crop - half) * scale + box[:, None, 0:2]


def place_in_image(
    root_cam_crop: torch.Tensor,
    box: torch.Tensor,
    focal: torch.Tensor | float,
    principal: torch.Tensor,
    *,
    model_focal: torch.Tensor | float | None = None,
    crop_size: int,
    eps: float = PROJECTION_EPS,
) -> torch.Tensor:
    """Root joint position in the photo's camera K (see the module docstring).

    Args:
        root_cam_crop: (B, 3) root joint in the crop camera, metres, translation T included.
        box: (B, 3) square crop box (cx_box, cy_box, S) in image pixels.
        focal: (B,) or scalar focal length of K in pixels.
        principal: (B, 2) or (2,) principal point of K in pixels.
        model_focal: focal the network's camera was computed with (defaults to ``focal``); differs
            only when the user overrides the photo's focal length.
        crop_size: crop side in pixels (256).
        eps: the crop projection's depth epsilon (upstream 1e-4).

    Returns:
        (B, 3) root in the full-image camera, metres. Its exact pinhole projection through K
        (``project(..., eps=0)``) equals ``crop_to_image(project(root_cam_crop, model_focal, 128))``.
    """
    f = _batch(focal, root_cam_crop)
    f_model = f if model_focal is None else _batch(model_focal, root_cam_crop)
    pp = torch.as_tensor(principal, dtype=root_cam_crop.dtype, device=root_cam_crop.device)
    pp = pp.expand(root_cam_crop.shape[0], 2) if pp.ndim == 1 else pp
    half = crop_size / 2.0
    uv_crop = root_cam_crop[:, :2] / (root_cam_crop[:, 2:3] + eps) * f_model[:, None] + half
    uv_img = crop_to_image(uv_crop[:, None, :], box, crop_size)[:, 0]
    z_full = root_cam_crop[:, 2] * (crop_size / box[:, 2]) * (f / f_model)
    xy_full = (uv_img - pp) * (z_full / f)[:, None]
    return torch.cat([xy_full, z_full[:, None]], dim=1)


def full_translation(root_cam_full: torch.Tensor, root_offset: torch.Tensor) -> torch.Tensor:
    """SMPL ``transl`` (B, 3) to write out: ``smpl(θ, β, transl)`` then has its root at ``root_cam_full``.

    Args:
        root_cam_full: (B, 3) placed root (:func:`place_in_image`), metres.
        root_offset: (B, 3) root joint of the untranslated posed body (``SMPLBody(θ, β).root``), metres.
    """
    return root_cam_full - root_offset
