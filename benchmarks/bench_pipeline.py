"""Throughput of the DPMesh networks + SMPL per person (random weights; speed does not depend on them).

Usage:
    python benchmarks/bench_pipeline.py --size full --device cuda --batch-sizes 1 8 32 64
    python benchmarks/bench_pipeline.py --size tiny --device cpu --batch-sizes 1 4

Times ``Pipeline.forward_persons`` (heatmaps, VAE, ControlNet, LoRA UNet, merge, regressor, VPoser,
SMPL, placement) on pre-cropped persons: median of ``--repeat`` runs after ``--warmup`` runs, with CUDA
synchronisation. Preprocessing (CPU crops) is timed separately per person. Prints a table; never part of
the tests. The compute floor for the full model is about 500 GFLOP per person (ARCHITECTURE.md §11).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build_pipeline(size: str, device: str, dtype: str):
    from dpmesh_infer.models import sd15
    from dpmesh_infer.models.backbone import BackboneConfig, DiffusionBackbone
    from dpmesh_infer.models.body import SMPLBody
    from dpmesh_infer.models.dpmesh import PipelineConfig
    from dpmesh_infer.models.pose_decoders import PoseDecoderConfig, build_pose_decoder
    from dpmesh_infer.models.regressor import Regressor, RegressorConfig
    from dpmesh_infer.pipeline import Pipeline
    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays
    from dpmesh_infer.stand_ins.tiny import tiny_configs

    if size == "tiny":
        b_cfg, r_cfg, d_cfg, unet, cn, vae = tiny_configs()
    else:
        b_cfg, r_cfg, d_cfg = BackboneConfig(), RegressorConfig(), PoseDecoderConfig()
        unet, cn, vae = sd15.unet_config(), sd15.controlnet_config(), sd15.vae_config()
    backbone = DiffusionBackbone.build(b_cfg, unet, cn, vae)
    return Pipeline(config=PipelineConfig(untrained=True), backbone=backbone, regressor=Regressor(r_cfg),
                    pose_decoder=build_pose_decoder(d_cfg), body=SMPLBody(make_synthetic_smpl_arrays()),
                    device=device, dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from dpmesh_infer.geometry.crops import PreprocessConfig, prepare_persons
    from dpmesh_infer.stand_ins.scene import synthetic_scene

    torch.manual_seed(0)
    pipe = build_pipeline(args.size, args.device, args.dtype)
    dev = pipe.device
    image, kp = synthetic_scene()
    from dpmesh_infer.geometry.joints import coco17_to_j30

    t0 = time.perf_counter()
    persons, _ = prepare_persons(image, coco17_to_j30(kp), PreprocessConfig())
    prep_ms = (time.perf_counter() - t0) * 1e3 / len(persons)
    rows = []
    for bs in args.batch_sizes:
        batch = [persons[i % len(persons)] for i in range(bs)]
        f = torch.full((bs,), 800.0)
        pp = torch.tensor([[320.0, 240.0]] * bs)
        times = []
        for i in range(args.warmup + args.repeat):
            sync(dev)
            t = time.perf_counter()
            pipe.forward_persons(batch, focal=f, principal=pp)
            sync(dev)
            if i >= args.warmup:
                times.append(time.perf_counter() - t)
        med = statistics.median(times)
        mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
        rows.append((bs, med * 1e3, med * 1e3 / bs, bs / med, mem))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"\nmodel={args.size} device={name} dtype={pipe.dtype} torch={torch.__version__} "
          f"threads={torch.get_num_threads()} preprocess={prep_ms:.1f} ms/person (CPU)")
    print(f"{'batch':>6} {'ms/batch':>10} {'ms/person':>10} {'persons/s':>10} {'peak GiB':>9}")
    for bs, ms, msp, pps, mem in rows:
        print(f"{bs:>6} {ms:>10.1f} {msp:>10.2f} {pps:>10.1f} {mem:>9.2f}")


if __name__ == "__main__":
    main()
