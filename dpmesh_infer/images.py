"""Image loading: paths, PIL images or arrays -> RGB uint8 (H, W, 3) numpy arrays."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Union

import numpy as np

from .errors import ImageError
from .inputs import path_problem

#: Serialises the brief change of PIL's global bomb limit while a file's header is opened.
_PIL_LIMIT = threading.Lock()

ImageLike = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray]  # noqa: F821

#: Largest accepted image, in pixels (width * height). Larger files are refused as possible
#: decompression bombs. Override per call or with the environment variable DPMESH_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 100_000_000


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get("DPMESH_MAX_PIXELS")
    return int(env) if env else DEFAULT_MAX_PIXELS


def _pil_to_rgb(img, *, own: bool = False) -> np.ndarray:
    """``img`` as (H, W, 3) uint8 RGB, EXIF orientation applied. ``own``: ``img`` is ours to change (a
    file we opened): the orientation is applied in place and an RGB image is not copied (two copies of
    the decoded photo fewer)."""
    from PIL import Image, ImageOps

    if own:
        ImageOps.exif_transpose(img, in_place=True)
    else:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def load_image(image: ImageLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Return ``image`` as an RGB uint8 array of shape (H, W, 3).

    Accepts a file path (JPEG, PNG, WebP, BMP, TIFF, ...; EXIF orientation applied; grayscale, RGBA
    (composited on black), palette, 16-bit and CMYK converted to RGB), a PIL image, or a numpy array
    (H, W) grayscale / (H, W, 3) RGB / (H, W, 4) RGBA, uint8 or float in [0, 1].

    Raises:
        ImageError: unreadable, undecodable, empty or over ``max_pixels`` pixels.
    """
    limit = _max_pixels(max_pixels)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ImageError(f"image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {image.shape}")
        arr = arr[..., :3]
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating):
                arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
            else:
                arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.shape[0] * arr.shape[1] > limit:
            raise ImageError(f"image of {arr.shape[1]}x{arr.shape[0]} pixels exceeds the limit of {limit} pixels")
        return np.ascontiguousarray(arr)

    from PIL import Image

    if isinstance(image, Image.Image):
        if image.width * image.height > limit:
            raise ImageError(f"image of {image.width}x{image.height} pixels exceeds the limit of {limit} pixels")
        return _pil_to_rgb(image)

    path = Path(image)
    problem = path_problem(path)  # never open a FIFO or a directory
    if problem is not None:
        raise ImageError(f"image {path} {problem}")
    with _PIL_LIMIT:  # PIL's own bomb check (at 2x its global) is replaced by ours, at exactly ``limit``
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(path)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"{path}: cannot read image ({e})") from e
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    with img:
        if img.width * img.height > limit:
            raise ImageError(
                f"{path}: {img.width}x{img.height} = {img.width * img.height} pixels exceeds the limit of "
                f"{limit} pixels (possible decompression bomb; raise it with --max-pixels or DPMESH_MAX_PIXELS)"
            )
        try:
            img.load()
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"{path}: cannot read image ({e})") from e
        if img.width == 0 or img.height == 0:
            raise ImageError(f"{path}: empty image")
        return _pil_to_rgb(img, own=True)
