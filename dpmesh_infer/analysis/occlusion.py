"""Occlusion-sensitivity maps (PARE, Kocabas et al. 2021): where in the crop does hiding pixels change the body?

For one person's 256×256 crop (:class:`~dpmesh_infer.geometry.crops.PersonInput`), a grey square
occluder of side ``patch`` slides over the crop with step ``stride`` (crop pixels). Top-left corners
``y, x ∈ {0, stride, 2·stride, …} ≤ S − patch``, so the grid has ``n = (S − patch) // stride + 1``
positions per axis (256, 40, 10 → 22 × 22 = 484 crops per person). Every occluded crop goes through
the composed network (:class:`~dpmesh_infer.models.dpmesh.DPMesh`) in batches of ``batch_size``
(the crops of a batch are built at once by broadcasting; no Python loop over positions), and for every
position and joint of the 30-joint set the error is

    e[i, k, j] = ‖ (J_j − J_pelvis)(occluded at i, k) − (J_j − J_pelvis)(unoccluded) ‖ · 1000      (mm)

(root-relative, so the camera translation does not enter; the pelvis is 0 by construction). Joint
groups (:data:`JOINT_GROUPS`) average their joints. The keypoint heatmaps stay as the detector gave them
(the occluder hides pixels, not keypoints); with ``drop_occluded_keypoints`` the keypoints whose crop
position lies under the occluder are removed as a detector would lose them (mask off, position where a
missing (0, 0) keypoint lands), the situation DPMesh's noisy-keypoint training targets.

Cost: one network forward per position (plus the unoccluded reference): on a CPU at full size about
14 s per crop, i.e. about 2 h per person at the default grid; ``stride`` 20 gives 11 × 11 = 121 crops.

Maps for pictures (:meth:`OcclusionMap.to_crop`, :meth:`OcclusionMap.to_image`): the value of a grid
position belongs to the occluder's centre (y + (patch − 1)/2, x + (patch − 1)/2); crop pixels between
centres are bilinearly interpolated and those outside the centres' span take the nearest edge value;
the crop map is warped into the photo through the crop's affine (``crop2img``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..config import ConfigBase
from ..errors import ConfigError, InputError
from ..geometry.joints import J30_NAMES

#: Joint groups of the maps (indices into the 30-joint set). The pelvis (the root) is in none: its
#: root-relative error is 0 by construction.
JOINT_GROUPS: dict[str, tuple[int, ...]] = {
    "head": (15, 24, 25, 26, 27, 28, 29),
    "torso": (1, 2, 3, 6, 9, 12, 13, 14),
    "left_arm": (16, 18, 20, 22),
    "right_arm": (17, 19, 21, 23),
    "left_leg": (4, 7, 10),
    "right_leg": (5, 8, 11),
    "all": tuple(range(1, 30)),
}


@dataclass(frozen=True)
class OcclusionConfig(ConfigBase):
    """Settings of an occlusion-sensitivity map (sizes in crop pixels of the 256×256 crop).

    Attributes:
        patch: side of the square occluder.
        stride: step between occluder positions.
        batch_size: occluded crops per network batch.
        fill: grey value of the occluder in [0, 1] (the crop's pixel range).
        drop_occluded_keypoints: also remove the keypoints under the occluder (see the module docstring).
    """

    patch: int = 40
    stride: int = 10
    batch_size: int = 16
    fill: float = 0.5
    drop_occluded_keypoints: bool = False

    def __post_init__(self) -> None:
        if self.patch < 1 or self.stride < 1 or self.batch_size < 1:
            raise ConfigError("occlusion map: patch, stride and batch size must be at least 1")
        if not 0.0 <= self.fill <= 1.0:
            raise ConfigError(f"occlusion map: fill must be in [0, 1], got {self.fill}")


def grid_positions(crop_size: int, patch: int, stride: int) -> np.ndarray:
    """Top-left occluder coordinates along one axis, crop pixels: 0, stride, … ≤ crop_size − patch."""
    if patch > crop_size:
        raise InputError(f"the occluder ({patch} px) is larger than the {crop_size} px crop")
    return np.arange(0, crop_size - patch + 1, stride, dtype=np.int64)


def grid_shape(crop_size: int, patch: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of the occluder grid: ((S − patch) // stride + 1,) * 2."""
    n = len(grid_positions(crop_size, patch, stride))
    return n, n


@dataclass
class OcclusionMap:
    """The occlusion sensitivity of one person.

    Attributes:
        errors_mm: (gh, gw, 30) float32 root-relative 3D error of each joint (30-joint set) in mm with the
            occluder at grid position (row, col), against the unoccluded prediction.
        positions_y, positions_x: (gh,), (gw,) int64 top-left corners of the occluder, crop pixels.
        patch, stride, crop_size: occluder side, step and crop side, crop pixels.
        reference_joints: (30, 3) float32 unoccluded root-relative joints, metres, crop camera.
        dropped_keypoints: (gh, gw) int32 keypoints removed at each position (0 unless dropping).
        box: (3,) (cx, cy, side) of the crop box, image pixels; crop2img: (2, 3) crop → image affine.
        image_size: (W, H) of the photo; person_index: the person's index in the input keypoints.
        seconds: wall time of the network passes.
    """

    errors_mm: np.ndarray
    positions_y: np.ndarray
    positions_x: np.ndarray
    patch: int
    stride: int
    crop_size: int
    reference_joints: np.ndarray
    dropped_keypoints: np.ndarray
    box: np.ndarray
    crop2img: np.ndarray
    image_size: tuple[int, int]
    person_index: int
    seconds: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.errors_mm.shape[0]), int(self.errors_mm.shape[1])

    def group_errors(self) -> dict[str, np.ndarray]:
        """Group name -> (gh, gw) float32 mean error of its joints (mm)."""
        return {g: self.errors_mm[..., list(idx)].mean(-1).astype(np.float32) for g, idx in JOINT_GROUPS.items()}

    def to_crop(self, grid: np.ndarray) -> np.ndarray:
        """(gh, gw) grid values -> (S, S) float32 map over the crop (module docstring)."""
        grid = np.asarray(grid, np.float64)
        centre = (self.patch - 1) / 2.0
        pix = np.arange(self.crop_size, dtype=np.float64)

        def weights(positions):
            f = np.clip((pix - positions[0] - centre) / self.stride, 0.0, len(positions) - 1)
            i0 = np.minimum(np.floor(f).astype(np.int64), len(positions) - 1)
            i1 = np.minimum(i0 + 1, len(positions) - 1)
            return i0, i1, f - i0

        r0, r1, fr = weights(self.positions_y)
        c0, c1, fc = weights(self.positions_x)
        top = grid[r0][:, c0] * (1 - fc) + grid[r0][:, c1] * fc
        bottom = grid[r1][:, c0] * (1 - fc) + grid[r1][:, c1] * fc
        return (top * (1 - fr)[:, None] + bottom * fr[:, None]).astype(np.float32)

    def to_image(self, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gh, gw) grid values -> ((H, W) float32 map over the photo, (H, W) bool where the crop lies)."""
        import cv2

        w, h = self.image_size
        crop = self.to_crop(grid)
        m = np.asarray(self.crop2img, np.float32)
        photo = cv2.warpAffine(crop, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        inside = cv2.warpAffine(np.ones_like(crop), m, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
        return photo, inside

    def arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``.npz`` (no pickle): the grids, the group grids and everything to place them."""
        groups = self.group_errors()
        return {
            "errors_mm": self.errors_mm.astype(np.float32),
            "group_errors_mm": np.stack([groups[g] for g in JOINT_GROUPS], axis=-1),
            "group_names": np.array(list(JOINT_GROUPS)),
            "joint_names": np.array(J30_NAMES),
            "positions_y": self.positions_y, "positions_x": self.positions_x,
            "patch": np.int64(self.patch), "stride": np.int64(self.stride), "crop_size": np.int64(self.crop_size),
            "reference_joints": self.reference_joints.astype(np.float32),
            "dropped_keypoints": self.dropped_keypoints.astype(np.int32),
            "box": np.asarray(self.box, np.float32), "crop2img": np.asarray(self.crop2img, np.float32),
            "image_size": np.asarray(self.image_size, np.int64), "person_index": np.int64(self.person_index),
        }


