#!/usr/bin/env python3
"""The Python API on the example images: load the pipeline, reconstruct with given keypoints, save.

Usage:  python examples/example_api.py [--weights DIR] [--examples DIR] [--out DIR]

--weights defaults to $DPMESH_WEIGHTS, then ~/.cache/dpmesh. Run make_examples.py first (it writes
images/ and keypoints.json into --examples).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dpmesh_infer import Pipeline
from dpmesh_infer.keypoint_files import read_keypoints

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description="dpmesh Python API example")
    parser.add_argument("--weights", type=Path, default=None, help="weights directory")
    parser.add_argument("--examples", type=Path, default=HERE, help="folder written by make_examples.py")
    parser.add_argument("--out", type=Path, default=HERE / "out_api", help="output folder")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    args = parser.parse_args()

    pipe = Pipeline.from_pretrained(args.weights, device=args.device)
    if pipe.config.untrained:
        print("note: UNTRAINED weights (selftest/tests) -- the meshes are meaningless")

    images = sorted((args.examples / "images").glob("*.*"))
    keypoints = read_keypoints(args.examples / "keypoints.json")  # matched to each image by file name
    out = pipe([str(p) for p in images], keypoints=keypoints, batch_size=8)

    args.out.mkdir(parents=True, exist_ok=True)
    for i, (path, result) in enumerate(zip(images, out)):
        print(f"{path.name}: {len(result.persons)} persons, f = {result.K[0, 0]:.1f} px, skipped {result.skipped}")
        for person in result.persons:
            # SMPL parameters (axis-angle), translation in metres in the photo's camera frame
            print(f"  transl {person.transl.round(2)}  betas[:3] {person.betas[:3].round(2)}")
        out.save(args.out / f"{path.stem}.glb", index=i)   # all persons, opens in Blender
        out.save(args.out / f"{path.stem}.json", index=i)  # every parameter, K, image size
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
