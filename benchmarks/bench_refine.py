"""Cost of the keypoint refinement (dpmesh_infer.refine) per optimiser step and per person.

Usage:
    python benchmarks/bench_refine.py --device cpu --batch-sizes 1 4 16
    python benchmarks/bench_refine.py --device cuda --batch-sizes 1 16 64 --iterations 100

Times ``fit_bodies`` (SMPL forward + backward through the VPoser decoder, Adam) on synthetic people
with perturbed starts: the full-size VPoser decoder and the synthetic stand-in SMPL (same array sizes
as the real model, so the same cost). Early stopping is off (``patience`` > iterations) so every run
does the same work. Prints a table; never part of the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()

    from dpmesh_infer.devices import resolve_device
    from dpmesh_infer.geometry.camera import project
    from dpmesh_infer.models.body import SMPLBody
    from dpmesh_infer.models.pose_decoders import PoseDecoderConfig, build_pose_decoder
    from dpmesh_infer.refine import RefineConfig
    from dpmesh_infer.refine.fit import FitInputs, fit_bodies
    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays

    dev = resolve_device(args.device)
    body = SMPLBody(make_synthetic_smpl_arrays()).to(dev)
    decoder = build_pose_decoder(PoseDecoderConfig()).to(dev).eval()
    cfg = RefineConfig(iterations=args.iterations, patience=args.iterations + 1)
    g = torch.Generator().manual_seed(0)
    print(f"device {dev}, {args.iterations} iterations, median of {args.repeat}")
    print(f"{'batch':>6} {'ms/iteration':>13} {'ms/person (100 it)':>19}")
    for b in args.batch_sizes:
        z = (0.5 * torch.randn(b, 32, generator=g)).to(dev)
        go = torch.tensor([[3.1416, 0.0, 0.0]], device=dev).expand(b, 3).contiguous()
        betas = torch.zeros(b, 10, device=dev)
        transl = torch.tensor([[0.0, 0.2, 5.0]], device=dev).expand(b, 3).contiguous()
        focal, pp = torch.full((b,), 1000.0, device=dev), torch.tensor([[500.0, 400.0]], device=dev).expand(b, 2)
        with torch.no_grad():
            pose = decoder(z)
            kp = project(body(go, pose, betas, transl).joints, focal, pp, eps=0.0)
        kp = torch.cat([kp + 3.0, torch.ones(b, 30, 1, device=dev)], -1)
        x = FitInputs(go, pose, betas, transl, z + 0.2, kp, focal, pp, torch.full((b,), 400.0, device=dev),
                      torch.zeros(0, 2, dtype=torch.int64, device=dev))
        times = []
        for _ in range(args.repeat):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            fit_bodies(body, decoder, x, cfg)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append((time.perf_counter() - t) / args.iterations)
        it = statistics.median(times)
        print(f"{b:>6} {it * 1e3:>13.1f} {it * 100 / b * 1e3:>19.0f}")


if __name__ == "__main__":
    main()
