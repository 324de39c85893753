"""Keypoint detector time per image (CPU, and CUDA when available). Not a test.

    python benchmarks/bench_detector.py [--detectors rtmo-s rtmo-l rtmdet-m+rtmpose-m] [--people 5]
                                        [--images 8] [--batch 1 4] [--weights DIR] [--devices cpu cuda]

Networks come from mmpose's shipped configs. With ``--weights DIR`` holding the detector's converted
checkpoints (``dpmesh fetch-detector``) those are loaded; otherwise the networks are random-init,
which costs the same per forward pass. Random networks produce no meaningful people, so the number of
people decoded per image is forced to ``--people``: for RTMO through the candidate cap (``det_thr=0``,
``max_candidates=P``), for top-down by making every anchor a confident person and capping the person
detector at P boxes. Times are the median over repeats after one warm-up, in ms per image.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def _images(n: int, w: int, h: int) -> list[np.ndarray]:
    rng = np.random.RandomState(0)
    return [(rng.rand(h, w, 3) * 255).astype(np.uint8) for _ in range(n)]


def build(name: str, people: int, weights: Path | None, device: str, tmp: Path):
    from mmengine.logging import MMLogger

    from dpmesh_infer.detect import detectors as D
    from dpmesh_infer.detect.mmpose_compat import import_mmpose
    from dpmesh_infer.detect.mmpose_detector import KeypointDetector, Thresholds

    import_mmpose()
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    spec = D.get_spec(name)
    th = Thresholds(det_thr=0.0, kpt_thr=0.0, min_keypoints=0, max_candidates=people)
    if weights is not None and all(D.cached_checkpoints(name, weights)):
        return KeypointDetector.from_name(name, weights, device, thresholds=th), "published"
    from mmpose.apis import init_model

    pose_cfg = D.config_path(spec.pose.config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pose = init_model(str(pose_cfg), None, device="cpu")
        pose.init_weights()
        torch.save({"state_dict": pose.state_dict()}, tmp / f"{name}-pose.pth")
        if spec.person is None:
            return KeypointDetector.from_files(pose_cfg, tmp / f"{name}-pose.pth", device, thresholds=th), "random"
        from mmdet.apis import init_detector

        person_cfg = tmp / f"{name}-person.py"
        person_cfg.write_text(f"_base_ = {str(D.config_path(spec.person.config))!r}\n"
                              f"model = dict(test_cfg=dict(max_per_img={people}))\n")  # fmt: skip
        det = init_detector(str(person_cfg), None, device="cpu")
        det.init_weights()
        for conv in det.bbox_head.rtm_cls:
            torch.nn.init.constant_(conv.bias, 2.0)
        torch.save({"state_dict": det.state_dict()}, tmp / f"{name}-person.pth")
    kd = KeypointDetector.from_files(pose_cfg, tmp / f"{name}-pose.pth", device, person_config=person_cfg,
                                     person_checkpoint=tmp / f"{name}-person.pth", thresholds=th)  # fmt: skip
    return kd, "random"


def time_per_image(det, images: list[np.ndarray], batch: int, repeats: int) -> float:
    det.batch_size = batch
    det.detect(images[:batch])  # warm-up
    runs = []
    for _ in range(repeats):
        if det.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        det.detect(images)
        if det.device.startswith("cuda"):
            torch.cuda.synchronize()
        runs.append((time.perf_counter() - t) / len(images))
    return statistics.median(runs) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detectors", nargs="+", default=["rtmo-s", "rtmo-l", "rtmdet-m+rtmpose-m"])
    ap.add_argument("--people", type=int, default=5, help="people decoded per image")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", default="640x480", help="image WxH")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    args = ap.parse_args()
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    w, h = (int(v) for v in args.size.lower().split("x"))
    images = _images(args.images, w, h)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.detectors:
            for device in devices:
                det, source = build(name, args.people, args.weights, device, Path(tmp))
                for batch in args.batch:
                    ms = time_per_image(det, images, batch, args.repeats)
                    rows.append((name, source, device, batch, ms))
                    print(f"  {name:20s} {device:5s} batch {batch}: {ms:8.1f} ms/image", file=sys.stderr)
    threads = torch.get_num_threads()
    print(f"\nDetector time per image: {args.images} images {w}x{h}, {args.people} people each, "
          f"torch {torch.__version__}, {threads} CPU threads")  # fmt: skip
    print(f"{'detector':20s} {'weights':9s} {'device':6s} {'batch':>5s} {'ms/image':>9s}")
    for name, source, device, batch, ms in rows:
        print(f"{name:20s} {source:9s} {device:6s} {batch:5d} {ms:9.1f}")


if __name__ == "__main__":
    main()
