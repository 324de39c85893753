"""``dpmesh train dpmesh``: the DPMesh training loop (teacher, then student with NKR).

Run on one device with ``dpmesh train dpmesh --config CFG --out DIR``, or on several GPUs / machines
with accelerate (``accelerate launch -m dpmesh_infer.cli train dpmesh --config CFG --out DIR``). The
global batch (``optim.batch_size``) is split over the processes and every loss is reduced over the
whole global batch (:mod:`.losses`), so W processes with b persons each train as one process with W·b
persons, up to floating-point summation order — and up to dropout, whose masks come from each
process's own RNG stream (``RegressorConfig.dropout``, 0.1 by default).

Processes: only the main process (global rank 0) writes into ``OUT`` (configuration, log, checkpoints
with every process's RNG state, exports, TensorBoard); the others read it (configuration check,
checkpoint to resume, the teacher export), so ``OUT`` must be on a filesystem every node sees.

Bookkeeping in ``OUT`` (see :func:`train_dpmesh`):

- ``train_config.json``: the configuration (a resumed run must use the same one);
- ``log.jsonl``: JSON lines — ``{"event": "start"}``, ``{"event": "step", "stage", "epoch", "step",
  "lr", "loss", "l2d", "l3d", "lsmpl", "lnkr", parts..., "samples_per_s"}`` every ``log_every`` steps
  (means over the window of the global-batch losses: every process's share summed),
  ``{"event": "epoch", ...}`` (means over the epoch), ``{"event": "export"}``;
- ``checkpoints/step-NNNNNNNNN/``: ``state.pt`` (trainable weights, optimiser, loss scaler, counters,
  log windows) and ``rng-rank<r>.pt`` (each process's torch RNG, gathered to and written by the main
  process), written into a ``.tmp`` folder and renamed, then ``checkpoints/latest`` is replaced
  atomically: a crash never leaves a half-written checkpoint behind the ``latest`` pointer. All files
  load with ``torch.load(weights_only=True)``. A resumed run needs the same number of processes (each
  takes its own RNG state back; the data position is global);
- ``<stage name>/`` (e.g. ``teacher/``, ``student/``): a complete inference weights directory exported
  at the end of each stage (``Pipeline.from_pretrained`` loads it). The student stage's teacher is
  the previous stage's export (or ``init.weights`` when the first stage is a student).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from ..atomic import replace_dir, write_text
from ..errors import InputError
from ..locks import RunLock
from .checkpoints import load_torch, newest_intact_folder, save_torch, write_manifest
from .config import TrainConfig
from .runlog import append_log, truncate_log

__all__ = ["TrainResult", "train_dpmesh", "latest_checkpoint", "step_loss"]

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
CONFIG_NAME = "train_config.json"
LOG_NAME = "log.jsonl"
CKPT_DIR = "checkpoints"
LATEST = "latest"
LOSS_KEYS = ("loss", "l2d", "l3d", "lsmpl", "lnkr", "l2d_proj", "l2d_joint_img", "l3d_joints", "l3d_depth",
             "lsmpl_pose", "lsmpl_betas", "nkr_simclr", "nkr_mse")


@dataclasses.dataclass
class TrainResult:
    """weights_dir: the last stage's export; exports: stage name -> directory (the stages exported so
    far); steps: optimiser steps; last_epoch: loss means of the last epoch; persons: training persons per
    epoch (after repeats); finished: False when the run stopped early (``stop_after``), with a checkpoint
    to ``resume`` from."""

    weights_dir: Path
    exports: dict[str, Path]
    steps: int
    last_epoch: dict[str, float]
    persons: int
    finished: bool = True


def launcher_rank() -> int:
    """The global rank a launcher (``accelerate launch``, ``torchrun``, SLURM through them) gave this
    process (the ``RANK`` environment variable); 0 outside a multi-process launch."""
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


def _warn_single_cpu_process() -> None:
    """``accelerate launch --cpu --num_processes N`` (no ``--mpirun_hostfile``) starts ONE process: say so."""
    if os.environ.get("WORLD_SIZE") is None and os.environ.get("MASTER_PORT") is not None and \
            os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1"):
        log.warning("accelerate launch --cpu started a single process (its CPU multi-process mode needs "
                    "--mpirun_hostfile); for N CPU processes use `accelerate launch --multi_gpu --num_processes N "
                    "... --device cpu`")


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The checkpoint folder to resume from: the one ``checkpoints/latest`` names when it is intact (every
    file matches its manifest), else the newest intact one (with a warning naming the broken ones); None
    when the run has no checkpoint.

    Raises:
        CheckpointError: checkpoints exist but none is intact.
    """
    return newest_intact_folder(Path(out_dir) / CKPT_DIR, pointer=LATEST, required=("state.pt",))


