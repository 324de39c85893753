"""Scaling of ``dpmesh predict --engine ray`` with the number of workers (not a test; prints a table).

Usage:
    python benchmarks/bench_ray.py                              # 24 images, tiny weights, 1 and 2 workers
    python benchmarks/bench_ray.py --images 64 --workers 1 2 4 --weights DIR --chunk 8
    RAY_ADDRESS=head:6379 python benchmarks/bench_ray.py --weights DIR --device cuda --workers 1 2 4 8

One Ray connection (a local Ray with every core when no ``$RAY_ADDRESS``) serves every row, so the rows
differ only in the worker count. Each row is a fresh folder run (``engines.ray_data.run_on_ray``) of the
same generated photos (640x480, two people each, keypoints from a file) into its own output folder;
``--local`` adds a row for the local engine (``BatchRunner``) on the same images. Columns: torch threads
per process (Ray sets a worker's OMP_NUM_THREADS to its CPUs: the cluster's CPUs shared among the
workers), wall seconds of the run (worker start-up included), images/s over the run, images/s after the
first batch came back (start-up excluded), and each row's ratio (steady images/s) to the first 1-worker row.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_photos(root: Path, n: int) -> tuple[Path, Path]:
    """``n`` photos (shifted copies of the synthetic two-person scene) and their keypoint file."""
    from PIL import Image

    from dpmesh_infer.stand_ins.scene import synthetic_scene

    image, kp = synthetic_scene()
    photos = root / "photos"
    photos.mkdir(parents=True)
    entries = []
    for i in range(n):
        name = f"img_{i:03d}.png"
        Image.fromarray(np.roll(image, 3 * i, axis=1)).save(photos / name)
        entries += [{"file_name": name, "keypoints": (k + [3 * i, 0, 0]).reshape(-1).tolist(), "score": 0.9}
                    for k in kp]
    kp_file = root / "kp.json"
    kp_file.write_text(json.dumps(entries))
    return photos, kp_file


def file_keypoints(pipe, kpset):
    from dpmesh_infer.batch import FileKeypoints

    return FileKeypoints(kpset)


class Timer:
    """on_record callback: when the first and the last computed image came back."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first = self.last = None
        self.first_count = self.count = 0

    def __call__(self, rec) -> None:
        now = time.perf_counter()
        self.count += 1
        if self.first is None or now - self.first < 0.05:  # records of one batch arrive together
            self.first = self.first or now
            self.first_count = self.count
        self.last = now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="one row per value, in order")
    ap.add_argument("--chunk", type=int, default=4, help="images per worker call (--chunk)")
    ap.add_argument("--weights", type=Path, default=None, help="weights directory (default: generated tiny weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--local", action="store_true", help="also a row for --engine local")
    args = ap.parse_args()

    from dpmesh_infer import Pipeline
    from dpmesh_infer.batch import BatchRunner, plan_batch
    from dpmesh_infer.engines.ray_data import WorkerSetup, import_ray, plan_resources, run_on_ray
    from dpmesh_infer.keypoint_files import read_keypoints

    ray = import_ray()
    work = Path(tempfile.mkdtemp(prefix="dpmesh-bench-ray-"))
    weights = args.weights
    if weights is None:
        from dpmesh_infer.stand_ins.tiny import build_tiny_weights

        weights = build_tiny_weights(work / "weights", seed=0)
    photos, kp_file = make_photos(work, args.images)
    kpset = read_keypoints(kp_file)
    setup = WorkerSetup(load_pipeline=functools.partial(Pipeline.from_pretrained, str(weights), device=args.device),
                        make_keypoints=functools.partial(file_keypoints, kpset=kpset))
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level="ERROR")
    else:
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    resources = ray.cluster_resources()

    rows = []
    import torch

    if args.local:
        timer = Timer()
        pipe = Pipeline.from_pretrained(weights, device=args.device)
        runner = BatchRunner(pipe, file_keypoints(pipe, kpset), chunk=args.chunk, on_record=timer)
        summary = runner.run(plan_batch([photos], work / "out_local"))
        rows.append(("local", summary, timer, torch.get_num_threads()))
    for i, n in enumerate(args.workers):  # (repeat counts to alternate them: --workers 1 2 1 2)
        timer = Timer()
        summary = run_on_ray(plan_batch([photos], work / f"out_ray_{i}"), setup, workers=n, device=args.device,
                             chunk=args.chunk, on_record=timer)
        cpus = plan_resources(resources, ray.nodes(), workers=n, device=args.device).num_cpus  # (torch threads)
        rows.append((f"ray, {n} worker{'s' if n > 1 else ''}", summary, timer, int(cpus)))
    ray.shutdown()

    print(f"\n{args.images} images (640x480, 2 people each), --chunk {args.chunk}, weights {weights}, "
          f"device {args.device}")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"ray {ray.__version__}, cluster {dict((k, v) for k, v in resources.items() if k in ('CPU', 'GPU'))}")
    head = (f"{'engine':<18} {'threads/proc':>12} {'done':>5} {'wall s':>8} {'images/s':>9} {'steady images/s':>16} "
            f"{'ratio':>6}")
    print(head + "\n" + "-" * len(head))
    base = None
    for name, summary, timer, threads in rows:
        done = summary.count("done")
        rate = done / summary.seconds
        steady = ((timer.count - timer.first_count) / (timer.last - timer.first)
                  if timer.last is not None and timer.last > timer.first else float("nan"))
        if base is None and name == "ray, 1 worker":
            base = steady
        ratio = steady / base if base else float("nan")
        print(f"{name:<18} {threads:>12} {done:>5} {summary.seconds:>8.1f} {rate:>9.2f} {steady:>16.2f} {ratio:>6.2f}")
    print("steady images/s: images after the first returned batch / time from that batch to the last one "
          "(worker start-up excluded); ratio: steady images/s against the first 1-worker row")


if __name__ == "__main__":
    main()
