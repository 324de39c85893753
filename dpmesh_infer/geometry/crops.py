"""Per-person network inputs: boxes, crops, joint grids and heatmaps (joint sets: :mod:`.joints`).

Pure functions that reproduce the upstream DPMesh / 3DCrowdNet test-time preprocessing exactly
(design notes: ARCHITECTURE §2-§3, upstream-dpmesh §1 and §9.10). Checkpoint parity depends on every detail here,
including the float32 roundings upstream applies to boxes and affine matrices, so do not "simplify".

Coordinates: image pixels (x right, y down, pixel centres at integer coordinates, OpenCV convention);
crop pixels in the ``input_size`` (256) crop; grid units in the ``heatmap_size`` (32) grid = crop px / 8.

Only numpy is imported at module level; OpenCV and torch are imported by the functions that need them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..config import ConfigBase
from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Boxes whose longer side after sanitizing is below this (pixels) are degenerate (see box_from_keypoints).
MIN_BOX_SIDE_PX = 1.0


@dataclass(frozen=True)
class PreprocessConfig(ConfigBase):
    """Test-time preprocessing numbers (stored in pipeline.json). Defaults are the upstream values."""

    input_size: int = 256  # crop side in pixels
    heatmap_size: int = 32  # joint grid / heatmap side; input_size must be a multiple of it
    conf_thr: float = 0.05  # a joint is valid iff confidence > conf_thr
    heatmap_sigma: float = 2.5  # Gaussian sigma in grid cells
    bbox_expand: float = 1.2  # tight keypoint box is scaled by this about its centre
    bbox_square_scale: float = 1.1  # square box is scaled by this about its centre

    def __post_init__(self) -> None:
        if self.input_size <= 0 or self.heatmap_size <= 0 or self.input_size % self.heatmap_size:
            raise ConfigError(
                f"PreprocessConfig: input_size ({self.input_size}) must be a positive multiple of "
                f"heatmap_size ({self.heatmap_size})"
            )
        if self.heatmap_sigma <= 0 or self.bbox_expand <= 0 or self.bbox_square_scale <= 0:
            raise ConfigError("PreprocessConfig: heatmap_sigma, bbox_expand, bbox_square_scale must be > 0")


# --------------------------------------------------------------------------- boxes


@dataclass(frozen=True)
class SquareBox:
    """Square crop box in image pixels: top-left ``(x, y)``, side ``size`` (float32 values, as upstream).

    ``source`` says whether it came from the keypoints or from the fallback person box.
    """

    x: float
    y: float
    size: float
    source: Literal["keypoints", "fallback"]

    @property
    def center(self) -> tuple[float, float]:
        """(cx, cy) in image px, computed in float64 from the float32 box as upstream does."""
        return self.x + 0.5 * self.size, self.y + 0.5 * self.size

    def xywh(self) -> np.ndarray:
        """(4,) float64 [x, y, w, h] with w == h."""
        return np.array([self.x, self.y, self.size, self.size], dtype=np.float64)


@dataclass(frozen=True)
class Skip:
    """A person that gets no crop, with a human-readable reason."""

    reason: str


def _tight_box(xy: np.ndarray, expand: float) -> np.ndarray:
    """Upstream ``get_bbox`` on float32 points (K,2): box scaled by ``expand``; float32 (4,) xywh.

    Sums and differences of the float32 extremes stay float32, the rest is float64 (numpy 1.x rules).
    """
    xy = np.asarray(xy, dtype=np.float32)
    (xmin, ymin), (xmax, ymax) = xy.min(axis=0), xy.max(axis=0)
    xc, w = float(np.float32(xmin + xmax)) / 2.0, float(np.float32(xmax - xmin))
    yc, h = float(np.float32(ymin + ymax)) / 2.0, float(np.float32(ymax - ymin))
    x0, x1 = xc - 0.5 * w * expand, xc + 0.5 * w * expand
    y0, y1 = yc - 0.5 * h * expand, yc + 0.5 * h * expand
    return np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.float32)


def _process_bbox(box_xywh, image_w: int, image_h: int, scale: float) -> SquareBox | str:
    """Upstream ``process_bbox(is_3dpw_test=True)``: sanitize ("-1 px" rule), square, x ``scale``.

    Intermediates are float64 and the box is stored as float32 at the points upstream stores it.
    Returns the reason string for a degenerate box (upstream would crash or crop garbage there).
    """
    x, y, w, h = (float(v) for v in np.asarray(box_xywh, dtype=np.float32))
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(image_w - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(image_h - 1.0, y1 + max(0.0, h - 1.0))
    bx, by, bw, bh = (float(v) for v in np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32))
    if bw < 0 or bh < 0:
        return f"box lies outside the {image_w}x{image_h} image"
    if max(bw, bh) < MIN_BOX_SIDE_PX:
        return f"box is degenerate ({bw:.3g}x{bh:.3g} px after clipping to the image)"
    cx, cy = bx + bw / 2.0, by + bh / 2.0
    side = max(bw, bh)  # aspect ratio 1: enlarge the shorter side
    s = float(np.float32(side * scale))
    return SquareBox(x=float(np.float32(cx - s / 2)), y=float(np.float32(cy - s / 2)), size=s, source="keypoints")


def box_from_keypoints(
    kp30: np.ndarray,
    image_w: int,
    image_h: int,
    cfg: PreprocessConfig,
    fallback_box_xywh: np.ndarray | None = None,
) -> SquareBox | Skip:
    """Square crop box for one person, exactly as upstream at test time.

    kp30 (30,3) [x, y, conf] image px. Valid joints: conf > cfg.conf_thr. Tight box of the valid joints,
    w,h x bbox_expand about the centre, then clip with x1=max(0,x), x2=min(W-1, x1+max(0,w-1)) (same in
    y), square by enlarging the shorter side about the centre, x bbox_square_scale.
    Without a valid joint, or if the keypoint box is degenerate (outside the image, or its longer side
    < MIN_BOX_SIDE_PX after clipping), ``fallback_box_xywh`` (4,) [x, y, w, h] px goes through the same
    clip/square/scale path (without bbox_expand). Returns :class:`Skip` with the reason otherwise.
    """
    kp30 = np.asarray(kp30).astype(np.float32)  # upstream holds the 30-joint array in float32
    if kp30.shape != (30, 3):
        raise ValueError(f"expected kp30 of shape (30, 3), got {kp30.shape}")
    valid = kp30[:, 2] > np.float32(cfg.conf_thr)
    if valid.any():
        tight = _tight_box(kp30[valid, :2], cfg.bbox_expand)
        result = _process_bbox(tight, image_w, image_h, cfg.bbox_square_scale)
        problem = None if isinstance(result, SquareBox) else f"keypoint {result}"
    else:
        result, problem = None, f"no keypoint above confidence threshold {cfg.conf_thr}"
    if isinstance(result, SquareBox):
        return result
    if fallback_box_xywh is None:
        return Skip(f"{problem} and no person box was given")
    fb = _process_bbox(np.asarray(fallback_box_xywh, dtype=np.float64).reshape(4), image_w, image_h,
                       cfg.bbox_square_scale)
    if isinstance(fb, SquareBox):
        return dataclasses.replace(fb, source="fallback")
    return Skip(f"{problem} and the person box is unusable: {fb}")


# --------------------------------------------------------------------------- crop


def crop_affines(box: SquareBox, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Upstream ``gen_trans_from_patch_cv`` (scale 1, rot 0) for a square box.

    Maps the box centre to (input_size/2, input_size/2) with scale input_size/size.
    Returns (img2crop, crop2img), each (2,3) float32 (the float32 rounding is upstream's).
    """
    import cv2

    cx, cy = box.center
    d = float(cfg.input_size)
    center = np.array([cx, cy], dtype=np.float32)
    src = np.stack([center, center + np.array([0, box.size * 0.5], dtype=np.float32),
                    center + np.array([box.size * 0.5, 0], dtype=np.float32)]).astype(np.float32)
    dst = np.array([[d * 0.5, d * 0.5], [d * 0.5, d], [d, d * 0.5]], dtype=np.float32)
    img2crop = cv2.getAffineTransform(src, dst).astype(np.float32)
    crop2img = cv2.getAffineTransform(dst, src).astype(np.float32)
    return img2crop, crop2img


