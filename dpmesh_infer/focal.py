"""Focal length of the output camera, per image, from the CLI options.

``--focal PIXELS``, ``--focal exif`` or ``--fov DEGREES`` (mutually exclusive); none of them keeps the
default ``f = sqrt(W² + H²)`` that DPMesh was trained with. Sizes are those of the image as loaded,
i.e. after the EXIF orientation is applied.

EXIF convention: ``FocalLengthIn35mmFilm`` (tag 0xA405) is the focal length a 35 mm full-frame
camera (36 × 24 mm) would need for the same angle of view, matched on the **diagonal** (CIPA DC-008),
so ``f_px = f35 / 43.27 mm · sqrt(W² + H²)``. The diagonal form does not depend on the aspect ratio or
on the orientation. A photo without the tag (or with 0, "unknown") keeps the default focal, and the
result's ``focal_source`` says so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

from .errors import ImageError, InputError
from .geometry.camera import default_focal

#: Diagonal of the 36 x 24 mm full frame, millimetres.
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
_EXIF_IFD = 0x8769
_TAG_FOCAL_35MM = 0xA405
_TAG_ORIENTATION = 0x0112
DEFAULT_SOURCE = "default sqrt(W^2+H^2)"


def exif_focal_35mm(path: str | os.PathLike) -> float | None:
    """``FocalLengthIn35mmFilm`` of an image file in millimetres, or None (absent, 0, unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            exif = img.getexif()
            value = exif.get_ifd(_EXIF_IFD).get(_TAG_FOCAL_35MM, exif.get(_TAG_FOCAL_35MM))
    except (OSError, ValueError, SyntaxError):
        return None
    try:
        value = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value and value > 0 else None


def oriented_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file after its EXIF orientation (header only, no decoding)."""
    from PIL import Image

    with Image.open(path) as img:
        w, h = img.size
        if img.getexif().get(_TAG_ORIENTATION) in (5, 6, 7, 8):  # rotated by 90 degrees
            w, h = h, w
    return w, h


@dataclass(frozen=True)
class FocalChoice:
    """How to pick each image's focal. ``mode``: default | pixels | fov | exif; ``value``: pixels or degrees."""

    mode: str = "default"
    value: float | None = None

    def for_image(self, path: str | os.PathLike | None, width: int, height: int) -> tuple[float | None, str]:
        """(focal in pixels or None for the pipeline's default, description for the outputs)."""
        if self.mode == "pixels":
            return float(self.value), f"--focal {self.value:g} px"
        if self.mode == "fov":
            f = width / 2.0 / math.tan(math.radians(self.value) / 2.0)
            return f, f"--fov {self.value:g} deg (horizontal, W={width})"
        if self.mode == "exif":
            f35 = exif_focal_35mm(path) if path is not None else None
            if f35 is None:
                return None, f"EXIF FocalLengthIn35mmFilm absent: {DEFAULT_SOURCE}"
            f = f35 / FULL_FRAME_DIAGONAL_MM * default_focal(width, height)
            return f, f"EXIF FocalLengthIn35mmFilm {f35:g} mm (full-frame diagonal convention)"
        return None, DEFAULT_SOURCE

    def for_path(self, path: str | os.PathLike) -> tuple[float | None, str]:
        if self.mode in ("default", "pixels"):
            return self.for_image(path, 0, 0)
        try:
            w, h = oriented_size(path)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageError(f"{path}: cannot read image ({e})") from e
        return self.for_image(path, w, h)


def parse_focal_options(focal: str | None, fov: float | None) -> FocalChoice:
    """``--focal`` (pixels or ``exif``) and ``--fov`` (degrees) -> a :class:`FocalChoice`.

    Raises:
        InputError: both given, or a value that is not a positive number / ``exif`` / an angle in (0, 180).
    """
    if focal is not None and fov is not None:
        raise InputError("--focal and --fov are mutually exclusive: give one of them")
    if fov is not None:
        if not 0.0 < fov < 180.0:
            raise InputError(f"--fov must be a horizontal field of view in degrees, 0 < fov < 180; got {fov:g}")
        return FocalChoice("fov", float(fov))
    if focal is None:
        return FocalChoice()
    if focal.strip().lower() == "exif":
        return FocalChoice("exif")
    try:
        value = float(focal)
    except ValueError:
        raise InputError(f"--focal must be a number of pixels or 'exif'; got {focal!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"--focal must be a positive number of pixels; got {focal}")
    return FocalChoice("pixels", value)


def resolve_focals(focal: "float | Sequence[float | None] | FocalChoice | None", paths: Sequence[str | None],
                   sizes: Sequence[tuple[int, int]]) -> list[tuple[float, str]]:
    """The focal in pixels of each image's K and where it came from (the result's ``focal_source``).

    Args:
        focal: None (the default sqrt(W² + H²) for every image), a number of pixels, one value per image
            (None = default), or a :class:`FocalChoice` (EXIF is read from ``paths``).
        paths: per image its file, or None for in-memory images.
        sizes: per image (width, height) in pixels, as loaded (EXIF orientation applied).

    Raises:
        InputError: a focal that is not a positive finite number, or a list of the wrong length.
    """
    n = len(sizes)
    if isinstance(focal, FocalChoice):
        picked = [focal.for_image(p, w, h) for p, (w, h) in zip(paths, sizes)]
    elif focal is None:
        picked = [(None, DEFAULT_SOURCE)] * n
    elif isinstance(focal, (int, float)) or getattr(focal, "ndim", None) == 0:
        picked = [(_positive(focal), f"focal={float(focal):g} px (given)")] * n
    else:
        values = list(focal)
        if len(values) != n:
            raise InputError(f"focal: got {len(values)} values for {n} images")
        picked = [(None, DEFAULT_SOURCE) if v is None else (_positive(v), f"focal={float(v):g} px (given)")
                  for v in values]
    return [(default_focal(w, h) if f is None else f, src) for (f, src), (w, h) in zip(picked, sizes)]


def _positive(value) -> float:
    f = float(value)
    if not (f > 0 and math.isfinite(f)):
        raise InputError(f"focal must be a positive number of pixels, got {value}")
    return f
