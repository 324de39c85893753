"""The trainable DPMesh model: backbone + regressor + frozen pose decoder + SMPL, its initialisation
(Stable Diffusion 1.5 + OpenPose ControlNet, a dpmesh weights directory, or tiny random models) and
its export to the inference weight format.

Trainable (ARCHITECTURE §9): UNet LoRA, ControlNet (``train_controlnet``), merge convs and joint-token
projection (the backbone adapter), regressor. Frozen: VAE, UNet base weights, pose decoder, SMPL.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, WeightsError
from ..geometry.crops import PreprocessConfig

__all__ = ["TrainOutputs", "DPMeshModel", "build_model", "export_weights", "load_teacher"]



@dataclasses.dataclass
class TrainOutputs:
    """One training forward (B persons), float32 except ``features``.

    features (B, M, 8, 8) merged backbone features (the NKR target/prediction); joint_img (B, 15, 3)
    regressor graph joints in [0, 1] (x, y over the crop, z = depth/2 m + 0.5 relative to the pelvis);
    global_orient (B, 3), body_pose (B, 23, 3) axis-angle; betas (B, 10); transl (B, 3) crop-camera
    translation, metres; joints_rel (B, 30, 3) J30 relative to the pelvis, metres; joints_proj
    (B, 30, 2) J30 projected into the 256 crop with the model focal, pixels.
    """

    features: torch.Tensor
    joint_img: torch.Tensor
    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    joints_rel: torch.Tensor
    joints_proj: torch.Tensor


class DPMeshModel(nn.Module):
    """Backbone + regressor + pose decoder + SMPL for training (``forward`` takes crops, returns
    :class:`TrainOutputs`). ``pose_decoder`` and ``body`` are frozen and always in eval mode."""

    def __init__(self, *, backbone, regressor, pose_decoder, body, preprocess: PreprocessConfig | None = None) -> None:
        super().__init__()
        if regressor.config.pose_head != pose_decoder.config.type:
            raise ConfigError(f"the regressor predicts for {regressor.config.pose_head!r} but the pose decoder "
                              f"is {pose_decoder.config.type!r}")
        if regressor.config.in_channels != backbone.config.merge_channels:
            raise ConfigError(f"regressor in_channels {regressor.config.in_channels} != backbone merge_channels "
                              f"{backbone.config.merge_channels}")
        self.backbone, self.regressor, self.pose_decoder, self.body = backbone, regressor, pose_decoder, body
        self.preprocess = preprocess or PreprocessConfig()
        self.pose_decoder.requires_grad_(False)

    def set_trainable(self, train_controlnet: bool) -> list[nn.Parameter]:
        """Mark exactly the trainable parameters (returns them, in a fixed order)."""
        self.requires_grad_(False)
        params = self.backbone.trainable_parameters(include_controlnet=train_controlnet)
        self.regressor.requires_grad_(True)
        return params + list(self.regressor.parameters())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """name -> tensor of every parameter that requires grad (what a checkpoint must hold)."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def train(self, mode: bool = True) -> "DPMeshModel":
        super().train(mode)
        self.pose_decoder.eval()
        self.body.eval()
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute UNet and ControlNet activations in backward (diffusers' non-reentrant checkpointing)."""
        self.backbone.unet.enable_gradient_checkpointing()
        self.backbone.controlnet.enable_gradient_checkpointing()

    def forward(self, images: torch.Tensor, joints32: torch.Tensor, mask: torch.Tensor,
                focal: torch.Tensor) -> TrainOutputs:
        """images (B,3,256,256) in [0,1]; joints32 (B,30,2) grid units; mask (B,30) bool; focal (B,) px."""
        from ..geometry.camera import camera_translation, project
        from ..geometry.crops import make_heatmaps
        from ..geometry.rotations import rot6d_to_axis_angle

        cfg = self.preprocess
        heatmaps = make_heatmaps(joints32, mask, size=cfg.heatmap_size, sigma=cfg.heatmap_sigma)
        features = self.backbone(images, joints32, heatmaps)
        reg = self.regressor(features)
        focal = focal.float()
        global_orient = rot6d_to_axis_angle(reg.root_pose_6d.float())
        body_pose = self.pose_decoder(reg.pose.float())
        betas = reg.betas.float()
        transl = camera_translation(reg.cam.float(), focal, input_size=cfg.input_size)
        body = self.body(global_orient, body_pose, betas, transl)
        joints = body.joints
        centre = torch.full((joints.shape[0], 2), cfg.input_size / 2.0, device=joints.device)
        proj = project(joints, focal, centre)
        return TrainOutputs(features=features, joint_img=reg.joint_img.float(), global_orient=global_orient,
                            body_pose=body_pose, betas=betas, transl=transl,
                            joints_rel=joints - joints[:, :1], joints_proj=proj)


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


def build_model(init, *, seed: int = 0) -> tuple[DPMeshModel, str]:
    """The model described by an :class:`~dpmesh_infer.train.config.InitConfig`, and a provenance string.

    Raises:
        WeightsError: a source cannot be loaded (the message names it and how to fix it).
        ConfigError: the sources do not fit together (e.g. pose head vs decoder type).
    """
    from ..models.body import load_smpl

    preprocess, body = PreprocessConfig(), None
    if init.weights:
        from ..models.pose_decoders import load_pose_decoder

        root = Path(init.weights).expanduser()
        pipe = _load_weights(root, torch.device("cpu"))  # completeness and component-agreement checks
        backbone, regressor, decoder, preprocess = pipe.backbone, pipe.regressor, pipe.pose_decoder, \
            pipe.config.preprocess
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
    return DPMeshModel(backbone=backbone, regressor=regressor, pose_decoder=decoder, body=body,
                       preprocess=preprocess), source


# --------------------------------------------------------------------------- export


def export_weights(model: DPMeshModel, out_dir: str | Path, *, smpl_source: str | Path, source: str,
                   untrained: bool = False) -> Path:
    """Write ``model`` as a complete inference weights directory (loads with ``Pipeline.from_pretrained``).

    Written into ``out_dir.tmp`` first and renamed, so ``out_dir`` is either the old or the new export.
    """
    from ..models.dpmesh import PipelineConfig
    from ..models.pose_decoders import save_pose_decoder
    from ..models.regressor import save_regressor
    from ..evaluate import H36M_REGRESSOR_FILENAME
    from ..weights.smpl import EXTRA_REGRESSOR_FILENAME, SMPL_SUBDIR, find_smpl_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.backbone.save_pretrained(tmp)
    save_regressor(model.regressor, tmp / "regressor")
    save_pose_decoder(model.pose_decoder, tmp / "pose_decoder")
    smpl_file = find_smpl_file(Path(smpl_source).expanduser())
    (tmp / SMPL_SUBDIR).mkdir()
    shutil.copy2(smpl_file, tmp / SMPL_SUBDIR / smpl_file.name)
    for name in (EXTRA_REGRESSOR_FILENAME, H36M_REGRESSOR_FILENAME):  # optional files travel along
        if (smpl_file.parent / name).is_file():
            shutil.copy2(smpl_file.parent / name, tmp / SMPL_SUBDIR / name)
    PipelineConfig(pose_decoder=model.pose_decoder.config.type, preprocess=model.preprocess, source=source,
                   untrained=untrained).save_json(tmp / "pipeline.json")
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out


def _load_weights(root: Path, device: torch.device):
    """A weights directory's components, loaded and cross-checked by ``Pipeline.from_pretrained`` (fp32)."""
    from ..pipeline import Pipeline

    return Pipeline.from_pretrained(root, device=device, dtype=torch.float32)


def load_teacher(weights_dir: str | Path, device: torch.device) -> DPMeshModel:
    """A frozen, eval-mode model from an exported weights directory (the NKR teacher)."""
    pipe = _load_weights(Path(weights_dir), device)
    model = DPMeshModel(backbone=pipe.backbone, regressor=pipe.regressor, pose_decoder=pipe.pose_decoder,
                        body=pipe.body, preprocess=pipe.config.preprocess)
    model.requires_grad_(False)
    return model.to(device).eval()
