"""AlphaPose's ``--format open`` and ``--format cmu`` files (``alphapose/utils/pPose_nms.py::write_json``):
one JSON object keyed by image file name, each value an OpenPose-style document
``{"version": "AlphaPose v0.3", "people": [{"pose_keypoints_2d": [54 numbers]}]}`` (``cmu``:
``"bodies": [{"joints": [54 numbers]}]``), the OpenPose-18 joint order (neck = shoulder mean).
AlphaPose's default output (a COCO-style result list with file names as ``image_id``) is read by the COCO
results parser of the package.
"""

from __future__ import annotations

import json

from .parse import _openpose_people
from .people import KeypointSet

__all__ = ["is_alphapose_openpose", "read_alphapose_openpose"]


def is_alphapose_openpose(data: dict) -> bool:
    """AlphaPose ``--format open`` / ``cmu``: {image name: {"version", "people" | "bodies": [...]}}."""
    return bool(data) and all(isinstance(k, str) and isinstance(v, dict) and ("people" in v or "bodies" in v)
                              for k, v in data.items())


def read_alphapose_openpose(data: dict, src: str) -> KeypointSet:
    per_image = {name: _openpose_people(doc, f"{src}: [{json.dumps(name)}]") for name, doc in data.items()}
    form = "alphapose-cmu" if any("bodies" in doc for doc in data.values()) else "alphapose-openpose"
    return KeypointSet(per_image, src, form)
