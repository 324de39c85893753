"""2D keypoint sources: keypoint files given by the user (:mod:`.keypoint_files`) and detectors.

Detector back-ends (mmpose) import their heavy dependencies lazily in their own modules.
"""

from __future__ import annotations

from ..keypoint_files import (
    KeypointPerson,
    KeypointSet,
    person_boxes,
    read_keypoints,
    read_openpose_json,
    stack_kp30,
    validate_against_image,
    write_keypoints_json,
)

__all__ = [
    "KeypointPerson",
    "KeypointSet",
    "person_boxes",
    "read_keypoints",
    "read_openpose_json",
    "stack_kp30",
    "validate_against_image",
    "write_keypoints_json",
]
