"""Tiny random-init weights directories in the real on-disk format (tests, ``dpmesh selftest``).

The tiny models keep every structural feature of the release model (SD1.5 block layout, 34-channel
ControlNet, LoRA on the same 144 Linears, the full regressor and decoder logic) with small widths, so
the real loading and inference code runs end to end in seconds on a CPU. Their outputs are
meaningless: ``pipeline.json`` says ``"untrained": true``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models import sd15


def tiny_configs(pose_decoder: str = "vposer"):
    """(BackboneConfig, RegressorConfig, PoseDecoderConfig, unet, controlnet, vae dicts) of the tiny model."""
    from ..models.backbone import BackboneConfig
    from ..models.pose_decoders import PoseDecoderConfig
    from ..models.regressor import RegressorConfig

    backbone = BackboneConfig(unet_channels=(32, 32, 64, 64), cross_attention_dim=32, merge_channels=128,
                              lora_rank=4, lora_alpha=4)
    regressor = RegressorConfig(in_channels=128, d_model=16, nhead=2, dim_feedforward=32, refine_feedforward=32,
                                pose_head=pose_decoder, vq_tokens=6, vq_classes=16)
    if pose_decoder == "vposer":
        decoder = PoseDecoderConfig(type="vposer", latent_dim=32, hidden_dim=32)
    else:
        decoder = PoseDecoderConfig(type="vqvae", num_tokens=6, codebook_size=16, token_dim=16,
                                    enc_hidden_dim=16, enc_hidden_inter_dim=16, enc_token_inter_dim=8,
                                    enc_num_blocks=1)
    return (backbone, regressor, decoder, sd15.unet_config(tiny=True), sd15.controlnet_config(tiny=True),
            sd15.vae_config(tiny=True))


def _randomise_lora(backbone, generator: torch.Generator) -> None:
    """peft initialises lora_B to zero (LoRA inactive); give it small random values so LoRA matters."""
    for name, p in backbone.unet.named_parameters():
        if "lora_B" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)


def build_tiny_weights(directory: str | Path, *, seed: int = 0, pose_decoder: str = "vposer",
                       extra_regressor: bool = False) -> Path:
    """Write a complete, untrained weights directory (all components + synthetic SMPL) to ``directory``."""
    from ..models.backbone import DiffusionBackbone
    from ..models.dpmesh import PipelineConfig
    from ..models.pose_decoders import build_pose_decoder, save_pose_decoder
    from ..models.regressor import Regressor, save_regressor
    from .smpl import write_synthetic_smpl_npz

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    b_cfg, r_cfg, d_cfg, unet, cn, vae = tiny_configs(pose_decoder)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    backbone = DiffusionBackbone.build(b_cfg, unet, cn, vae)
    _randomise_lora(backbone, gen)
    backbone.save_pretrained(directory)
    save_regressor(Regressor(r_cfg), directory / "regressor")
    save_pose_decoder(build_pose_decoder(d_cfg), directory / "pose_decoder")
    write_synthetic_smpl_npz(directory, seed=seed, extra_regressor=extra_regressor)
    PipelineConfig(pose_decoder=pose_decoder, source="dpmesh_infer.stand_ins.tiny (random init)", untrained=True).save_json(
        directory / "pipeline.json")
    return directory
