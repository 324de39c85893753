"""Example inputs of the demo page, generated (no downloaded photos, CC0): synthetic crowd photos with
overlapping stick figures (:func:`~dpmesh_infer.stand_ins.scene.synthetic_scene`) and their exact
COCO-17 keypoints in one COCO keypoint-results file (``file_name`` per entry), as ``dpmesh predict
--keypoints`` reads it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: file name -> (width, height, seed)
EXAMPLE_PHOTOS = {"street.jpg": (640, 480, 0), "plaza.png": (800, 600, 1)}
KEYPOINTS_NAME = "keypoints.json"


@dataclass(frozen=True)
class Examples:
    """The generated files: ``photos`` (paths, in EXAMPLE_PHOTOS order) and their ``keypoints`` file."""

    photos: tuple[Path, ...]
    keypoints: Path


def write_examples(folder: str | Path, *, scale: float = 1.0) -> Examples:
    """Write the example photos and ``keypoints.json`` into ``folder`` (atomically; existing files are
    replaced by the same content). ``scale`` < 1 writes smaller photos (and keypoints to match)."""
    from PIL import Image

    from ..atomic import write_bytes, write_text
    from ..stand_ins.scene import synthetic_scene

    folder = Path(folder)
    entries, photos = [], []
    for name, (w, h, seed) in EXAMPLE_PHOTOS.items():
        rgb, kp = synthetic_scene(width=w, height=h, seed=seed)  # kp (2, 17, 3) COCO [x, y, conf] px
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
            kp = kp * np.array([size[0] / w, size[1] / h, 1.0])
        buf = io.BytesIO()
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        Image.fromarray(rgb).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        photos.append(write_bytes(folder / name, buf.getvalue()))
        for person in kp:
            x0, y0 = person[:, :2].min(axis=0)
            x1, y1 = person[:, :2].max(axis=0)
            entries.append({"file_name": name, "category_id": 1, "score": 0.9,
                            "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                            "keypoints": [round(float(v), 3) for v in person.reshape(-1)]})
    kp_file = write_text(folder / KEYPOINTS_NAME, json.dumps(entries, indent=1) + "\n")
    return Examples(photos=tuple(photos), keypoints=kp_file)
