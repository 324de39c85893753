"""Configuration of ``dpmesh train dpmesh`` (one JSON file, strict: unknown keys are errors).

Defaults are the paper's recipe (ARCHITECTURE §9): teacher 10 epochs with ground-truth keypoints,
student 30 epochs with noisy keypoints and the NKR loss; AdamW, batch 16, weight decay 1e-6,
lr 1e-4 then 1e-5 for the last 5 epochs of each stage; loss weights 5 / 2 / 1 / 0.1.

Minimal file (everything else defaults)::

    {"data": {"train": [{"path": "/data/dpmesh/coco"}, {"path": "/data/dpmesh/h36m", "repeat": 2}]},
     "init": {"sd15": "runwayml/stable-diffusion-v1-5",
              "controlnet": "lllyasviel/sd-controlnet-openpose",
              "pose_decoder": "runs/vqvae/pose_decoder", "smpl": "~/.cache/dpmesh/weights"}}

Write a complete, commented default with ``dpmesh train config --out train.json``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..config import ConfigBase
from ..errors import ConfigError
from .augment import AugmentConfig

__all__ = ["DatasetSpec", "DataConfig", "InitConfig", "StageConfig", "OptimConfig", "LossConfig", "TrainConfig",
           "template_config"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec(ConfigBase):
    """One training dataset in the dpmesh-dataset format (``dpmesh data convert ...``).

    path: dataset directory; split: which split to read; repeat: how many times each of its persons
    appears per epoch (mixing 2D and 3D sets, as upstream balances them).
    """

    path: str
    split: str = "train"
    repeat: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.repeat, int) or self.repeat < 1:
            raise ConfigError(f"data.train[].repeat must be a positive integer, got {self.repeat!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig(ConfigBase):
    """train: datasets concatenated into one epoch; num_workers: DataLoader workers per process.

    val: an evaluation set (GT SMPL needed) scored with MPJPE / PA-MPJPE / MPVE every
    ``eval_every_epochs`` epochs and at the end of each stage, logged as ``eval`` records (GT meshes use
    the neutral body). h36m_regressor: ``J_regressor_h36m_correct.npy`` (17×6890) for those metrics;
    default ``J_regressor_h36m.npy`` beside the training SMPL file.
    """

    train: tuple[DatasetSpec, ...] = ()
    num_workers: int = 4
    val: DatasetSpec | None = None
    h36m_regressor: str | None = None

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ConfigError("data.num_workers must be >= 0")


@dataclasses.dataclass(frozen=True)
class InitConfig(ConfigBase):
    """Where the starting weights come from (exactly one source of the backbone).

    - ``weights``: a complete dpmesh weights directory (e.g. a converted release checkpoint, or an
      earlier run's export): every component starts from it (fine-tuning).
    - ``sd15`` (+ optional ``controlnet``): Stable Diffusion 1.5 in diffusers layout, a local folder or a
      hub id (``unet/`` and ``vae/`` subfolders) and an OpenPose ControlNet in diffusers layout. Without
      ``controlnet`` the ControlNet is copied from the SD1.5 UNet encoder (``ControlNetModel.from_unet``).
      The ControlNet's first conv gets 30 extra zero-initialised input channels for the heatmaps and
      its hint block is dropped (DPMesh feeds cat(latent, heatmaps)); LoRA starts as peft's identity
      (B = 0); the merge convs, joint tokens and regressor start from random init (``seed``).
    - ``tiny``: small random-init models (tests and smoke runs only; results are meaningless).

    ``pose_decoder``: a pose-decoder directory (``dpmesh train vqvae`` writes ``OUT/pose_decoder``);
    required unless ``weights`` or ``tiny`` provides one. ``pose_head`` must match its type.
    ``smpl``: a weights directory or SMPL folder with ``SMPL_NEUTRAL.npz`` (``dpmesh weights import-smpl``).
    """

    weights: str | None = None
    sd15: str | None = None
    controlnet: str | None = None
    tiny: bool = False
    pose_decoder: str | None = None
    pose_head: Literal["vqvae", "vposer"] = "vqvae"
    smpl: str | None = None

    def __post_init__(self) -> None:
        sources = [n for n, v in (("weights", self.weights), ("sd15", self.sd15), ("tiny", self.tiny)) if v]
        if len(sources) != 1:
            raise ConfigError("init: set exactly one of 'weights' (a dpmesh weights directory), 'sd15' "
                              f"(Stable Diffusion 1.5, diffusers layout) or 'tiny' (tests); got {sources or 'none'}")
        if self.controlnet and not self.sd15:
            raise ConfigError("init.controlnet is used only with init.sd15")
        if self.sd15 and not self.pose_decoder:
            raise ConfigError("init.sd15 needs init.pose_decoder (train one with `dpmesh train vqvae`)")
        if not self.weights and not self.smpl:
            raise ConfigError("init.smpl must name a weights directory or SMPL folder holding SMPL_NEUTRAL.npz "
                              "(`dpmesh weights import-smpl`)")


@dataclasses.dataclass(frozen=True)
class StageConfig(ConfigBase):
    """One training stage.

    name: "teacher" (ground-truth keypoints, clean crops, no NKR) or "student" (noisy keypoints,
    occluded crops, NKR towards the frozen teacher, which is the previous stage's result).
    epochs: epochs of this stage; final_lr_epochs: how many of the last epochs use ``optim.lr_final``;
    max_steps_per_epoch: cap (0 = the whole data) — for smoke runs.
    """

    name: Literal["teacher", "student"]
    epochs: int
    final_lr_epochs: int = 5
    max_steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.final_lr_epochs < 0 or self.max_steps_per_epoch < 0:
            raise ConfigError(f"stage {self.name}: epochs must be >= 1, final_lr_epochs and "
                              "max_steps_per_epoch >= 0")


@dataclasses.dataclass(frozen=True)
class OptimConfig(ConfigBase):
    """AdamW over the trainable parameters (LoRA, ControlNet, merge convs, joint tokens, regressor).

    batch_size is the global batch (all processes together; must divide by the number of processes
    times grad_accumulation). grad_clip: max gradient norm (0 = off).
    """

    batch_size: int = 16
    lr: float = 1e-4
    lr_final: float = 1e-5
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 10.0
    grad_accumulation: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ConfigError("optim.batch_size and optim.grad_accumulation must be >= 1")
        if not (self.lr > 0 and self.lr_final > 0) or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("optim: lr and lr_final must be > 0, weight_decay and grad_clip >= 0")


@dataclasses.dataclass(frozen=True)
class LossConfig(ConfigBase):
    """L = w_2d·L2D + w_3d·L3D + w_smpl·LSMPL + w_nkr·LNKR (see :mod:`dpmesh_infer.train.losses`)."""

    w_2d: float = 5.0
    w_3d: float = 2.0
    w_smpl: float = 1.0
    w_nkr: float = 0.1
    simclr_temperature: float = 0.1

    def __post_init__(self) -> None:
        if min(self.w_2d, self.w_3d, self.w_smpl, self.w_nkr) < 0 or self.simclr_temperature <= 0:
            raise ConfigError("loss weights must be >= 0 and simclr_temperature > 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """Everything ``dpmesh train dpmesh`` needs; saved as ``OUT/train_config.json``.

    train_controlnet: the paper trains the ControlNet (the upstream release froze it).
    mixed_precision: "no", "fp16" or "bf16" (accelerate autocast; CUDA only — "no" on CPU).
    gradient_checkpointing: recompute UNet/ControlNet activations in backward (less memory).
    checkpoint_every: optimiser steps between checkpoints (also at every epoch end);
    eval_every_epochs: epochs between evaluations on ``data.val`` (and at every stage end);
    keep_checkpoints: how many recent checkpoints to keep; log_every: steps per log.jsonl record;
    tensorboard: also write TensorBoard events (if the tensorboard package is installed).
    """

    data: DataConfig
    init: InitConfig
    stages: tuple[StageConfig, ...] = (StageConfig(name="teacher", epochs=10),
                                       StageConfig(name="student", epochs=30))
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    augment: AugmentConfig = AugmentConfig()
    train_controlnet: bool = True
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 20
    tensorboard: bool = False
    eval_every_epochs: int = 1

    def __post_init__(self) -> None:
        if not self.data.train:
            raise ConfigError("data.train must list at least one dataset")
        if not self.stages:
            raise ConfigError("stages must not be empty")
        names = [s.name for s in self.stages]
        if "student" in names and names.index("student") == 0 and not self.init.weights:
            raise ConfigError("a student stage needs a teacher: put a 'teacher' stage first, or start from "
                              "trained weights (init.weights) which then serve as the teacher")
        if min(self.checkpoint_every, self.keep_checkpoints, self.log_every, self.eval_every_epochs) < 1:
            raise ConfigError("checkpoint_every, keep_checkpoints, log_every and eval_every_epochs must be >= 1")


def template_config(*, data: list[str], smpl: str | None, tiny: bool, sd15: str | None, controlnet: str | None,
                    pose_decoder: str | None, pose_head: str, steps_per_epoch: int = 0,
                    weights: str | None = None) -> dict:
    """A training configuration as a JSON-able dict (every field present, paper defaults).

    ``weights``: fine-tune an existing weights folder (e.g. a converted release checkpoint): it is the
    student's initialisation and its teacher, so the template has only a student stage.
    """
    from ..train.config import DataConfig, DatasetSpec, InitConfig, OptimConfig, StageConfig, TrainConfig

    if weights:
        from ..weights.layout import load_pipeline_config

        head = load_pipeline_config(weights).pose_decoder
        init = InitConfig(weights=weights, smpl=smpl, pose_head=head)
        stages = (StageConfig(name="student", epochs=30, max_steps_per_epoch=steps_per_epoch),)
        return TrainConfig(data=DataConfig(train=tuple(DatasetSpec(path=d) for d in data)), init=init,
                           stages=stages).to_dict()

    if tiny:
        init = InitConfig(tiny=True, smpl=smpl, pose_head=pose_head, pose_decoder=pose_decoder)
        stages = (StageConfig(name="teacher", epochs=2, final_lr_epochs=1, max_steps_per_epoch=steps_per_epoch),
                  StageConfig(name="student", epochs=2, final_lr_epochs=1, max_steps_per_epoch=steps_per_epoch))
        return TrainConfig(data=DataConfig(train=tuple(DatasetSpec(path=d) for d in data), num_workers=0),
                           init=init, stages=stages, optim=OptimConfig(batch_size=4, lr=1e-3, lr_final=1e-4),
                           checkpoint_every=50, log_every=5).to_dict()
    init = InitConfig(sd15=sd15 or "runwayml/stable-diffusion-v1-5",
                      controlnet=controlnet if controlnet is not None else "lllyasviel/sd-controlnet-openpose",
                      pose_decoder=pose_decoder or "runs/vqvae/pose_decoder", pose_head=pose_head, smpl=smpl)
    stages = (StageConfig(name="teacher", epochs=10, max_steps_per_epoch=steps_per_epoch),
              StageConfig(name="student", epochs=30, max_steps_per_epoch=steps_per_epoch))
    return TrainConfig(data=DataConfig(train=tuple(DatasetSpec(path=d) for d in data)), init=init,
                       stages=stages).to_dict()