def occluded_batch(image, ys, xs, patch: int, fill: float):
    """(3, S, S) crop and (n,) top-left corners -> (n, 3, S, S) crops with a ``fill`` square each
    (built by broadcasting, torch)."""
    import torch

    s = image.shape[-1]
    idx = torch.arange(s, device=image.device)
    rows = (idx[None, :] >= ys[:, None]) & (idx[None, :] < ys[:, None] + patch)  # (n, S)
    cols = (idx[None, :] >= xs[:, None]) & (idx[None, :] < xs[:, None] + patch)
    square = rows[:, None, :, None] & cols[:, None, None, :]  # (n, 1, S, S)
    return torch.where(square, torch.as_tensor(fill, dtype=image.dtype, device=image.device), image[None])


def occluded_joints(joints32, mask, origin32, ys, xs, patch: int, grid_scale: float):
    """Drop the keypoints under each occluder: (30, 2) grid joints, (30,) mask, (2,) grid position of a
    missing keypoint, (n,) corners -> joints32 (n, 30, 2), mask (n, 30), dropped count (n,)."""
    import torch

    uv = joints32 * grid_scale  # crop pixels
    under = ((uv[None, :, 0] >= xs[:, None]) & (uv[None, :, 0] < xs[:, None] + patch)
             & (uv[None, :, 1] >= ys[:, None]) & (uv[None, :, 1] < ys[:, None] + patch))  # (n, 30)
    drop = under & mask[None]
    j = torch.where(drop[..., None], origin32.to(joints32.dtype), joints32[None])
    return j, mask[None] & ~drop, drop.sum(-1)


