"""``dpmesh train ...``: pose-prior pre-training, DPMesh training, and training configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import (
    console,
    device_option,
    err_console,
    handle_errors,
    interrupt_exit_code,
    quiet_option,
    setup_logging,
    verbose_option,
)

app = typer.Typer(no_args_is_help=True, help="Train the VQ-VAE pose prior and DPMesh (teacher, then "
                        "student with noisy-keypoint reasoning).")


@app.command("vqvae")
@handle_errors
def train_vqvae_cmd(
    poses: Path = typer.Option(..., "--poses", help="Folder of AMASS-style .npz files (a 'poses' array), "
                               "searched recursively (`dpmesh data convert amass` writes one)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: log.jsonl, checkpoint.pt, pose_decoder/."),
    epochs: int = typer.Option(100, help="Total epochs (raise it with --resume to train further)."),
    batch_size: int = typer.Option(256, help="Frames per step."),
    lr: float = typer.Option(1e-3, help="AdamW learning rate (constant)."),
    seed: int = typer.Option(0, help="Initialisation and batch-order seed."),
    device: str = device_option(),
    log_every: int = typer.Option(50, help="Steps between log.jsonl records."),
    checkpoint_every: int = typer.Option(1000, help="Steps between checkpoints (also at every epoch end)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt exactly."),
    model_config: Optional[Path] = typer.Option(None, "--model-config", help="JSON of PoseDecoderConfig fields "
                                                "(type 'vqvae'); default: DPMesh sizes."),
    zero_hands: bool = typer.Option(False, "--zero-hands", help="Zero SMPL joints 22/23 instead of reading "
                                    "columns 66:72 (those are finger joints in SMPL+H files)."),
    frame_stride: int = typer.Option(1, help="Keep every k-th frame."),
    verbose: int = verbose_option(),
):
    """Pre-train the VQ-VAE pose prior; the result loads as the pose decoder (OUT/pose_decoder)."""
    setup_logging(verbose)
    from ..train.vqvae import vqvae_command

    console.print(vqvae_command(poses, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                                log_every=log_every, checkpoint_every=checkpoint_every, resume=resume,
                                model_config=model_config, zero_hands=zero_hands, frame_stride=frame_stride))


@app.command("dpmesh")
@handle_errors
def train_dpmesh_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="Training configuration JSON "
                                "(`dpmesh train config` writes a template)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: train_config.json, log.jsonl, checkpoints/, "
                             "and one weights folder per stage (teacher/, student/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue exactly from OUT/checkpoints/latest."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", min=1, help="Stop once the run has made "
                                             "this many optimiser steps in all (counted from its start), with a "
                                             "checkpoint there; continue later with --resume (e.g. to fit a "
                                             "job time limit)."),
    device: str = typer.Option("auto", help="auto (GPU when present; the GPUs of `accelerate launch`) or cpu."),
    quiet: bool = quiet_option("No progress bar."),
    verbose: int = verbose_option(),
):
    """Train DPMesh: a teacher on ground-truth keypoints, then a student on noisy keypoints with NKR.

    Several processes / GPUs / machines: accelerate launch [--multi_gpu --num_processes N ...] -m
    dpmesh_infer.cli train dpmesh --config CFG --out DIR (README, "Training and evaluation"). Only the
    main process prints; the others show errors only.
    """
    from ..train.config import TrainConfig
    from ..train.trainer import latest_checkpoint, launcher_rank, train_dpmesh

    main = launcher_rank() == 0
    quiet = quiet or not main
    setup_logging(verbose, quiet)
    if not config.is_file():
        raise InputError(f"training config {config} not found (write a template with `dpmesh train config`)")
    cfg = TrainConfig.load_json(config)
    kw = {"resume": resume, "device": device, "stop_after": stop_after}
    try:
        if quiet:
            result = train_dpmesh(cfg, out, **kw)
        else:
            result = _with_progress(lambda cb: train_dpmesh(cfg, out, progress=cb, **kw))
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Terminated)
        if main:
            last = latest_checkpoint(out)
            err_console.print(f"interrupted; last checkpoint: {last or 'none yet'}. Continue with: "
                              f"dpmesh train dpmesh --config {config} --out {out} --resume", highlight=False,
                              markup=False)
        raise typer.Exit(interrupt_exit_code(e)) from None
    if not main:
        return
    if not result.finished:
        console.print(f"stopped after step {result.steps} (--stop-after); checkpoint: {latest_checkpoint(out)}. "
                      f"Continue with: dpmesh train dpmesh --config {config} --out {out} --resume",
                      highlight=False, markup=False)
        return
    losses = ", ".join(f"{k} {v:.4f}" for k, v in result.last_epoch.items() if k in ("loss", "l2d", "l3d", "lsmpl",
                                                                                    "lnkr"))
    console.print(f"trained {result.steps} steps on {result.persons} persons per epoch; last epoch: {losses}")
    for name, path in result.exports.items():
        console.print(f"  {name}: {path}")
    console.print(f"evaluate with: dpmesh evaluate --weights {result.weights_dir} --data DATASET_DIR")


def _with_progress(run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.fields[loss]}"), console=err_console, transient=False) as bar:
        tasks: dict[tuple[str, int], int] = {}

        def cb(ev: dict) -> None:
            key = (ev["stage"], ev["epoch"])
            if key not in tasks:
                tasks[key] = bar.add_task(f"{ev['stage']} epoch {ev['epoch'] + 1}/{ev['epochs']}",
                                          total=ev["steps_per_epoch"], loss="")
            bar.update(tasks[key], completed=ev["step_in_epoch"], loss=f"loss {ev['loss']:.4f}")

        return run(cb)


@app.command("config")
@handle_errors
def train_config_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the JSON configuration."),
    data: list[str] = typer.Option(..., "--data", help="Training dataset folder(s) in the dpmesh format "
                                   "(`dpmesh data convert ...` / `dpmesh data synthetic`); repeatable."),
    smpl: Optional[str] = typer.Option(None, "--smpl", help="Weights or SMPL folder with SMPL_NEUTRAL.npz. "
                                       "With --tiny and no --smpl, a SYNTHETIC body model is written next to "
                                       "the config (smoke runs only)."),
    tiny: bool = typer.Option(False, "--tiny", help="Tiny random-init models and a short schedule: a smoke run "
                              "of the whole training path in minutes on a CPU. Results are meaningless."),
    sd15: Optional[str] = typer.Option(None, "--sd15", help="Stable Diffusion 1.5, diffusers layout (folder or "
                                       "hub id)."),
    controlnet: Optional[str] = typer.Option(None, "--controlnet", help="OpenPose ControlNet, diffusers layout "
                                             "(folder or hub id); '' = copy the SD1.5 UNet encoder."),
    pose_decoder: Optional[str] = typer.Option(None, "--pose-decoder", help="Pose decoder folder "
                                               "(`dpmesh train vqvae` writes OUT/pose_decoder)."),
    pose_head: str = typer.Option("vqvae", help="vqvae (the paper) or vposer (the release checkpoints)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Fine-tune this dpmesh weights folder (e.g. a "
                                          "converted release checkpoint); it is also the student's teacher."),
    steps_per_epoch: int = typer.Option(0, help="Cap on steps per epoch (0 = all data)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
):
    """Write a complete training configuration (paper defaults) to edit and pass to `dpmesh train dpmesh`."""
    from ..train.config import TrainConfig

    if out.exists() and not overwrite:
        raise InputError(f"{out} exists (pass --overwrite to replace it)")
    if pose_head not in ("vqvae", "vposer"):
        raise InputError("--pose-head must be vqvae or vposer")
    if weights and (tiny or sd15):
        raise InputError("--weights (fine-tuning) cannot be combined with --tiny or --sd15")
    if smpl is None and weights:
        pass  # the weights folder holds smpl/
    elif smpl is None:
        if not tiny:
            raise InputError("--smpl is required: a weights or SMPL folder holding SMPL_NEUTRAL.npz "
                             "(`dpmesh weights import-smpl`)")
        from ..stand_ins.smpl import write_synthetic_h36m_regressor, write_synthetic_smpl_npz

        smpl_dir = out.resolve().parent / (out.stem + "_synthetic_smpl")
        npz = write_synthetic_smpl_npz(smpl_dir)
        write_synthetic_h36m_regressor(npz.parent)
        smpl = str(smpl_dir)
        console.print(f"wrote a SYNTHETIC body model and H36M regressor (not SMPL) for the smoke run: {smpl_dir}")
    from ..train.config import template_config

    d = template_config(data=[str(Path(p).expanduser().resolve()) for p in data], smpl=smpl, tiny=tiny, sd15=sd15,
                        controlnet=controlnet, pose_decoder=pose_decoder, pose_head=pose_head,
                        steps_per_epoch=steps_per_epoch,
                        weights=str(Path(weights).expanduser().resolve()) if weights else None)
    TrainConfig.from_dict(d)  # validate before writing
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out}; train with: dpmesh train dpmesh --config {out} --out RUN_DIR")
