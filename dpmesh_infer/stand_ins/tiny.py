"""Tiny random-init models and weights directories in the real on-disk formats: THE one tiny-model
definition (tests, ``dpmesh selftest``, ``dpmesh train config --tiny``, benchmarks).

The tiny models keep every structural feature of the release model (SD1.5 block layout: 4 down/up
blocks, cross-attention in the first three down and last three up blocks, 8x VAE downsampling, so every
feature tap and attention map exists at the same resolutions; 34-channel ControlNet; LoRA on the same
144 Linears; the full regressor and decoder logic) with small widths, so the real loading and inference
code runs end to end in seconds on a CPU. Their outputs are meaningless: ``pipeline.json`` says
``"untrained": true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from ..models import sd15

_CHANNELS = [32, 32, 64, 64]


class TinyConfigs(NamedTuple):
    """Every config of the tiny model (unpacks like a tuple)."""

    backbone: object  # BackboneConfig
    regressor: object  # RegressorConfig
    pose_decoder: object  # PoseDecoderConfig
    unet: dict
    controlnet: dict
    vae: dict


def tiny_configs(pose_decoder: str = "vposer") -> TinyConfigs:
    """The tiny model's configs (BackboneConfig, RegressorConfig, PoseDecoderConfig, unet, controlnet, vae)."""
    from ..models.backbone import BackboneConfig
    from ..models.pose_decoders import PoseDecoderConfig
    from ..models.regressor import RegressorConfig

    backbone = BackboneConfig(unet_channels=tuple(_CHANNELS), cross_attention_dim=32, merge_channels=128,
                              lora_rank=4, lora_alpha=4)
    regressor = RegressorConfig(in_channels=128, d_model=16, nhead=2, dim_feedforward=32, refine_feedforward=32,
                                pose_head=pose_decoder, vq_tokens=6, vq_classes=16)
    if pose_decoder == "vposer":
        decoder = PoseDecoderConfig(type="vposer", latent_dim=32, hidden_dim=32)
    else:
        decoder = PoseDecoderConfig(type="vqvae", num_tokens=6, codebook_size=16, token_dim=16,
                                    enc_hidden_dim=16, enc_hidden_inter_dim=16, enc_token_inter_dim=8,
                                    enc_num_blocks=1)
    unet = sd15.unet_config()
    unet.update(block_out_channels=list(_CHANNELS), attention_head_dim=2, cross_attention_dim=32, norm_num_groups=8)
    controlnet = sd15.controlnet_config()
    controlnet.update(block_out_channels=list(_CHANNELS), attention_head_dim=2, cross_attention_dim=32,
                      norm_num_groups=8, conditioning_embedding_out_channels=[8, 8, 8, 8])
    vae = sd15.vae_config()
    vae.update(block_out_channels=[8, 8, 16, 16], norm_num_groups=4, layers_per_block=1)
    return TinyConfigs(backbone, regressor, decoder, unet, controlnet, vae)


def build_tiny_backbone(pose_decoder: str = "vposer", *, seed: int = 0, device: str | torch.device = "cpu"):
    """A random-init tiny :class:`~dpmesh_infer.models.backbone.DiffusionBackbone` (LoRA B left at peft's 0)."""
    from ..models.backbone import DiffusionBackbone

    c = tiny_configs(pose_decoder)
    torch.manual_seed(seed)
    return DiffusionBackbone.build(c.backbone, c.unet, c.controlnet, c.vae, device=device)


def _randomise_lora(backbone, generator: torch.Generator) -> None:
    """peft initialises lora_B to zero (LoRA inactive); give it small random values so LoRA matters."""
    for name, p in backbone.unet.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def build_tiny_weights(directory: str | Path, *, seed: int = 0, pose_decoder: str = "vposer",
                       extra_regressor: bool = False) -> Path:
    """Write a complete, untrained weights directory (all components + synthetic SMPL) to ``directory``
    (through ``weights.layout.write_weights_dir``; an existing directory there is replaced)."""
    from ..models.dpmesh import PipelineConfig
    from ..models.pose_decoders import build_pose_decoder, save_pose_decoder
    from ..models.regressor import Regressor, save_regressor
    from ..weights.layout import PIPELINE_CONFIG_NAME, backbone_folders, component_dir, write_weights_dir
    from .smpl import write_synthetic_smpl_npz

    c = tiny_configs(pose_decoder)

    def fill(tmp: Path) -> None:
        backbone = build_tiny_backbone(pose_decoder, seed=seed)
        _randomise_lora(backbone, torch.Generator().manual_seed(seed))
        backbone.save_folders(**backbone_folders(tmp))
        save_regressor(Regressor(c.regressor), component_dir(tmp, "regressor"))
        save_pose_decoder(build_pose_decoder(c.pose_decoder), component_dir(tmp, "pose_decoder"))
        write_synthetic_smpl_npz(tmp, seed=seed, extra_regressor=extra_regressor)
        PipelineConfig(pose_decoder=pose_decoder, source="dpmesh_infer.stand_ins.tiny (random init)",
                       untrained=True).save_json(tmp / PIPELINE_CONFIG_NAME)

    return write_weights_dir(directory, fill)
