"""Where a folder run's keypoints come from: a parsed keypoint file (:class:`FileKeypoints`) or a
detector (:class:`DetectorKeypoints`), both answering one call per chunk with an :class:`ImageKeypoints`
per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from ..errors import DpmeshError
from ..inputs import InputImage


@dataclass
class ImageKeypoints:
    """Keypoints of one image: ``persons`` (KeypointPerson list) or ``error``; ``dropped`` detections."""

    persons: list | None
    error: str | None = None
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class KeypointSource(Protocol):
    def __call__(self, images: Sequence[InputImage], arrays: Sequence[np.ndarray]) -> list[ImageKeypoints]: ...


class FileKeypoints:
    """Keypoints from a parsed keypoint file, looked up by the image's name (relative to its folder)."""

    def __init__(self, kpset) -> None:
        self.kpset = kpset

    def __call__(self, images, arrays):
        out = []
        for im in images:
            try:
                persons = self.kpset.lookup(im.name)
            except DpmeshError as e:
                out.append(ImageKeypoints(None, str(e)))
                continue
            if persons is None:
                out.append(ImageKeypoints(None, self.kpset.missing_message(im.name)))
            else:
                out.append(ImageKeypoints(list(persons), warnings=self.kpset.warnings_for(im.name)))
        return out


class DetectorKeypoints:
    """Keypoints from a :class:`~dpmesh_infer.detect.mmpose_detector.KeypointDetector` (batched per chunk)."""

    def __init__(self, detector) -> None:
        self.detector = detector

    def __call__(self, images, arrays):
        found = self.detector.detect(list(arrays))
        out = [ImageKeypoints([p.to_keypoint_person() for p in people]) for people in found.people]
        for d in found.dropped:
            out[d.image_index].dropped.append(f"detection (score {d.score:.2f}) dropped: {d.reason}")
        return out

