"""Pre-training of the VQ-VAE pose prior (:class:`~dpmesh_infer.models.pose_decoders.VQVAEPosePrior`) on AMASS.

Data (:func:`load_amass_body_poses`): every ``*.npz`` under ``poses_dir`` (recursive, sorted), read
with ``allow_pickle=False``; its ``poses`` array (T, C ≥ 66) holds axis-angle SMPL(-H) poses, column
0:3 the root (excluded: the prior models body joints only).

- C ≥ 72: SMPL joints 1..23 are columns 3:72. This is the usual AMASS → SMPL shortcut (VIBE,
  3DCrowdNet): for AMASS's SMPL+H files (C = 156) columns 66:72 are really the first finger joint of
  the left hand, not SMPL's hand joints 22/23; pass ``zero_hands=True`` to zero joints 22/23 instead.
  AMASS SMPL-X files (C = 165: jaw and eyes at 66:75) are refused unless ``zero_hands=True``.
- 66 ≤ C < 72: joints 1..21 from columns 3:66, joints 22/23 (hands) zero.

``frame_stride`` keeps every k-th frame (AMASS is 60–120 fps). Frames are stored as axis-angle and
turned into rotation matrices (B, 23, 3, 3) per batch: the model input.

Objective: L = L1(decoded raw matrices, target matrices) (mean absolute error over the 23×9 entries)
+ ``commitment_weight`` · MSE(encoder features, quantised features); the codebook follows the EMA of
the prior (no codebook loss). Before the first step the codebook (and EMA buffers) are initialised
from encoder features of random training frames, so no code starts far from the data.

Bookkeeping in ``out_dir``:

- ``log.jsonl``: one JSON object per line: ``{"event": "step", "epoch", "step", "loss", "recon_l1",
  "commitment", "lr", "codebook_usage", "perplexity"}`` every ``log_every`` steps (usage = fraction
  of codebook entries chosen at least once in the window, perplexity = exp(entropy) of the code
  histogram), ``{"event": "epoch", ...}`` with the same statistics over the epoch, and a final
  ``{"event": "final", "recon_l1", "angle_deg", ...}`` over the whole data set in eval mode.
- ``checkpoint.pt``: model, optimiser, torch RNG, epoch, position in the epoch, written atomically
  (temporary file + rename) every ``checkpoint_every`` steps and at every epoch end. The batch order
  of epoch e is a permutation drawn from a generator seeded with (seed, e), so ``resume=True``
  continues exactly where the checkpoint was taken (bit-identical on the same device).
- ``pose_decoder/``: the trained decoder (``config.json`` + ``model.safetensors``), loadable with
  :func:`~dpmesh_infer.models.pose_decoders.load_pose_decoder`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import resolve_device
from ..errors import CheckpointError, ConfigError, InputError
from ..geometry.rotations import axis_angle_to_matrix, orthonormalise
from ..locks import RunLock
from ..models.pose_decoders import PoseDecoderConfig, VQVAEPosePrior, save_pose_decoder
from .checkpoints import file_checkpoint_exists, load_file_checkpoint, save_file_checkpoint
from .runlog import append_log, truncate_log

__all__ = ["VQVAETrainResult", "load_amass_body_poses", "train_vqvae", "vqvae_command"]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
DECODER_DIR = "pose_decoder"
CHECKPOINT_VERSION = 1


def _check_structure(ckpt) -> None:
    """CheckpointError unless ``ckpt`` looks like a VQ-VAE training checkpoint of this version."""
    keys = ("version", "settings", "model", "optimiser", "rng_cpu", "epoch", "step_in_epoch", "global_step",
            "window", "epoch_stats")
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in keys):
        raise CheckpointError("the checkpoint does not hold a dpmesh VQ-VAE training state")


def load_amass_body_poses(poses_dir: str | Path, *, zero_hands: bool = False, frame_stride: int = 1) -> torch.Tensor:
    """All frames of the AMASS-style ``.npz`` files under ``poses_dir`` → (N, 23, 3) float32 axis-angle
    (SMPL joints 1..23, radians). See the module docstring for the column layout.

    Raises:
        InputError: no ``.npz`` file, a file without a usable ``poses`` array, non-finite values, or
            SMPL-X poses (165 columns) without ``zero_hands`` (``dpmesh train vqvae --zero-hands``).
    """
    from ..data.convert_amass import SMPLX_POSE_COLUMNS, smplx_refusal

    poses_dir = Path(poses_dir)
    if not poses_dir.is_dir():
        raise InputError(f"poses directory not found: {poses_dir}")
    if frame_stride < 1:
        raise InputError(f"frame_stride must be >= 1, got {frame_stride}")
    files = sorted(p for p in poses_dir.rglob("*.npz") if p.is_file())
    if not files:
        raise InputError(f"no .npz pose files under {poses_dir} (AMASS-style files with a 'poses' array)")
    chunks = []
    for path in files:
        try:
            with np.load(path, allow_pickle=False) as data:
                if "poses" not in data.files:
                    raise InputError(f"{path}: no 'poses' array (has {sorted(data.files)})")
                poses = np.asarray(data["poses"])
                model = data["surface_model_type"] if "surface_model_type" in data.files else None
        except (ValueError, OSError) as e:  # pickled object arrays, corrupt zip
            raise InputError(f"{path}: cannot read as a plain .npz ({e})") from e
        if poses.ndim != 2 or poses.shape[1] < 66 or not np.issubdtype(poses.dtype, np.floating):
            raise InputError(f"{path}: 'poses' must be a float (T, >=66) axis-angle array, got "
                             f"{poses.dtype} {poses.shape}")
        smplx = poses.shape[1] == SMPLX_POSE_COLUMNS or (
            model is not None and model.dtype.kind in "US" and str(model.reshape(-1)[0]).lower() == "smplx")
        if smplx and not zero_hands:
            raise InputError(smplx_refusal(str(path), poses.shape[1], "--zero-hands (zero_hands=True)"))
        poses = poses[::frame_stride]
        body = np.zeros((poses.shape[0], 23, 3), dtype=np.float32)
        n_joints = 23 if poses.shape[1] >= 72 and not zero_hands else 21
        body[:, :n_joints] = poses[:, 3:3 + 3 * n_joints].reshape(-1, n_joints, 3)
        if not np.isfinite(body).all():
            raise InputError(f"{path}: 'poses' holds NaN or infinite values")
        chunks.append(body)
    out = torch.from_numpy(np.concatenate(chunks))
    if out.shape[0] == 0:
        raise InputError(f"the .npz files under {poses_dir} hold no frames")
    return out


@dataclasses.dataclass(frozen=True)
class VQVAETrainResult:
    """Outcome of :func:`train_vqvae`.

    Attributes:
        pose_decoder_dir: exported decoder (``load_pose_decoder`` loads it).
        steps: optimiser steps done in total (including those before a resume).
        frames: training frames.
        recon_l1: final mean absolute error of the decoded raw matrices, all frames, eval mode.
        angle_deg: final mean geodesic angle (degrees) between orthonormalised decoded and true rotations.
        codebook_usage: fraction of codes used to encode all frames (eval mode).
        perplexity: exp(entropy) of that code histogram.
    """

    pose_decoder_dir: Path
    steps: int
    frames: int
    recon_l1: float
    angle_deg: float
    codebook_usage: float
    perplexity: float


def _usage(counts: torch.Tensor) -> tuple[float, float]:
    total = counts.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts.double() / total
    nz = p[p > 0]
    return float((counts > 0).double().mean()), float(torch.exp(-(nz * nz.log()).sum()))


def _new_stats(k: int) -> dict:
    return {"loss": 0.0, "recon": 0.0, "commit": 0.0, "n": 0, "codes": torch.zeros(k, dtype=torch.int64)}


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def _train_step(prior, optimiser, rotmats, commitment_weight):
    """One optimiser step; returns (loss, recon, commitment) floats and code indices (B, T)."""
    out = prior(rotmats)
    recon = F.l1_loss(out.raw_matrices, rotmats)
    loss = recon + commitment_weight * out.commitment_loss
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach()), float(recon.detach()), float(out.commitment_loss.detach()), out.indices


@torch.no_grad()
def _init_codebook(prior: VQVAEPosePrior, body_aa: torch.Tensor, seed: int, device: torch.device) -> None:
    """Codebook and EMA buffers ← encoder features of random frames (one random token each)."""
    k, t = prior.config.codebook_size, prior.config.num_tokens
    g = torch.Generator().manual_seed(seed + 17)
    frames = torch.randint(body_aa.shape[0], (k,), generator=g)
    tokens = torch.randint(t, (k,), generator=g)
    feats = []
    for s in range(0, k, 1024):
        rot = axis_angle_to_matrix(body_aa[frames[s:s + 1024]].to(device))
        feats.append(prior.encode(rot)[torch.arange(rot.shape[0], device=device), tokens[s:s + 1024].to(device)])
    feat = torch.cat(feats).to(prior.codebook.dtype)
    prior.codebook.copy_(feat)
    prior.ema_w.copy_(feat)
    prior.ema_cluster_size.fill_(1.0)


@torch.no_grad()
def _final_eval(prior: VQVAEPosePrior, body_aa: torch.Tensor, batch_size: int, device: torch.device) -> dict:
    was_training = prior.training
    prior.eval()
    counts = torch.zeros(prior.config.codebook_size, dtype=torch.int64)
    l1_sum = angle_sum = 0.0
    for s in range(0, body_aa.shape[0], batch_size):
        rot = axis_angle_to_matrix(body_aa[s:s + batch_size].to(device))
        out = prior(rot)
        l1_sum += float((out.raw_matrices - rot).abs().mean(dim=(1, 2, 3)).sum())
        rel = orthonormalise(out.raw_matrices.double()).transpose(-1, -2) @ rot.double()
        cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
        angle_sum += float(torch.rad2deg(torch.acos(cos)).mean(dim=1).sum())
        counts += torch.bincount(out.indices.reshape(-1).cpu(), minlength=counts.shape[0])
    prior.train(was_training)
    n = body_aa.shape[0]
    usage, perplexity = _usage(counts)
    return {"recon_l1": l1_sum / n, "angle_deg": angle_sum / n, "codebook_usage": usage, "perplexity": perplexity}


def train_vqvae(poses_dir: str | Path, out_dir: str | Path, **kwargs) -> VQVAETrainResult:
    """:func:`_train_vqvae` holding the run directory's lock (:mod:`dpmesh_infer.locks`).

    Raises:
        OutputConflictError: another run is using ``out_dir``.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir):
        return _train_vqvae(poses_dir, out_dir, **kwargs)


