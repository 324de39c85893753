"""The trainable DPMesh model: backbone + regressor + frozen pose decoder + SMPL, its initialisation
(Stable Diffusion 1.5 + OpenPose ControlNet, a dpmesh weights directory, or tiny random models) and
its export to the inference weight format.

Trainable (ARCHITECTURE §9): UNet LoRA, ControlNet (``train_controlnet``), merge convs and joint-token
projection (the backbone adapter), regressor. Frozen: VAE, UNet base weights, pose decoder, SMPL.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from ..geometry.crops import PreprocessConfig
from ..models.dpmesh import DPMesh

__all__ = ["TrainableDPMesh", "build_model", "export_weights", "load_teacher"]



class TrainableDPMesh(DPMesh):
    """:class:`~dpmesh_infer.models.dpmesh.DPMesh` plus what training needs: the choice of trainable
    parameters, their state for checkpoints, and gradient checkpointing. ``forward`` is DPMesh's
    (returns :class:`~dpmesh_infer.models.dpmesh.DPMeshOutput`)."""

    def set_trainable(self, train_controlnet: bool) -> list[nn.Parameter]:
        """Mark exactly the trainable parameters (returns them, in a fixed order)."""
        self.requires_grad_(False)
        params = self.backbone.trainable_parameters(include_controlnet=train_controlnet)
        self.regressor.requires_grad_(True)
        return params + list(self.regressor.parameters())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """name -> tensor of every parameter that requires grad (what a checkpoint must hold)."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def enable_gradient_checkpointing(self) -> None:
        """Recompute UNet and ControlNet activations in backward (diffusers' non-reentrant checkpointing)."""
        self.backbone.unet.enable_gradient_checkpointing()
        self.backbone.controlnet.enable_gradient_checkpointing()


# --------------------------------------------------------------------------- initialisation


def _load_diffusers(cls, source: str, subfolder: str | None, what: str):
    try:
        return cls.from_pretrained(source, subfolder=subfolder)
    except (OSError, ValueError, EnvironmentError) as e:
        where = f"{source}/{subfolder}" if subfolder else source
        raise WeightsError(
            f"cannot load the {what} from {where!r} ({type(e).__name__}: {e}).\n"
            "  Give a local folder in diffusers layout or a Hugging Face hub id (needs network access, "
            "or a filled hub cache when HF_HUB_OFFLINE=1)") from e


def _dpmesh_controlnet(controlnet, unet, num_joints: int):
    """A ControlNet with in_channels 4 + J whose weights are ``controlnet``'s, the extra conv_in input
    channels zero-initialised; its hint block is dropped later by the backbone."""
    from diffusers import ControlNetModel

    cfg = dict(controlnet.config)
    latent = unet.config.in_channels
    if cfg["in_channels"] != latent:
        raise WeightsError(f"the ControlNet takes {cfg['in_channels']} input channels; expected a standard SD1.5 "
                           f"ControlNet with {latent} (DPMesh adds the {num_joints} heatmap channels itself)")
    cfg["in_channels"] = latent + num_joints
    new = ControlNetModel.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    state = controlnet.state_dict()
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], num_joints, *w.shape[2:])], dim=1)
    new.load_state_dict(state, strict=True)
    return new


def _from_sd15(init, seed: int):
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from ..models.backbone import BackboneAdapter, BackboneConfig, DiffusionBackbone
    from ..models.pose_decoders import load_pose_decoder
    from ..models.regressor import Regressor, RegressorConfig

    unet = _load_diffusers(UNet2DConditionModel, init.sd15, "unet", "Stable Diffusion 1.5 UNet")
    vae = _load_diffusers(AutoencoderKL, init.sd15, "vae", "Stable Diffusion 1.5 VAE")
    if init.controlnet:
        base_cn = _load_diffusers(ControlNetModel, init.controlnet, None, "ControlNet")
    else:
        base_cn = ControlNetModel.from_unet(unet)
    torch.manual_seed(seed)
    bcfg = BackboneConfig(unet_channels=tuple(unet.config.block_out_channels),
                          cross_attention_dim=int(unet.config.cross_attention_dim))
    controlnet = _dpmesh_controlnet(base_cn, unet, bcfg.num_joints)
    backbone = DiffusionBackbone(bcfg, vae=vae, unet=unet, controlnet=controlnet, adapter=BackboneAdapter(bcfg))
    decoder = load_pose_decoder(init.pose_decoder)
    regressor = Regressor(_regressor_config(RegressorConfig(in_channels=bcfg.merge_channels), decoder, init))
    return backbone, regressor, decoder


def _regressor_config(base, decoder, init):
    if decoder.config.type != init.pose_head:
        raise ConfigError(f"init.pose_head is {init.pose_head!r} but {init.pose_decoder} holds a "
                          f"{decoder.config.type!r} decoder")
    kw = {"pose_head": decoder.config.type}
    if decoder.config.type == "vqvae":
        kw.update(vq_tokens=decoder.config.num_tokens, vq_classes=decoder.config.codebook_size)
    else:
        kw.update(pose_latent_dim=decoder.config.latent_dim)
    return dataclasses.replace(base, **kw)


