"""Stable Diffusion 1.5 component configurations (diffusers ``config.json`` contents), full size and tiny.

These dicts let the package build the exact SD1.5 architectures with no download: full size on the
``meta`` device for shape checks and checkpoint conversion, tiny random-init ones for tests and
``dpmesh selftest``. The tiny configs keep the SD1.5 *structure* (4 down/up blocks, cross-attention in
the first three down and last three up blocks, 8x VAE downsampling) so every feature tap and attention
map of the pipeline exists at the same resolutions; only channel widths shrink.
"""

from __future__ import annotations

import copy
from typing import Any

NUM_JOINTS = 30

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
    "in_channels": 4 + NUM_JOINTS,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
}

_TINY_CHANNELS = [32, 32, 64, 64]


def unet_config(tiny: bool = False) -> dict[str, Any]:
    cfg = copy.deepcopy(SD15_UNET)
    if tiny:
        cfg.update(block_out_channels=list(_TINY_CHANNELS), attention_head_dim=2, cross_attention_dim=32,
                   norm_num_groups=8)
    return cfg


def controlnet_config(tiny: bool = False) -> dict[str, Any]:
    cfg = copy.deepcopy(SD15_CONTROLNET)
    if tiny:
        cfg.update(block_out_channels=list(_TINY_CHANNELS), attention_head_dim=2, cross_attention_dim=32,
                   norm_num_groups=8, conditioning_embedding_out_channels=[8, 8, 8, 8])
    return cfg


def vae_config(tiny: bool = False) -> dict[str, Any]:
    cfg = copy.deepcopy(SD15_VAE)
    if tiny:
        cfg.update(block_out_channels=[8, 8, 16, 16], norm_num_groups=4, layers_per_block=1)
    return cfg