class _Window:
    """Running sums of the logged losses."""

    def __init__(self, state: dict | None = None) -> None:
        self.sums: dict[str, float] = dict(state["sums"]) if state else {}
        self.n = int(state["n"]) if state else 0
        self.samples = int(state["samples"]) if state else 0

    def add(self, values: dict[str, float], samples: int) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1
        self.samples += samples

    def means(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}

    def state(self) -> dict:
        return {"sums": dict(self.sums), "n": self.n, "samples": self.samples}


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}")
    return out


def _teacher_source(config: TrainConfig, out: Path, stage_index: int) -> Path:
    for prev in range(stage_index - 1, -1, -1):
        if config.stages[prev].name == "teacher":
            return out / _stage_export_name(config, prev)
    return Path(config.init.weights).expanduser()


def _set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _stage_export_name(config: TrainConfig, i: int) -> str:
    names = [s.name for s in config.stages]
    return names[i] if names.count(names[i]) == 1 else f"{names[i]}{names[:i + 1].count(names[i])}"


def train_dpmesh(config: TrainConfig, out_dir: str | Path, **kwargs) -> TrainResult:
    """Train DPMesh as ``config`` says and export every stage into ``out_dir`` (arguments of
    :func:`_train_dpmesh`), holding the run directory's lock (:mod:`dpmesh_infer.locks`; the global rank-0
    process of a multi-process run takes it), so two runs never write into one directory.

    Raises:
        OutputConflictError: another run is using ``out_dir``.
    """
    if launcher_rank() != 0:
        return _train_dpmesh(config, out_dir, **kwargs)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir):
        return _train_dpmesh(config, out_dir, **kwargs)


