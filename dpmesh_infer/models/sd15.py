"""Stable Diffusion 1.5 component configurations (diffusers ``config.json`` contents).

These dicts let the package build the exact SD1.5 architectures with no download: full size on the
``meta`` device for shape checks and checkpoint conversion. The tiny random-init variants for tests,
``dpmesh selftest`` and smoke training are defined once, in :mod:`dpmesh_infer.stand_ins.tiny`.
"""

from __future__ import annotations

import copy
from typing import Any

from ..geometry.joints import J30_NAMES

SD15_UNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 32,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# ControlNet: the UNet's encoder half. DPMesh feeds cat(latent 4, heatmaps 30) = 34 channels to conv_in
# and has no hint (conditioning-embedding) block; see backbone.py for how that block is removed.
SD15_CONTROLNET: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4 + len(J30_NAMES),
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
}

def unet_config() -> dict[str, Any]:
    """The SD1.5 UNet2DConditionModel config (a fresh copy)."""
    return copy.deepcopy(SD15_UNET)


def controlnet_config(num_joints: int = len(J30_NAMES)) -> dict[str, Any]:
    """DPMesh's ControlNetModel config: the SD1.5 encoder half with 4 + ``num_joints`` input channels."""
    cfg = copy.deepcopy(SD15_CONTROLNET)
    cfg["in_channels"] = SD15_UNET["in_channels"] + num_joints
    return cfg


def vae_config() -> dict[str, Any]:
    """The SD1.5 AutoencoderKL config (a fresh copy)."""
    return copy.deepcopy(SD15_VAE)
