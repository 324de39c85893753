"""``dpmesh detect``: run only the keypoint detector over images and write a keypoint JSON.

The JSON is the ``dpmesh-keypoints`` format of :func:`~dpmesh_infer.keypoint_files.
write_keypoints_json` with a ``file_name`` per person (and every image listed, people or not), so
``dpmesh predict --keypoints kp.json`` reuses it: inputs given as a folder are named relative to the
folder, single files as given on the command line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import DpmeshError
from ..inputs import IMAGE_EXTENSIONS, expand_inputs  # noqa: F401  (re-exported: shared with predict)
from .detectors import DEFAULT_DETECTOR
from .mmpose_detector import DroppedPerson, KeypointDetector, Thresholds

logger = logging.getLogger(__name__)


@dataclass
class DetectSummary:
    """What a detect run did. failed: (file name, error message) for images that could not be read;
    dropped: (file name, reason) for people removed by the thresholds."""

    out: Path
    detector: str
    images: int = 0
    people: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)


def run_detect(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    detector: str | KeypointDetector = DEFAULT_DETECTOR,
    weights_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    det_thr: float = 0.3,
    kpt_thr: float = 0.3,
    max_people: int | None = None,
    *,
    min_keypoints: int = 4,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> DetectSummary:
    """Detect keypoints in every input image and write them to ``out`` (dpmesh-keypoints JSON).

    ``detector`` is a name of :data:`~dpmesh_infer.detect.detectors.DETECTORS` (weights from
    ``weights_dir``) or a ready :class:`KeypointDetector` (its thresholds are replaced by the ones
    given here). An unreadable image is recorded in ``summary.failed`` and the run goes on; it is not
    listed in the JSON. ``progress(done, total)`` is called after each batch.
    """
    from ..images import load_image
    from ..keypoint_files import write_keypoints_json

    files = expand_inputs(inputs)
    th = Thresholds(det_thr=det_thr, kpt_thr=kpt_thr, min_keypoints=min_keypoints, max_people=max_people)
    if isinstance(detector, KeypointDetector):
        det = detector
        det.thresholds = th
    else:
        det = KeypointDetector.from_name(detector, weights_dir, device, thresholds=th, batch_size=batch_size)
    out = Path(out)
    summary = DetectSummary(out=out, detector=det.name)
    per_image: dict[str, list] = {}
    step = det.batch_size
    for start in range(0, len(files), step):
        names, images = [], []
        for path, name in files[start:start + step]:
            try:
                images.append(load_image(path))
                names.append(name)
            except DpmeshError as e:
                summary.failed.append((name, str(e)))
                logger.warning("%s", e)
        if images:
            result = det.detect(images)
            for name, people in zip(names, result.people):
                per_image[name] = [p.to_keypoint_person() for p in people]
            summary.dropped.extend(_named(result.dropped, names))
        if progress is not None:
            progress(min(start + step, len(files)), len(files))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_keypoints_json(out, per_image)
    summary.images = len(per_image)
    summary.people = sum(len(v) for v in per_image.values())
    return summary


def _named(dropped: list[DroppedPerson], names: list[str]) -> list[tuple[str, str]]:
    return [(names[d.image_index], d.reason) for d in dropped]