def _train_dpmesh(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, device: str = "auto",
                 progress: Callable[[dict], None] | None = None,
                 on_step: Callable[[int], None] | None = None, stop_after: int | None = None) -> TrainResult:
    """Train DPMesh as ``config`` says and export every stage into ``out_dir``.

    Args:
        config: the training configuration.
        out_dir: run directory (module docstring). Created if needed.
        resume: continue from ``checkpoints/latest`` exactly (weights, optimiser, loss scaler, RNG,
            position in the data, log windows). Without it a run directory that already holds a run is
            an error, so nothing is overwritten by accident.
        device: "auto" (accelerate's choice: the process's GPU if any), or "cpu".
        progress: called after every optimiser step with {"stage", "epoch", "epochs", "step_in_epoch",
            "steps_per_epoch", "global_step", "loss"} (main process only).
        on_step: called with the global step after every optimiser step and checkpoint (tests use it to
            interrupt a run).
        stop_after: stop once the run (counted from its start, not from this resume) has made this many
            optimiser steps, with a checkpoint there (``finished`` is False); ``resume`` continues it
            exactly. None: train to the end.

    Raises:
        InputError: bad configuration, data, or a run directory that does not match.
        WeightsError: an initial weight source cannot be loaded.
        FloatingPointError: the loss became NaN/inf (the message says where; lower the learning rate).
    """
    from accelerate import Accelerator
    from accelerate.utils import gather_object

    from .data import PersonIndex, TrainSamples, collate_samples, step_batches, steps_per_epoch
    from .model import build_model, export_weights, load_teacher

    if stop_after is not None and stop_after < 1:
        raise InputError(f"stop_after must be >= 1 (got {stop_after})")
    if device not in ("auto", "cpu"):
        raise InputError(f"device must be 'auto' or 'cpu' (got {device!r}); choose GPUs with accelerate launch "
                         "or CUDA_VISIBLE_DEVICES")
    _warn_single_cpu_process()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=(device == "cpu"))
    if config.mixed_precision != "no" and accelerator.device.type != "cuda":
        raise InputError(f"mixed_precision {config.mixed_precision!r} needs a CUDA device; use \"no\" on the CPU")
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    opt = config.optim
    if opt.batch_size % (world * opt.grad_accumulation):
        raise InputError(f"optim.batch_size {opt.batch_size} must be divisible by the number of processes ({world}) "
                         f"times optim.grad_accumulation ({opt.grad_accumulation})")

    out = Path(out_dir)
    if main:
        out.mkdir(parents=True, exist_ok=True)
    cfg_path, log_path = out / CONFIG_NAME, out / LOG_NAME
    ckpt = None
    if cfg_path.exists():
        if not resume:
            raise InputError(f"{out} already holds a training run ({cfg_path}); pass --resume to continue it "
                             "or choose another --out")
        saved = json.loads(cfg_path.read_text(encoding="utf-8"))
        diff = _config_diff(saved, config.to_dict())
        if diff:
            raise InputError(f"{cfg_path} differs from the given configuration in: {', '.join(diff)}; resume with "
                             "the original configuration or choose another --out")
        ckpt = latest_checkpoint(out)

    torch.manual_seed(config.seed * 1000 + rank)
    model, source = build_model(config.init, seed=config.seed)
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    params = model.set_trainable(config.train_controlnet)
    smpl_source = Path(config.init.smpl or config.init.weights).expanduser()

    validator = _Validator(config, smpl_source) if config.data.val is not None else None
    index = PersonIndex(config.data.train, model.preprocess)
    samples = TrainSamples(index, config.augment, model.preprocess)
    n = len(index)
    if n < opt.batch_size:
        raise InputError(f"the training data holds {n} usable persons, fewer than one batch ({opt.batch_size})")
    micro = opt.grad_accumulation
    # every process has checked OUT (above) before the main process writes into it
    accelerator.wait_for_everyone()
    if main and not cfg_path.exists():  # written once model and data are known to load
        write_text(cfg_path, json.dumps(config.to_dict(), indent=2) + "\n")

    counters = {"stage": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0}
    state = None
    if ckpt is not None:
        state = load_torch(ckpt / "state.pt")
        if state.get("version") != CHECKPOINT_VERSION or state.get("world") != world:
            raise InputError(f"{ckpt} was written by {state.get('world')} process(es) (version "
                             f"{state.get('version')}); resume with the same number of processes")
        expected = set(model.trainable_state())
        if set(state["model"]) != expected:
            raise InputError(f"{ckpt} does not match the model: {len(set(state['model']) ^ expected)} trainable "
                             "tensors differ")
        model.load_state_dict(state["model"], strict=False)
        counters = dict(state["counters"])
        if main:
            truncate_log(log_path, counters["global_step"])
        log.info("resuming from %s at step %d", ckpt, counters["global_step"])
    elif main:
        if log_path.exists():
            log_path.unlink()
        append_log(log_path, {"event": "start", "source": source, "persons": n, "skipped": index.skipped,
                               "processes": world, "device": str(accelerator.device)})

    model = accelerator.prepare_model(model)
    raw = accelerator.unwrap_model(model)
    tb = _tensorboard(out) if (config.tensorboard and main) else None
    last_epoch: dict[str, float] = {}

    for s in range(counters["stage"], len(config.stages)):
        stage = config.stages[s]
        export_name = _stage_export_name(config, s)
        teacher = None
        if stage.name == "student":
            teacher = load_teacher(_teacher_source(config, out, s), accelerator.device)
        optimizer = torch.optim.AdamW(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay)
        optimizer = accelerator.prepare_optimizer(optimizer)
        window, epoch_win = _Window(), _Window()
        # every stage starts from its own RNG state, whatever happened before (loading, exporting)
        torch.manual_seed(_stage_seed(config.seed, s, rank))
        if state is not None and counters["stage"] == s:
            optimizer.load_state_dict(state["optimizer"])
            if accelerator.scaler is not None and state.get("scaler"):
                accelerator.scaler.load_state_dict(state["scaler"])
            window, epoch_win = _Window(state["window"]), _Window(state["epoch_window"])
            rng = load_torch(ckpt / f"rng-rank{rank}.pt")
            torch.set_rng_state(rng["cpu"])
            if rng.get("cuda") is not None and accelerator.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], accelerator.device)
        spe = steps_per_epoch(n, opt.batch_size, stage.max_steps_per_epoch)

        def save_checkpoint() -> Path:
            name = f"step-{counters['global_step']:09d}-s{counters['stage']}e{counters['epoch']}"
            final = out / CKPT_DIR / name
            tmp = final.with_name(name + ".tmp")
            rng = {"cpu": torch.get_rng_state(),
                   "cuda": torch.cuda.get_rng_state(accelerator.device) if accelerator.device.type == "cuda" else None}
            rngs = gather_object([rng]) if world > 1 else [rng]  # every process's, in rank order
            if main:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
                for r, rng_r in enumerate(rngs):
                    save_torch(rng_r, tmp / f"rng-rank{r}.pt")
                payload = {"version": CHECKPOINT_VERSION, "world": world, "counters": dict(counters),
                           "model": {k: v.cpu() for k, v in raw.trainable_state().items()},
                           "optimizer": optimizer.state_dict(),
                           "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                           "window": window.state(), "epoch_window": epoch_win.state()}
                save_torch(payload, tmp / "state.pt")
                write_manifest(tmp)  # checksums of every rank's files: resume verifies them
                replace_dir(tmp, final)
                write_text(out / CKPT_DIR / LATEST, name + "\n")
                kept = sorted((p for p in (out / CKPT_DIR).iterdir() if p.is_dir() and p.name.startswith("step-")
                               and not p.name.endswith(".tmp")), key=lambda p: p.name)
                for old in kept[:-config.keep_checkpoints]:
                    shutil.rmtree(old, ignore_errors=True)
            accelerator.wait_for_everyone()  # the checkpoint is complete before any process goes on
            return final

        def stopped() -> TrainResult:
            log.info("stopped after step %d (stop_after); continue with resume", counters["global_step"])
            return _result(config, out, counters["global_step"], last_epoch, n, finished=False)

        while counters["epoch"] < stage.epochs:
            epoch = counters["epoch"]
            lr = opt.lr if epoch < stage.epochs - stage.final_lr_epochs else opt.lr_final
            _set_lr(optimizer, lr)
            model.train()
            batches = step_batches(n, seed=config.seed, stage=s, epoch=epoch, batch_size=opt.batch_size,
                                   rank=rank, world=world, micro_batches=micro,
                                   start_step=counters["step_in_epoch"], max_steps=stage.max_steps_per_epoch)
            loader = torch.utils.data.DataLoader(
                samples, batch_sampler=[mb for step in batches for mb in step], num_workers=config.data.num_workers,
                collate_fn=collate_samples, pin_memory=accelerator.device.type == "cuda",
                persistent_workers=False, generator=torch.Generator().manual_seed(0))  # keeps the global RNG
            it = iter(loader)
            t0 = time.perf_counter()
            while counters["step_in_epoch"] < spe:
                if stop_after is not None and counters["global_step"] >= stop_after:
                    return stopped()  # resumed at or past stop_after: no further step
                micro_batches = [{k: v.to(accelerator.device, non_blocking=True) for k, v in next(it).items()}
                                 for _ in range(micro)]
                reduction = _step_reduction(accelerator, micro_batches)
                sums: dict[str, torch.Tensor] = {}
                for m, batch in enumerate(micro_batches):
                    sync = accelerator.no_sync(model) if m < micro - 1 else contextlib.nullcontext()
                    with sync:
                        loss, parts = step_loss(model, raw.body, teacher, batch, config.loss, accelerator.autocast,
                                                reduction=reduction)
                        accelerator.backward(loss)
                    for k, v in parts.items():
                        sums[k] = sums[k] + v if k in sums else v
                values = _global_values(accelerator, sums)  # the step's losses over every process
                if not math.isfinite(values["loss"]):
                    raise FloatingPointError(
                        f"non-finite loss at stage {stage.name}, epoch {epoch}, step {counters['global_step']} "
                        f"({ {k: round(v, 4) for k, v in values.items()} }); lower optim.lr (now {lr})")
                if opt.grad_clip > 0:
                    accelerator.clip_grad_norm_(params, opt.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                counters["step_in_epoch"] += 1
                counters["global_step"] += 1
                window.add(values, opt.batch_size)
                epoch_win.add(values, opt.batch_size)
                if counters["global_step"] % config.log_every == 0:
                    dt = time.perf_counter() - t0
                    if main:
                        rec = {"event": "step", "stage": stage.name, "epoch": epoch, "step": counters["global_step"],
                               "lr": lr, **window.means(), "samples_per_s": window.samples / max(dt, 1e-9)}
                        append_log(log_path, rec)
                        if tb is not None:
                            for k, v in window.means().items():
                                tb.add_scalar(f"{stage.name}/{k}", v, counters["global_step"])
                    window, t0 = _Window(), time.perf_counter()
                if main and progress is not None:
                    progress({"stage": stage.name, "epoch": epoch, "epochs": stage.epochs,
                              "step_in_epoch": counters["step_in_epoch"], "steps_per_epoch": spe,
                              "global_step": counters["global_step"], "loss": values["loss"]})
                if counters["global_step"] % config.checkpoint_every == 0 and counters["step_in_epoch"] < spe:
                    save_checkpoint()
                if on_step is not None:
                    on_step(counters["global_step"])
                if stop_after is not None and counters["global_step"] >= stop_after:
                    if counters["global_step"] % config.checkpoint_every != 0 or counters["step_in_epoch"] == spe:
                        save_checkpoint()
                    return stopped()
            del it, loader
            last_epoch = epoch_win.means()
            if main:
                append_log(log_path, {"event": "epoch", "stage": stage.name, "epoch": epoch,
                                       "step": counters["global_step"], "lr": lr, **last_epoch})
            counters["epoch"] += 1
            counters["step_in_epoch"] = 0
            epoch_win = _Window()
            if validator is not None and (counters["epoch"] % config.eval_every_epochs == 0
                                          or counters["epoch"] == stage.epochs):
                if main:
                    rows = validator(raw, accelerator.device)
                    append_log(log_path, {"event": "eval", "stage": stage.name, "epoch": epoch,
                                          "step": counters["global_step"], "rows": rows})
                    if tb is not None:
                        for row in rows:
                            for k in ("mpjpe", "pa_mpjpe", "mpve"):
                                if row[k] is not None:
                                    tb.add_scalar(f"eval/{row['split']}/{row['subset'] or 'all'}/{k}", row[k],
                                                  counters["global_step"])
                accelerator.wait_for_everyone()
            save_checkpoint()

        if main:
            path = export_weights(raw, out / export_name, smpl_source=smpl_source,
                                  source=f"dpmesh train: {source}; stage {export_name}, {counters['global_step']} "
                                         "steps", untrained=config.init.tiny)
            append_log(log_path, {"event": "export", "stage": stage.name, "step": counters["global_step"],
                                   "path": str(path)})
        accelerator.wait_for_everyone()
        counters.update(stage=s + 1, epoch=0, step_in_epoch=0)
        state = None
        save_checkpoint()
        del teacher
    if tb is not None:
        tb.close()
    return _result(config, out, counters["global_step"], last_epoch, n, finished=True)


def _result(config: TrainConfig, out: Path, steps: int, last_epoch: dict[str, float], persons: int, *,
            finished: bool) -> TrainResult:
    names = [_stage_export_name(config, i) for i in range(len(config.stages))]
    exports = {name: out / name for name in names if finished or (out / name).is_dir()}
    return TrainResult(weights_dir=out / names[-1], exports=exports, steps=steps, last_epoch=last_epoch,
                       persons=persons, finished=finished)


@dataclasses.dataclass(frozen=True)
class StepReduction:
    """How this process's micro-batch losses add up to the losses of the whole optimiser step.

    denominators: part name -> weight sum of the step's global batch (every micro-batch of every
    process; :func:`~.losses.supervised_weights`); processes, micro_batches: W and M; gather: this
    process's (b, C) tensor -> every process's (W·b, C) in rank order, gradient kept on this process's
    rows (None for one process).
    """

    denominators: dict[str, torch.Tensor]
    processes: int = 1
    micro_batches: int = 1
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None


def _step_reduction(accelerator, micro_batches: list[dict[str, torch.Tensor]]) -> StepReduction:
    from .losses import supervised_weights

    sums: dict[str, torch.Tensor] = {}
    for batch in micro_batches:
        for k, w in supervised_weights(batch).items():
            sums[k] = sums[k] + w.sum() if k in sums else w.sum()
    keys = sorted(sums)
    vec = torch.stack([sums[k] for k in keys])
    world = accelerator.num_processes
    gather = None
    if world > 1:
        vec = accelerator.reduce(vec, reduction="sum")
        rank = accelerator.process_index

        def gather(x: torch.Tensor) -> torch.Tensor:
            parts = list(accelerator.gather(x.detach().contiguous()).chunk(world))
            parts[rank] = x
            return torch.cat(parts)
    return StepReduction(denominators=dict(zip(keys, vec)), processes=world, micro_batches=len(micro_batches),
                         gather=gather)


def _global_values(accelerator, sums: dict[str, torch.Tensor]) -> dict[str, float]:
    """The step's loss values: this process's shares summed over every process."""
    keys = sorted(sums)
    vec = torch.stack([sums[k].float() for k in keys])
    if accelerator.num_processes > 1:
        vec = accelerator.reduce(vec, reduction="sum")
    return dict(zip(keys, vec.tolist()))


def _stage_seed(seed: int, stage: int, rank: int) -> int:
    from .data import mix_seed

    return mix_seed(seed, stage, rank, 0x57A6E)


def step_loss(model, body, teacher, batch: dict[str, torch.Tensor], lc, autocast=None, *,
              reduction: StepReduction | None = None):
    """Forward one micro-batch; returns (loss to backpropagate, {name: detached scalar}).

    model: the (possibly DDP-wrapped) student; body: the SMPL body (GT joints for samples with SMPL but no
    3D joints); teacher: the frozen NKR teacher, or None in a teacher stage (then the clean inputs are
    used and there is no NKR term); lc: :class:`~.config.LossConfig`; autocast: the accelerator's
    mixed-precision context factory (the prepared student applies it itself; the teacher needs it).

    reduction: None — the loss and its parts are means over this batch. Given — the parts are this
    micro-batch's *shares* of the step's global-batch losses (summed over every micro-batch and process
    they give them), and the returned loss is scaled so that DDP's gradient average over W processes,
    summed over the micro-batches, is the gradient of the global-batch loss (W x the share; the SimCLR
    term, computed in full by every process with the gradient on its own rows, enters as 1/M of it).
    """
    from .losses import nkr_terms, supervised_losses

    student = teacher is not None
    prefix = "student" if student else "teacher"
    out = model(batch[f"img_{prefix}"], batch[f"joints32_{prefix}"], batch[f"mask_{prefix}"], batch["focal"])
    with torch.no_grad():
        gt = body(batch["smpl_pose"][:, :3], batch["smpl_pose"][:, 3:], batch["smpl_betas"])
        gt_joints = gt.joints - gt.joints[:, :1]
    W, M = (reduction.processes, reduction.micro_batches) if reduction is not None else (1, 1)
    terms = supervised_losses(out, batch, gt_joints, reduction.denominators if reduction is not None else None)
    loss = lc.w_2d * terms["l2d"] + lc.w_3d * terms["l3d"] + lc.w_smpl * terms["lsmpl"]
    parts = {k: v.detach() for k, v in terms.items()}
    backward = W * loss
    if student:
        with torch.no_grad(), (autocast() if autocast is not None else contextlib.nullcontext()):
            target = teacher(batch["img_teacher"], batch["joints32_teacher"], batch["mask_teacher"],
                             batch["focal"]).features
        sim, mse = nkr_terms(out.features, target, lc.simclr_temperature,
                             gather=reduction.gather if reduction is not None else None,
                             mse_count=out.features.numel() * W * M)
        backward = backward + lc.w_nkr * (W * mse + W * sim / M)
        sim_share, mse_share = sim.detach() / (W * M), mse.detach()
        lnkr = sim_share + mse_share
        loss = loss + lc.w_nkr * lnkr
        parts.update(lnkr=lnkr, nkr_simclr=sim_share, nkr_mse=mse_share)
    parts["loss"] = loss.detach()
    return backward, parts


class _Validator:
    """Scores the model in training on ``config.data.val`` (rows of :func:`~dpmesh_infer.evaluate.evaluate_dataset`)."""

    def __init__(self, config: TrainConfig, smpl_source: Path) -> None:
        from ..data.format import Dataset
        from ..evaluate import load_h36m_regressor
        from ..weights.layout import H36M_REGRESSOR_FILE
        from ..weights.smpl import find_smpl_file

        smpl_dir = find_smpl_file(smpl_source).parent
        path = config.data.h36m_regressor or smpl_dir / H36M_REGRESSOR_FILE
        self.regressor, self.regressor_source, _ = load_h36m_regressor(Path(path).expanduser(), smpl_dir.parent)
        self.dataset = Dataset(Path(config.data.val.path).expanduser())
        self.split = config.data.val.split
        self.dataset.records(self.split)  # fail now, not after the first epoch

    def __call__(self, model, device) -> list[dict]:
        from ..evaluate import evaluate_dataset
        from ..models.dpmesh import PipelineConfig
        from ..pipeline import Pipeline

        view = Pipeline(config=PipelineConfig(pose_decoder=model.pose_decoder.config.type,
                                              preprocess=model.preprocess, focal_per_image=model.focal_per_image),
                        backbone=model.backbone, regressor=model.regressor, pose_decoder=model.pose_decoder,
                        body=model.body, device=device, dtype=torch.float32)
        report = evaluate_dataset(view, self.dataset, splits=[self.split], inputs="auto",
                                  h36m_regressor=self.regressor, gt_bodies={"neutral": model.body},
                                  allow_neutral_gt=True)
        return [row.to_dict() for row in report.rows]


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install tensorboard); logging to log.jsonl only")
        return None
    return SummaryWriter(str(out / "tensorboard"))