def _tiny(init, seed: int):
    from ..models.backbone import DiffusionBackbone
    from ..models.pose_decoders import build_pose_decoder, load_pose_decoder
    from ..models.regressor import Regressor
    from ..stand_ins.tiny import tiny_configs

    b_cfg, r_cfg, d_cfg, unet, cn, vae = tiny_configs(init.pose_head)
    torch.manual_seed(seed)
    backbone = DiffusionBackbone.build(b_cfg, unet, cn, vae)
    decoder = load_pose_decoder(init.pose_decoder) if init.pose_decoder else build_pose_decoder(d_cfg)
    regressor = Regressor(_regressor_config(r_cfg, decoder, init))
    return backbone, regressor, decoder


def build_model(init, *, seed: int = 0) -> tuple[TrainableDPMesh, str]:
    """The model described by an :class:`~dpmesh_infer.train.config.InitConfig`, and a provenance string.

    Raises:
        WeightsError: a source cannot be loaded (the message names it and how to fix it).
        ConfigError: the sources do not fit together (e.g. pose head vs decoder type).
    """
    from ..weights.smpl import load_smpl

    preprocess, body, focal_per_image = PreprocessConfig(), None, True
    if init.weights:
        from ..models.pose_decoders import load_pose_decoder

        root = Path(init.weights).expanduser()
        from ..pipeline import Pipeline

        pipe = Pipeline.from_pretrained(root, device="cpu", dtype=torch.float32)  # completeness, agreement
        backbone, regressor, decoder, preprocess = pipe.backbone, pipe.regressor, pipe.pose_decoder, \
            pipe.config.preprocess
        focal_per_image = pipe.config.focal_per_image
        if init.pose_head != regressor.config.pose_head:
            raise ConfigError(f"init.pose_head is {init.pose_head!r} but the weights in {root} use the "
                              f"{regressor.config.pose_head!r} head; set \"pose_head\": "
                              f"\"{regressor.config.pose_head}\" in the config's init section")
        if init.pose_decoder:
            decoder = load_pose_decoder(init.pose_decoder)
            if decoder.config.type != regressor.config.pose_head:
                raise ConfigError(f"{root / 'regressor'} predicts for {regressor.config.pose_head!r} but the pose "
                                  f"decoder {init.pose_decoder} is {decoder.config.type!r}")
        source = f"fine-tuned from {root}"
        smpl_src, body = init.smpl, None if init.smpl else pipe.body
    elif init.sd15:
        backbone, regressor, decoder = _from_sd15(init, seed)
        source = f"Stable Diffusion 1.5 {init.sd15}" + (f" + ControlNet {init.controlnet}" if init.controlnet else "")
        smpl_src = init.smpl
    else:
        backbone, regressor, decoder = _tiny(init, seed)
        source = "tiny random-init models (tests / smoke runs)"
        smpl_src = init.smpl
    if body is None:
        body = load_smpl(Path(smpl_src).expanduser())
    return TrainableDPMesh(backbone=backbone, regressor=regressor, pose_decoder=decoder, body=body,
                           preprocess=preprocess, focal_per_image=focal_per_image), source


# --------------------------------------------------------------------------- export


def export_weights(model: TrainableDPMesh, out_dir: str | Path, *, smpl_source: str | Path, source: str,
                   untrained: bool = False) -> Path:
    """Write ``model`` as a complete inference weights directory (loads with ``Pipeline.from_pretrained``);
    the SMPL file of ``smpl_source`` and its optional regressors travel along.

    Written through ``weights.layout.write_weights_dir`` (staging folder, then swapped into place), so
    ``out_dir`` is either the old or the new export.
    """
    from ..models.dpmesh import PipelineConfig
    from ..models.pose_decoders import save_pose_decoder
    from ..models.regressor import save_regressor
    from ..weights.layout import PIPELINE_CONFIG_NAME, backbone_folders, component_dir, copy_smpl, write_weights_dir
    from ..weights.smpl import find_smpl_file

    smpl_npz = find_smpl_file(Path(smpl_source).expanduser())

    def fill(tmp: Path) -> None:
        model.backbone.save_folders(**backbone_folders(tmp))
        save_regressor(model.regressor, component_dir(tmp, "regressor"))
        save_pose_decoder(model.pose_decoder, component_dir(tmp, "pose_decoder"))
        copy_smpl(smpl_npz, tmp)
        PipelineConfig(pose_decoder=model.pose_decoder.config.type, preprocess=model.preprocess, source=source,
                       untrained=untrained, focal_per_image=model.focal_per_image).save_json(tmp / PIPELINE_CONFIG_NAME)

    return write_weights_dir(out_dir, fill)


def load_teacher(weights_dir: str | Path, device: torch.device) -> DPMesh:
    """The frozen, eval-mode network of an exported weights directory (the NKR teacher), loaded and
    cross-checked by ``Pipeline.from_pretrained`` (fp32)."""
    from ..pipeline import Pipeline

    model = Pipeline.from_pretrained(Path(weights_dir), device=device, dtype=torch.float32).model
    model.requires_grad_(False)
    return model.eval()