def _train_vqvae(
    poses_dir: str | Path,
    out_dir: str | Path,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    log_every: int = 50,
    resume: bool = False,
    config: PoseDecoderConfig | None = None,
    commitment_weight: float = 0.25,
    weight_decay: float = 0.0,
    checkpoint_every: int = 1000,
    zero_hands: bool = False,
    frame_stride: int = 1,
) -> VQVAETrainResult:
    """Pre-train the VQ-VAE pose prior on AMASS-style poses and export ``out_dir/pose_decoder/``.

    Args:
        poses_dir: folder searched recursively for ``.npz`` files (see :func:`load_amass_body_poses`).
        out_dir: created if needed; receives ``log.jsonl``, ``checkpoint.pt``, ``pose_decoder/``.
        epochs: total epochs (a resumed run may raise it to train further).
        batch_size: frames per step (the last, smaller batch of an epoch is kept).
        lr, weight_decay: AdamW settings (constant learning rate).
        seed: initialisation, codebook init and batch order.
        device: "cpu", "cuda", "cuda:N" or "auto".
        log_every: steps per ``log.jsonl`` step record.
        resume: continue from ``out_dir/checkpoint.pt`` (fresh start if there is none). Without it an
            existing checkpoint is an error, so a finished run is never overwritten by accident.
        config: model sizes (``type`` must be "vqvae"); default: DPMesh's (48 tokens, 2048×256 codebook).
        commitment_weight: weight of the commitment loss.
        checkpoint_every: steps between checkpoints (also written at every epoch end).
        zero_hands, frame_stride: data options of :func:`load_amass_body_poses`.

    Raises:
        InputError: bad data or arguments, or a checkpoint whose settings differ from these.
    """
    config = config or PoseDecoderConfig(type="vqvae")
    if config.type != "vqvae":
        raise ConfigError("train_vqvae needs a PoseDecoderConfig with type 'vqvae'")
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("log_every", log_every),
                        ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if not lr > 0 or commitment_weight < 0 or weight_decay < 0:
        raise InputError("lr must be > 0; commitment_weight and weight_decay must be >= 0")
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME

    body_aa = load_amass_body_poses(poses_dir, zero_hands=zero_hands, frame_stride=frame_stride)
    n = body_aa.shape[0]
    settings = {"config": config.to_dict(), "batch_size": batch_size, "lr": lr, "seed": seed,
                "commitment_weight": commitment_weight, "weight_decay": weight_decay, "frames": n,
                "zero_hands": zero_hands, "frame_stride": frame_stride}
    steps_per_epoch = math.ceil(n / batch_size)

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        prior = VQVAEPosePrior(config).to(dev).train()
        optimiser = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=weight_decay)
        epoch, step_in_epoch, global_step = 0, 0, 0
        k = config.codebook_size
        win, ep = _new_stats(k), _new_stats(k)  # running sums since the last step record / epoch start
        if file_checkpoint_exists(ckpt_path) and not resume:
            raise InputError(f"{ckpt_path} exists: pass resume (--resume) to continue it, or use another --out")
        if resume and file_checkpoint_exists(ckpt_path):
            ckpt = load_file_checkpoint(ckpt_path, check=_check_structure)
            if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("settings") != settings:
                diff = sorted(name for name in settings if ckpt.get("settings", {}).get(name) != settings[name])
                raise InputError(f"{ckpt_path} was written with different settings ({', '.join(diff) or 'version'}); "
                                 "resume with the original ones or use another --out")
            prior.load_state_dict(ckpt["model"])
            optimiser.load_state_dict(ckpt["optimiser"])
            torch.set_rng_state(ckpt["rng_cpu"])
            if dev.type == "cuda" and ckpt.get("rng_cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng_cuda"], dev)
            epoch, step_in_epoch, global_step = ckpt["epoch"], ckpt["step_in_epoch"], ckpt["global_step"]
            win = {**ckpt["window"], "codes": ckpt["window"]["codes"].cpu()}
            ep = {**ckpt["epoch_stats"], "codes": ckpt["epoch_stats"]["codes"].cpu()}
            truncate_log(log_path, global_step, drop_events=("final",))
            log.info("resuming from %s at epoch %d, step %d", ckpt_path, epoch, global_step)
        else:
            if log_path.exists():
                log_path.unlink()
            prior.eval()
            _init_codebook(prior, body_aa, seed, dev)
            prior.train()

        def save_checkpoint() -> None:
            checkpoint = {
                "version": CHECKPOINT_VERSION, "settings": settings, "model": prior.state_dict(),
                "optimiser": optimiser.state_dict(), "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "window": win, "epoch_stats": ep,
            }
            save_file_checkpoint(checkpoint, ckpt_path)

        while epoch < epochs:
            order = _epoch_order(n, seed, epoch)
            while step_in_epoch < steps_per_epoch:
                idx = order[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size]
                rotmats = axis_angle_to_matrix(body_aa[idx].to(dev))
                loss, recon, commit, codes = _train_step(prior, optimiser, rotmats, commitment_weight)
                if not math.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {global_step}; lower lr (now {lr})")
                hist = torch.bincount(codes.reshape(-1).cpu(), minlength=k)
                for acc in (win, ep):
                    acc["loss"] += loss
                    acc["recon"] += recon
                    acc["commit"] += commit
                    acc["n"] += 1
                    acc["codes"] += hist
                step_in_epoch += 1
                global_step += 1
                if global_step % log_every == 0:
                    usage, ppl = _usage(win["codes"])
                    append_log(log_path, {"event": "step", "epoch": epoch, "step": global_step,
                                           "loss": win["loss"] / win["n"], "recon_l1": win["recon"] / win["n"],
                                           "commitment": win["commit"] / win["n"], "lr": lr,
                                           "codebook_usage": usage, "perplexity": ppl})
                    win = _new_stats(k)
                if global_step % checkpoint_every == 0 and step_in_epoch < steps_per_epoch:
                    save_checkpoint()
            if ep["n"]:
                usage, ppl = _usage(ep["codes"])
                append_log(log_path, {"event": "epoch", "epoch": epoch, "step": global_step,
                                       "loss": ep["loss"] / ep["n"], "recon_l1": ep["recon"] / ep["n"],
                                       "commitment": ep["commit"] / ep["n"], "lr": lr,
                                       "codebook_usage": usage, "perplexity": ppl})
            log.info("epoch %d/%d done (step %d)", epoch + 1, epochs, global_step)
            epoch, step_in_epoch = epoch + 1, 0
            ep = _new_stats(k)
            save_checkpoint()

        final = _final_eval(prior, body_aa, batch_size, dev)
        append_log(log_path, {"event": "final", "epoch": epoch, "step": global_step, "frames": n, **final})
        decoder_dir = save_pose_decoder(prior.pose_decoder, out_dir / DECODER_DIR)
    return VQVAETrainResult(pose_decoder_dir=Path(decoder_dir), steps=global_step, frames=n, **final)


def vqvae_command(
    poses: Path,
    out: Path,
    *,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    device: str = "auto",
    log_every: int = 50,
    checkpoint_every: int = 1000,
    resume: bool = False,
    model_config: Path | None = None,
    zero_hands: bool = False,
    frame_stride: int = 1,
) -> str:
    """Body of ``dpmesh train vqvae``: train, export, return a one-paragraph summary for the console.

    ``model_config`` is an optional JSON file of :class:`PoseDecoderConfig` fields (``type`` "vqvae").
    """
    config = PoseDecoderConfig.load_json(model_config) if model_config else PoseDecoderConfig(type="vqvae")
    r = train_vqvae(poses, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                    log_every=log_every, resume=resume, config=config, checkpoint_every=checkpoint_every,
                    zero_hands=zero_hands, frame_stride=frame_stride)
    return (f"trained on {r.frames} frames, {r.steps} steps: reconstruction L1 {r.recon_l1:.4f}, "
            f"mean angle error {r.angle_deg:.2f} deg, codebook usage {100 * r.codebook_usage:.1f}% "
            f"(perplexity {r.perplexity:.1f}); pose decoder written to {r.pose_decoder_dir}; "
            f"log: {Path(out) / LOG_NAME}")
