#!/usr/bin/env python3
"""Generate the example inputs: two synthetic crowd-like photos with stick figures, and their keypoints.

Nothing is downloaded: the images are drawn here (dpmesh_infer.selftest.synthetic_scene), so they
carry no third-party rights (CC0, see README.md). Writes, under --out (default: this folder):

    images/street.jpg      640x480, two overlapping people
    images/plaza.png       800x600, two overlapping people (another random seed)
    keypoints.json         COCO keypoint results with "file_name", as `dpmesh predict --keypoints` reads

Usage:  python examples/make_examples.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from dpmesh_infer.stand_ins.scene import synthetic_scene

#: file name -> (width, height, seed)
EXAMPLES = {"street.jpg": (640, 480, 0), "plaza.png": (800, 600, 1)}


def make_examples(out: Path) -> list[Path]:
    """Write the images and keypoints.json under ``out``; return the written paths."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    entries, written = [], []
    for name, (w, h, seed) in EXAMPLES.items():
        rgb, kp = synthetic_scene(width=w, height=h, seed=seed)  # kp: (2, 17, 3) COCO [x, y, conf] pixels
        path = images / name
        Image.fromarray(rgb).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
        written.append(path)
        for person in kp:
            x0, y0 = person[:, :2].min(axis=0)
            x1, y1 = person[:, :2].max(axis=0)
            entries.append({"file_name": name, "category_id": 1, "score": 0.9,
                            "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                            "keypoints": [round(float(v), 3) for v in person.reshape(-1)]})
    kp_file = out / "keypoints.json"
    kp_file.write_text(json.dumps(entries, indent=1) + "\n")
    written.append(kp_file)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="folder for images/ and keypoints.json (default: this folder)")
    args = parser.parse_args()
    for path in make_examples(args.out):
        print(path)


if __name__ == "__main__":
    main()
