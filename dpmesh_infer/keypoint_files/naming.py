"""How image files are named by number: COCO image ids and video frame numbers (pure functions)."""

from __future__ import annotations

import re

__all__ = ["image_id_of", "frame_number_of"]

#: Standard COCO image names: ``COCO_<split><year>_<12 digits>`` (2014) -> the image id.
_COCO_NAME = re.compile(r"^COCO_[A-Za-z]+\d{4}_(\d+)$")
_TRAILING_NUMBER = re.compile(r"(\d+)$")


def image_id_of(stem: str) -> int | None:
    """The COCO image id an image file stem stands for: an all-digit stem (``000000000136``, COCO 2017)
    or a standard COCO 2014 name (``COCO_val2014_000000000136``); None otherwise."""
    if stem.isdigit():
        return int(stem)
    m = _COCO_NAME.match(stem)
    return int(m.group(1)) if m else None


def frame_number_of(stem: str) -> int | None:
    """The frame number an image stem ends with (``frame_000012`` -> 12, ``000012`` -> 12), or None."""
    m = _TRAILING_NUMBER.search(stem)
    return int(m.group(1)) if m else None