def crop_image(image: np.ndarray, img2crop: np.ndarray, cfg: PreprocessConfig, dtype=np.float32) -> np.ndarray:
    """Warp (H,W,3) RGB (uint8, or float32 in 0..255) to a (3, S, S) crop in [0, 1].

    Upstream: float32 image, cv2.warpAffine INTER_LINEAR, constant border 0, then / 255 in float32 (one
    pass: the division writes the channel-first array). ``dtype`` float16 rounds that float32 result (what
    the fp16 network does with it on the device; half the bytes to copy).
    """
    import cv2

    img = image if image.dtype == np.float32 else image.astype(np.float32)
    size = int(cfg.input_size)
    patch = cv2.warpAffine(img, np.asarray(img2crop, dtype=np.float32), (size, size),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = np.empty((3, size, size), np.float32)
    np.divide(patch.transpose(2, 0, 1), np.float32(255.0), out=out)
    return out if dtype == np.float32 else out.astype(dtype)


def joint_inputs(kp30: np.ndarray, img2crop: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """All 30 joints in grid units and their mask.

    kp30 (B,30,3) image px, img2crop (B,2,3). Every joint goes through the affine, so missing (zero)
    joints land where the image origin lands (upstream behaviour). Returns joints32 (B,30,2) float32
    (crop px / (input_size/heatmap_size)) and mask (B,30) bool = conf > conf_thr & 0 <= u,v < heatmap_size.
    """
    kp30 = np.asarray(kp30).astype(np.float32)  # float32 as upstream; products summed in float64
    trans = np.asarray(img2crop, dtype=np.float32).astype(np.float64)
    crop = np.einsum("bij,bkj->bki", trans[:, :, :2], kp30[..., :2].astype(np.float64)) + trans[:, None, :, 2]
    grid = (crop.astype(np.float32) / np.float32(cfg.input_size)) * np.float32(cfg.heatmap_size)
    inside = (grid >= 0).all(-1) & (grid < cfg.heatmap_size).all(-1)
    mask = (kp30[..., 2] > np.float32(cfg.conf_thr)) & inside
    return grid, mask


def make_heatmaps(joints32: torch.Tensor, mask: torch.Tensor, size: int = 32, sigma: float = 2.5) -> torch.Tensor:
    """(B,J,2) grid coords + (B,J) mask -> (B,J,size,size) Gaussians, peak 1, zero where masked out.

    H[b,j,r,c] = exp(-((c-u)/sigma)^2/2 - ((r-v)/sigma)^2/2) on integer indices (upstream's form).
    Device and floating dtype follow ``joints32``.
    """
    import torch

    idx = torch.arange(size, device=joints32.device, dtype=joints32.dtype)
    u = joints32[..., 0, None, None]
    v = joints32[..., 1, None, None]
    heat = torch.exp(-(((idx[None, :] - u) / sigma) ** 2) / 2 - (((idx[:, None] - v) / sigma) ** 2) / 2)
    return heat * mask.to(heat.dtype)[..., None, None]


def crop_to_image_points(points_crop, crop2img):
    """(B,N,2) crop px -> (B,N,2) image px with crop2img (B,2,3); numpy arrays or torch tensors."""
    m = crop2img[:, None]  # (B,1,2,3)
    return points_crop[..., 0:1] * m[..., 0] + points_crop[..., 1:2] * m[..., 1] + m[..., 2]


# --------------------------------------------------------------------------- per person / batch


@dataclass
class PersonInput:
    """Network input of one person (numpy).

    image (3,S,S) float32 RGB in [0,1]; joints32 (30,2) float32 grid units; mask (30,) bool;
    keypoints_2d (30,3) float64 [x, y, conf] image px; box (3,) float64 (cx, cy, side) image px of the
    square crop box; img2crop, crop2img (2,3) float32; image_size (W, H) px; image_index and
    person_index locate the person in the caller's inputs; box_source "keypoints" | "fallback".
    """

    image: np.ndarray
    joints32: np.ndarray
    mask: np.ndarray
    keypoints_2d: np.ndarray
    box: np.ndarray
    img2crop: np.ndarray
    crop2img: np.ndarray
    image_size: tuple[int, int]
    image_index: int
    person_index: int
    box_source: str


def prepare_persons(
    image_rgb: np.ndarray,
    kp30: np.ndarray,
    cfg: PreprocessConfig,
    fallback_boxes: list[np.ndarray | None] | None = None,
    image_index: int = 0,
    crop_dtype=np.float32,
) -> tuple[list[PersonInput], list[tuple[int, str]]]:
    """Crops and joint inputs for the N people of one image.

    image_rgb (H,W,3) uint8 RGB; kp30 (N,30,3) image px; fallback_boxes: N optional (4,) xywh person
    boxes; crop_dtype: float32 (CPU) or float16 (the fp16 CUDA path). Returns (persons, skipped) where
    skipped holds (person_index, reason) for people without a usable box; the order of ``persons``
    follows the input order.
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image_rgb.shape} {image_rgb.dtype}")
    kp30 = np.asarray(kp30, dtype=np.float64).reshape(-1, 30, 3)
    if fallback_boxes is not None and len(fallback_boxes) != len(kp30):
        raise ValueError(f"got {len(fallback_boxes)} fallback boxes for {len(kp30)} people")
    h, w = image_rgb.shape[:2]
    image_f = None
    persons, skipped = [], []
    for i, kp in enumerate(kp30):
        box = box_from_keypoints(kp, w, h, cfg, None if fallback_boxes is None else fallback_boxes[i])
        if isinstance(box, Skip):
            skipped.append((i, box.reason))
            continue
        if image_f is None:
            image_f = image_rgb.astype(np.float32)  # once per image, as upstream warps float32
        img2crop, crop2img = crop_affines(box, cfg)
        joints32, mask = joint_inputs(kp[None], img2crop[None], cfg)
        persons.append(PersonInput(
            image=crop_image(image_f, img2crop, cfg, crop_dtype), joints32=joints32[0], mask=mask[0],
            keypoints_2d=kp.copy(), box=np.array([*box.center, box.size], dtype=np.float64),
            img2crop=img2crop, crop2img=crop2img, image_size=(w, h), image_index=image_index,
            person_index=i, box_source=box.source,
        ))  # fmt: skip
    return persons, skipped


@dataclass
class PersonBatch:
    """Collated persons (torch, CPU until ``to``). B = number of persons.

    images (B,3,S,S) float32 [0,1]; joints32 (B,30,2) float32; mask (B,30) bool; keypoints_2d (B,30,3)
    float32 image px; box (B,3) float32 (cx, cy, side) px; img2crop, crop2img (B,2,3) float32;
    image_size (B,2) int64 (W, H); image_index, person_index (B,) int64.
    """

    images: torch.Tensor
    joints32: torch.Tensor
    mask: torch.Tensor
    keypoints_2d: torch.Tensor
    box: torch.Tensor
    img2crop: torch.Tensor
    crop2img: torch.Tensor
    image_size: torch.Tensor
    image_index: torch.Tensor
    person_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device, non_blocking: bool = False) -> PersonBatch:
        """A copy with every tensor on ``device`` (dtypes unchanged)."""
        return PersonBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                              for f in dataclasses.fields(self)})


def collate(persons: list[PersonInput], *, pin_memory: bool = False) -> PersonBatch:
    """Stack PersonInput items (from any number of images) into a PersonBatch (crops keep their dtype;
    with ``pin_memory`` the tensors are page-locked, for non-blocking copies to a GPU)."""
    import torch

    if not persons:
        raise ValueError("collate needs at least one person")

    def stack(name: str, dtype) -> torch.Tensor:
        items = [np.asarray(getattr(p, name)) for p in persons]
        if not pin_memory:
            return torch.from_numpy(np.stack(items, dtype=dtype))
        # stacked straight into page-locked memory (one copy instead of stack + pin)
        out = torch.empty((len(items), *items[0].shape), dtype=torch.from_numpy(np.empty(0, dtype)).dtype,
                          pin_memory=True)
        np.stack(items, out=out.numpy())
        return out

    return PersonBatch(
        images=stack("image", persons[0].image.dtype), joints32=stack("joints32", np.float32),
        mask=stack("mask", np.bool_), keypoints_2d=stack("keypoints_2d", np.float32),
        box=stack("box", np.float32), img2crop=stack("img2crop", np.float32),
        crop2img=stack("crop2img", np.float32), image_size=stack("image_size", np.int64),
        image_index=stack("image_index", np.int64), person_index=stack("person_index", np.int64),
    )  # fmt: skip
