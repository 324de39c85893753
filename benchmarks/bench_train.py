"""Training-step throughput and memory of the DPMesh model (random weights; speed does not depend on them).

Usage:
    python benchmarks/bench_train.py --size full --device cuda --batch-sizes 4 8 16 --precision fp16 bf16 no \
        --checkpointing off on
    python benchmarks/bench_train.py --size tiny --device cpu --batch-sizes 2 4

Times one optimiser step of the student stage as ``dpmesh train dpmesh`` runs it: student forward
(heatmaps, VAE, ControlNet, LoRA UNet, merge, regressor, pose decoder, SMPL), the frozen teacher's
forward (no grad), the losses (L2D, L3D, LSMPL, NKR), backward, gradient clipping and AdamW over the
trainable set (LoRA, ControlNet, adapter, regressor). Inputs are random crops and targets already on the
device, so data loading is not included. Median of ``--repeat`` steps after ``--warmup`` steps, with CUDA
synchronisation; peak CUDA memory per configuration. Prints a table; never part of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch


def build_model(size: str):
    from dpmesh_infer.models import sd15
    from dpmesh_infer.models.backbone import BackboneConfig, DiffusionBackbone
    from dpmesh_infer.models.body import SMPLBody
    from dpmesh_infer.models.pose_decoders import PoseDecoderConfig, build_pose_decoder
    from dpmesh_infer.models.regressor import Regressor, RegressorConfig
    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays
    from dpmesh_infer.stand_ins.tiny import tiny_configs
    from dpmesh_infer.train.model import TrainableDPMesh

    if size == "tiny":
        b_cfg, r_cfg, d_cfg, unet, cn, vae = tiny_configs("vqvae")
    else:
        b_cfg, d_cfg = BackboneConfig(), PoseDecoderConfig(type="vqvae")
        r_cfg = RegressorConfig(pose_head="vqvae")
        unet, cn, vae = sd15.unet_config(), sd15.controlnet_config(), sd15.vae_config()
    return TrainableDPMesh(backbone=DiffusionBackbone.build(b_cfg, unet, cn, vae), regressor=Regressor(r_cfg),
                       pose_decoder=build_pose_decoder(d_cfg), body=SMPLBody(make_synthetic_smpl_arrays()))


def random_batch(b: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    j2d = torch.rand(b, 30, 3, generator=g) * 256
    j2d[..., 2] = 1
    batch = {
        "img_student": torch.rand(b, 3, 256, 256, generator=g), "img_teacher": torch.rand(b, 3, 256, 256, generator=g),
        "joints32_student": torch.rand(b, 30, 2, generator=g) * 32,
        "joints32_teacher": torch.rand(b, 30, 2, generator=g) * 32,
        "mask_student": torch.ones(b, 30, dtype=torch.bool), "mask_teacher": torch.ones(b, 30, dtype=torch.bool),
        "focal": torch.full((b,), 800.0), "target_j2d": j2d, "target_j3d": torch.randn(b, 30, 3, generator=g) * 0.3,
        "j3d_valid": torch.ones(b, 30), "has_j3d": torch.ones(b), "has_smpl": torch.ones(b),
        "smpl_pose": torch.randn(b, 72, generator=g) * 0.2, "smpl_betas": torch.randn(b, 10, generator=g),
        "pose_valid": torch.ones(b, 24),
    }
    return {k: v.to(device) for k, v in batch.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--precision", nargs="+", default=["no"], choices=["no", "fp16", "bf16"])
    ap.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"])
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    from dpmesh_infer.devices import resolve_device
    from dpmesh_infer.train.config import LossConfig
    from dpmesh_infer.train.trainer import step_loss

    device = resolve_device(args.device)
    torch.manual_seed(0)
    student = build_model(args.size).to(device)
    teacher = build_model(args.size).to(device).eval().requires_grad_(False)
    params = student.set_trainable(train_controlnet=True)
    n_train = sum(p.numel() for p in params)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"size {args.size}, trainable parameters {n_train / 1e6:.1f} M, torch {torch.__version__}")
    print(f"{'precision':>9} {'ckpt':>4} {'batch':>5} {'step ms':>9} {'samples/s':>10} {'peak GiB':>9}")
    for ckpt in args.checkpointing:
        if ckpt == "on":
            student.enable_gradient_checkpointing()
        for precision in args.precision:
            if precision != "no" and device.type != "cuda":
                print(f"{precision:>9} {ckpt:>4}   skipped (needs CUDA)")
                continue
            dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
            scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

            def autocast():
                return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

            for b in args.batch_sizes:
                opt = torch.optim.AdamW(params, lr=1e-5)
                batch = random_batch(b, device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times = []
                try:
                    for i in range(args.warmup + args.repeat):
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        t0 = time.perf_counter()
                        student.train()
                        with autocast():
                            loss, _ = step_loss(student, student.body, teacher, batch, LossConfig(), autocast)
                        scaler.scale(loss).backward()
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(params, 10.0)
                        scaler.step(opt)
                        scaler.update()
                        opt.zero_grad(set_to_none=True)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        if i >= args.warmup:
                            times.append(time.perf_counter() - t0)
                except torch.OutOfMemoryError:
                    print(f"{precision:>9} {ckpt:>4} {b:>5}   out of memory")
                    torch.cuda.empty_cache()
                    continue
                ms = statistics.median(times) * 1000
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
                print(f"{precision:>9} {ckpt:>4} {b:>5} {ms:>9.1f} {b / (ms / 1000):>10.2f} {peak:>9.2f}")


if __name__ == "__main__":
    main()