def _autocast(device, dtype):
    import torch

    if device.type == "cuda" and dtype != torch.float32:
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def occlusion_map(model, person, cfg: OcclusionConfig | None = None, *, device=None, dtype=None,
                  progress: Callable[[int, int], None] | None = None,
                  on_reference: Callable[[float, int], None] | None = None) -> OcclusionMap:
    """Occlusion sensitivity of one person (see the module docstring).

    Args:
        model: the composed network (:class:`~dpmesh_infer.models.dpmesh.DPMesh`, e.g. ``pipe.model``) or
            a stand-in with the same ``forward(images, joints32, mask, model_focal)`` returning an object
            with ``joints`` (B, 30, 3), ``preprocess`` and ``model_focal(image_size)``.
        person: :class:`~dpmesh_infer.geometry.crops.PersonInput`.
        cfg: :class:`OcclusionConfig`.
        device: where the model is (default: its parameters' device, else CPU).
        dtype: network autocast dtype on CUDA (float16 / bfloat16); float32 / None = no autocast.
        progress: called with (crops done, crops in total) after each batch.
        on_reference: called once with (seconds of the unoccluded forward, crops to run) before the grid
            starts (time estimates).
    """
    import torch

    from ..geometry.crops import joint_inputs

    cfg = cfg or OcclusionConfig()
    pre = model.preprocess
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu")) if hasattr(
            model, "parameters") else torch.device("cpu")
    device = torch.device(device)
    dtype = dtype or torch.float32
    crop_size = int(pre.input_size)
    ys_1d = grid_positions(crop_size, cfg.patch, cfg.stride)
    gy, gx = np.meshgrid(ys_1d, ys_1d, indexing="ij")
    ys_all = torch.from_numpy(gy.reshape(-1)).to(device)
    xs_all = torch.from_numpy(gx.reshape(-1)).to(device)
    n = int(ys_all.numel())

    image = torch.from_numpy(np.asarray(person.image, np.float32)).to(device)
    joints32 = torch.from_numpy(np.asarray(person.joints32, np.float32)).to(device)
    mask = torch.from_numpy(np.asarray(person.mask, bool)).to(device)
    missing32, _ = joint_inputs(np.zeros((1, 30, 3)), np.asarray(person.img2crop)[None], pre)
    origin32 = torch.from_numpy(missing32[0, 0])  # where a missing (0, 0) keypoint lands on the grid
    size = torch.tensor([list(person.image_size)], dtype=torch.int64)
    focal1 = model.model_focal(size).to(device)

    def run(images, j32, m):
        with torch.inference_mode(), _autocast(device, dtype):
            out = model(images, j32, m, focal1.expand(images.shape[0]))
        joints = out.joints.float()
        return joints - joints[:, :1]

    t0 = time.perf_counter()
    ref = run(image[None], joints32[None], mask[None])[0]
    if on_reference is not None:
        on_reference(time.perf_counter() - t0, n)
    errors = np.zeros((n, 30), np.float32)
    dropped = np.zeros(n, np.int32)
    t1 = time.perf_counter()
    for start in range(0, n, cfg.batch_size):
        ys, xs = ys_all[start:start + cfg.batch_size], xs_all[start:start + cfg.batch_size]
        images = occluded_batch(image, ys, xs, cfg.patch, cfg.fill)
        if cfg.drop_occluded_keypoints:
            j32, m, d = occluded_joints(joints32, mask, origin32.to(device), ys, xs, cfg.patch,
                                        crop_size / pre.heatmap_size)
            dropped[start:start + len(ys)] = d.cpu().numpy()
        else:
            j32, m = joints32[None].expand(len(ys), -1, -1), mask[None].expand(len(ys), -1)
        rel = run(images, j32, m)
        errors[start:start + len(ys)] = ((rel - ref[None]).norm(dim=-1) * 1000.0).cpu().numpy()
        if progress is not None:
            progress(min(start + cfg.batch_size, n), n)
    g = len(ys_1d)
    return OcclusionMap(
        errors_mm=errors.reshape(g, g, 30), positions_y=ys_1d, positions_x=ys_1d.copy(), patch=cfg.patch,
        stride=cfg.stride, crop_size=crop_size, reference_joints=ref.cpu().numpy().astype(np.float32),
        dropped_keypoints=dropped.reshape(g, g), box=np.asarray(person.box, np.float64),
        crop2img=np.asarray(person.crop2img, np.float32), image_size=tuple(person.image_size),
        person_index=int(person.person_index), seconds=time.perf_counter() - t1,
    )
