"""DPMesh diffusion backbone: SD1.5 VAE encoder + ControlNet + UNet (+ peft LoRA) -> merged 2048x8x8 features.

One pass per batch of person crops (see ARCHITECTURE.md §4 and upstream-dpmesh.md §2):

    images (B,3,256,256) in [0,1] --VAE encoder + quant_conv, posterior mean--> latent (B,4,32,32)
    joints32 (B,J,2) on the 32x32 grid --kp_lifting(joints32/32)--> joint tokens (B,J,768)
    ControlNet(cat(latent, heatmaps) 34 ch, t=1, tokens) --> 12 + 1 residuals (scale 1)
    UNet(latent, t=1, tokens, + residuals)  --forward hooks--> taps 4x4, 8x8, 16x16, 32x32
                                            --attn2 capture--> head-mean maps, averaged at 8x8 and 16x16
    merge convs (BackboneAdapter.outmodules) --> (B, 2048, 8, 8)

The diffusers classes are used as they are; three things are changed on the instances:
- the VAE's ``decoder`` and ``post_quant_conv`` are set to None (never used; not in the weights);
- the ControlNet's ``controlnet_cond_embedding`` (the hint block, absent in DPMesh) is replaced by a
  parameter-free module that returns 0, so diffusers' ``conv_in(sample) + cond_embedding(cond)`` equals
  upstream's ``conv_in(cat(latent, heatmaps))``;
- the UNet's output head (``conv_norm_out``/``conv_out``) is never computed: the forward hook on
  ``up_blocks[3]`` (the last tap) raises a private exception that the backbone catches. The head's
  weights stay in the model and in ``unet/`` so the folder is a complete diffusers UNet.

dtype policy: fp32 on CPU. On CUDA the caller runs the backbone under
``torch.autocast("cuda", dtype=torch.float16)``; the attention maps are computed in fp32 regardless
(see :mod:`dpmesh_infer.models.attention`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigBase, read_json
from ..errors import ConfigError, InputError, WeightsError
from .attention import CAPTURED_ATTN2, CaptureStore, install_capture, maps_to_grid
from .io import (
    DIFFUSERS_FILES,
    OUR_FILES,
    PEFT_FILES,
    check_state_dict,
    load_state_strict,
    read_safetensors,
    save_component,
    save_diffusers_component,
    save_safetensors,
)

#: The five component folders of a backbone, as keyword names of :meth:`DiffusionBackbone.from_folders`.
BACKBONE_PARTS = ("vae", "unet", "unet_lora", "controlnet", "adapter")
ADAPTER_NAME = "default"  # peft adapter name inside the UNet (not part of the saved keys)

# peft target regex (re.fullmatch on module paths): in every UNet transformer block, attn1/attn2
# to_q/to_k/to_v/to_out.0 and the GEGLU input projection ff.net.0.proj -> 9 Linears x 16 blocks = 144.
LORA_TARGET_REGEX = r".*transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj)"

# The SD1.5 block layout the feature taps and captured attention modules rely on.
_DOWN_TYPES = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
_UP_TYPES = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]


@dataclasses.dataclass(frozen=True)
class BackboneConfig(ConfigBase):
    """Shapes of the backbone's own layers (stored as ``adapter/config.json``).

    Attributes:
        num_joints: J, joint tokens / heatmap channels (30).
        cross_attention_dim: width D of a joint token (= the UNet's cross_attention_dim, 768).
        unet_channels: the UNet's block_out_channels (C0, C1, C2, C3) = (320, 640, 1280, 1280).
        merge_channels: M, output channels of the merge (2048).
        merge_norm_groups: GroupNorm groups in the merge convs (16).
        joint_token_layers: 1 = release layout, one Linear(2, D) (keys kp_lifting.weight/.bias);
            2 = the paper's 2-layer MLP Linear(2, D) -> ReLU -> Linear(D, D) (keys kp_lifting.0.*, .2.*).
        timestep: the single diffusion timestep (integer, 1).
        lora_rank, lora_alpha: peft LoRA on the UNet (64, 64 -> scale 1), dropout 0.
    """

    num_joints: int = 30
    cross_attention_dim: int = 768
    unet_channels: tuple[int, int, int, int] = (320, 640, 1280, 1280)
    merge_channels: int = 2048
    merge_norm_groups: int = 16
    joint_token_layers: int = 1
    timestep: int = 1
    lora_rank: int = 64
    lora_alpha: int = 64

    def __post_init__(self) -> None:
        if self.joint_token_layers not in (1, 2):
            raise ConfigError(f"BackboneConfig.joint_token_layers must be 1 or 2, got {self.joint_token_layers}")
        for name in ("num_joints", "cross_attention_dim", "merge_channels", "merge_norm_groups", "lora_rank"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"BackboneConfig.{name} must be positive, got {getattr(self, name)}")
        for c in (self.unet_channels[0], self.merge_channels):
            if c % self.merge_norm_groups:
                raise ConfigError(f"BackboneConfig: {c} channels not divisible by {self.merge_norm_groups} groups")

    @property
    def merge_in_channels(self) -> int:
        """C0 + (C1+J) + (C2+J) + C3: input channels of the 1x1 merge conv (3580 at full size)."""
        c0, c1, c2, c3 = self.unet_channels
        return c0 + (c1 + self.num_joints) + (c2 + self.num_joints) + c3


class BackboneAdapter(nn.Module):
    """DPMesh's own backbone layers: joint-token projection and merge convs (upstream key names).

    - ``kp_lifting``: (B,J,2) normalised joint coordinates -> (B,J,D) tokens.
    - ``outmodules[0]``: Conv(C0,C0,3,s2,p1) -> GN -> ReLU -> Conv(C0,C0,3,s2,p1) on the 32x32 tap.
    - ``outmodules[1]``: Conv(C1+J, C1+J, 3, s2, p1) on cat(16x16 tap, 16x16 attention maps).
    - ``outmodules[2]``: Conv1x1(merge_in_channels, M) -> GN -> ReLU on the concatenation.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        d, j, m, g = config.cross_attention_dim, config.num_joints, config.merge_channels, config.merge_norm_groups
        c0, c1, _, _ = config.unet_channels
        if config.joint_token_layers == 1:
            self.kp_lifting: nn.Module = nn.Linear(2, d)
        else:
            self.kp_lifting = nn.Sequential(nn.Linear(2, d), nn.ReLU(), nn.Linear(d, d))
        self.outmodules = nn.ModuleList([
            nn.Sequential(nn.Conv2d(c0, c0, 3, 2, 1), nn.GroupNorm(g, c0), nn.ReLU(), nn.Conv2d(c0, c0, 3, 2, 1)),
            nn.Sequential(nn.Conv2d(c1 + j, c1 + j, 3, 2, 1)),
            nn.Sequential(nn.Conv2d(config.merge_in_channels, m, 1), nn.GroupNorm(g, m), nn.ReLU()),
        ])
        for mod in self.outmodules.modules():  # upstream init (training from scratch)
            if isinstance(mod, nn.Conv2d):
                nn.init.trunc_normal_(mod.weight, std=0.02)
                nn.init.zeros_(mod.bias)

    def joint_tokens(self, joints32: torch.Tensor, grid: int) -> torch.Tensor:
        """(B,J,2) joint (u, v) on the grid x grid heatmap grid (32) -> (B,J,D) tokens kp_lifting(joints32 / grid)."""
        return self.kp_lifting(joints32 / grid)

    def merge(self, feats: "BackboneFeatures") -> torch.Tensor:
        """Taps + maps -> (B, M, 8, 8): outmodules[2](cat[a | b | c | d]) in upstream order."""
        dtype = feats.tap8.dtype
        a = self.outmodules[0](feats.tap32)  # (B, C0, 8, 8)
        b = self.outmodules[1](torch.cat([feats.tap16, feats.attn16.to(dtype)], dim=1))  # (B, C1+J, 8, 8)
        c = torch.cat([feats.tap8, feats.attn8.to(dtype)], dim=1)  # (B, C2+J, 8, 8)
        d = F.interpolate(feats.tap4, scale_factor=2.0, mode="nearest")  # (B, C3, 8, 8)
        return self.outmodules[2](torch.cat([a, b, c, d], dim=1))


@dataclasses.dataclass
class BackboneFeatures:
    """Intermediate backbone outputs for one batch (sizes for a 256x256 crop, full-size channels).

    tap4 (B,C3=1280,4,4): up_blocks[0].resnets[1]; tap8 (B,C2=1280,8,8): up_blocks[1].attentions[1];
    tap16 (B,C1=640,16,16): up_blocks[2].attentions[1]; tap32 (B,C0=320,32,32): up_blocks[3] output;
    attn8 (B,J,8,8) / attn16 (B,J,16,16): mean of the 5 head-averaged cross-attention maps per size,
    probabilities over the J tokens (float32).
    """

    tap4: torch.Tensor
    tap8: torch.Tensor
    tap16: torch.Tensor
    tap32: torch.Tensor
    attn8: torch.Tensor
    attn16: torch.Tensor


class _NoHintEmbedding(nn.Module):
    """Replaces ControlNetModel.controlnet_cond_embedding: DPMesh has no hint block; contributes 0."""

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return cond.new_zeros(())


class _StopAfterLastTap(Exception):
    """Raised by the last tap hook to skip the UNet's unused output head; caught by the backbone."""


def _tap_hook(store: CaptureStore, key: str, stop: bool = False):
    def hook(module, args, output):
        if not store.active:
            return None
        if isinstance(output, tuple):
            output = output[0]
        store.taps[key] = getattr(output, "sample", output)
        if stop:
            raise _StopAfterLastTap
        return None

    return hook


def _check_diffusers_configs(cfg: BackboneConfig, unet, controlnet, vae) -> None:
    u, c, v = unet.config, controlnet.config, vae.config
    problems = []
    if list(u.block_out_channels) != list(cfg.unet_channels):
        problems.append(f"unet block_out_channels {list(u.block_out_channels)} != {list(cfg.unet_channels)}")
    if list(u.down_block_types) != _DOWN_TYPES or list(u.up_block_types) != _UP_TYPES or u.layers_per_block != 2:
        problems.append("unet is not the SD1.5 block layout (4 down/up blocks, 2 layers each)")
    if u.in_channels != v.latent_channels:
        problems.append(f"unet in_channels {u.in_channels} != vae latent_channels {v.latent_channels}")
    if c.in_channels != v.latent_channels + cfg.num_joints:
        problems.append(f"controlnet in_channels {c.in_channels} != latent {v.latent_channels} "
                        f"+ {cfg.num_joints} joints")
    if list(c.block_out_channels) != list(u.block_out_channels) or list(c.down_block_types) != list(u.down_block_types):
        problems.append("controlnet blocks differ from the unet's")
    for name, conf in (("unet", u), ("controlnet", c)):
        if conf.cross_attention_dim != cfg.cross_attention_dim:
            problems.append(f"{name} cross_attention_dim {conf.cross_attention_dim} != {cfg.cross_attention_dim}")
        if conf.class_embed_type is not None or conf.num_class_embeds or conf.addition_embed_type is not None:
            problems.append(f"{name} has class/addition embeddings; DPMesh uses none")
    if c.global_pool_conditions:
        problems.append("controlnet global_pool_conditions must be false")
    if problems:
        raise ConfigError("inconsistent backbone configs: " + "; ".join(problems))


class DiffusionBackbone(nn.Module):
    """VAE encoder + ControlNet + LoRA UNet + merge: person crops -> (B, M, 8, 8) features.

    Build with :meth:`build` (random init), :meth:`from_pretrained` (a weights directory) or the
    constructor (diffusers models you already have; they are modified in place as described in the
    module docstring and the LoRA adapter is added to ``unet``).
    """

    def __init__(self, config: BackboneConfig, *, vae, unet, controlnet, adapter: BackboneAdapter) -> None:
        super().__init__()
        from peft import LoraConfig

        _check_diffusers_configs(config, unet, controlnet, vae)
        if getattr(unet, "peft_config", None):
            raise ValueError("the UNet already has a peft adapter; pass the plain base UNet")
        self.config = config
        vae.decoder = None
        vae.post_quant_conv = None
        controlnet.controlnet_cond_embedding = _NoHintEmbedding()
        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                          target_modules=LORA_TARGET_REGEX, bias="none", init_lora_weights=True)
        unet.add_adapter(lora, adapter_name=ADAPTER_NAME)
        self.lora_config = lora
        self.vae, self.unet, self.controlnet, self.adapter = vae, unet, controlnet, adapter
        n_blocks = sum(1 for n, _ in unet.named_modules() if n.endswith(".transformer_blocks.0"))
        if len(self.lora_target_modules()) != 9 * n_blocks:
            raise ConfigError(f"LoRA wrapped {len(self.lora_target_modules())} Linears, expected {9 * n_blocks}")

        self.store = CaptureStore()
        install_capture(unet, self.store, CAPTURED_ATTN2)
        ub = unet.up_blocks
        ub[0].resnets[1].register_forward_hook(_tap_hook(self.store, "tap4"))
        ub[1].attentions[1].register_forward_hook(_tap_hook(self.store, "tap8"))
        ub[2].attentions[1].register_forward_hook(_tap_hook(self.store, "tap16"))
        ub[3].register_forward_hook(_tap_hook(self.store, "tap32", stop=True))

        vae.requires_grad_(False)
        controlnet.requires_grad_(False)
        for name, p in unet.named_parameters():
            p.requires_grad_("lora_" in name)
        adapter.requires_grad_(True)
        self.train(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, backbone_cfg: BackboneConfig, unet_cfg: dict, controlnet_cfg: dict, vae_cfg: dict,
              device: str | torch.device = "cpu") -> "DiffusionBackbone":
        """Random-init backbone from configs (``sd15.*_config()``); ``device="meta"`` allocates nothing."""
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

        with torch.device(device):
            vae = AutoencoderKL.from_config(dict(vae_cfg))
            unet = UNet2DConditionModel.from_config(dict(unet_cfg))
            controlnet = ControlNetModel.from_config(dict(controlnet_cfg))
            adapter = BackboneAdapter(backbone_cfg)
            return cls(backbone_cfg, vae=vae, unet=unet, controlnet=controlnet, adapter=adapter)

    @classmethod
    def from_folders(cls, *, vae: str | Path, unet: str | Path, unet_lora: str | Path, controlnet: str | Path,
                     adapter: str | Path, device: str | torch.device | None = None,
                     dtype: torch.dtype | None = None) -> "DiffusionBackbone":
        """Load the five component folders strictly (diffusers VAE / UNet / ControlNet, peft LoRA, our
        adapter; docs/CONTRACTS.md). ``weights.layout.backbone_folders(DIR)`` names them for a weights
        directory.

        Built on the meta device, then filled from the files (no random init). Result on ``device``
        (default CPU) in ``dtype`` (default float32), eval mode. A missing file -> WeightsError naming it;
        key/shape mismatches -> WeightsError listing the keys.
        """
        vae, unet, lora, cn, ad = (Path(p) for p in (vae, unet, unet_lora, controlnet, adapter))
        files = {
            "adapter_cfg": ad / OUR_FILES[0], "adapter": ad / OUR_FILES[1],
            "vae_cfg": vae / DIFFUSERS_FILES[0], "vae": vae / DIFFUSERS_FILES[1],
            "unet_cfg": unet / DIFFUSERS_FILES[0], "unet": unet / DIFFUSERS_FILES[1],
            "cn_cfg": cn / DIFFUSERS_FILES[0], "cn": cn / DIFFUSERS_FILES[1],
            "lora_cfg": lora / PEFT_FILES[0], "lora": lora / PEFT_FILES[1],
        }
        absent = [str(p) for p in files.values() if not p.is_file()]
        if absent:
            raise WeightsError("backbone weights incomplete; missing file(s): " + ", ".join(absent))
        backbone_cfg = BackboneConfig.load_json(files["adapter_cfg"])
        model = cls.build(backbone_cfg, _read_diffusers_config(files["unet_cfg"], "UNet2DConditionModel"),
                          _read_diffusers_config(files["cn_cfg"], "ControlNetModel"),
                          _read_diffusers_config(files["vae_cfg"], "AutoencoderKL"), device="meta")
        model._check_lora_config_file(files["lora_cfg"])
        model.load_component_states(
            read_safetensors(files["vae"]), read_safetensors(files["unet"]), read_safetensors(files["lora"]),
            read_safetensors(files["cn"]), read_safetensors(files["adapter"]),
            where={k: str(files[k]) for k in ("vae", "unet", "lora", "cn", "adapter")})
        leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
        if leftover:
            raise WeightsError(f"backbone tensors not filled from {unet.parent}: {leftover[:8]}")
        return model.to(device=device or "cpu", dtype=dtype or torch.float32).eval()

    def save_folders(self, *, vae: str | Path, unet: str | Path, unet_lora: str | Path, controlnet: str | Path,
                     adapter: str | Path) -> None:
        """Write the five component folders (the formats :meth:`from_folders` reads).

        Raises:
            WeightsError: the LoRA was merged (:meth:`merge_lora`); save from an unmerged model.
        """
        from peft.utils import get_peft_model_state_dict

        if self.lora_merged:
            raise WeightsError("this backbone's LoRA was merged into the UNet for inference; save the weights "
                               "from a model loaded without merge_lora")

        for folder, model, state in ((vae, self.vae, self.vae.state_dict()),
                                     (unet, self.unet, self.unet_base_state_dict()),
                                     (controlnet, self.controlnet, self.controlnet.state_dict())):
            save_diffusers_component(model, state, folder)
        lora = Path(unet_lora)
        lora.mkdir(parents=True, exist_ok=True)
        self.lora_config.save_pretrained(str(lora))
        save_safetensors(get_peft_model_state_dict(self.unet, adapter_name=ADAPTER_NAME), lora / PEFT_FILES[1])
        save_component(self.adapter, self.config, adapter)

    # ------------------------------------------------------------------ state dicts
    def unet_base_state_dict(self) -> dict[str, torch.Tensor]:
        """Base UNet weights under plain diffusers names (peft's ``.base_layer`` removed, no LoRA)."""
        return {saved: t for saved, (_, t) in self._unet_key_map(lora=False).items()}

    def _unet_key_map(self, *, lora: bool) -> dict[str, tuple[str, torch.Tensor]]:
        """saved key -> (UNet state-dict key, tensor), for the base weights or the LoRA weights."""
        out = {}
        for key, t in self.unet.state_dict().items():
            if ("lora_" in key) != lora:
                continue
            saved = key.replace(f".{ADAPTER_NAME}.", ".") if lora else key.replace(".base_layer.", ".")
            out[saved] = (key, t)
        return out

    def load_component_states(self, vae_state: Mapping[str, torch.Tensor], unet_state: Mapping[str, torch.Tensor],
                              lora_state: Mapping[str, torch.Tensor], controlnet_state: Mapping[str, torch.Tensor],
                              adapter_state: Mapping[str, torch.Tensor], *, where: Mapping[str, str] | None = None
                              ) -> None:
        """Fill every component strictly from state dicts in the saved formats (docs/CONTRACTS.md).

        vae_state: ``encoder.*``, ``quant_conv.*``; unet_state: diffusers UNet keys (LoRA not merged);
        lora_state: ``<module path>.lora_A.weight`` / ``.lora_B.weight``; controlnet_state: ControlNetModel
        keys without ``controlnet_cond_embedding.*``; adapter_state: ``kp_lifting.*``, ``outmodules.*``.
        ``where`` optionally names the source of each ("vae", "unet", "lora", "cn", "adapter") in errors.
        All five are checked before anything is loaded.
        """
        where = dict(where or {})
        base_map, lora_map = self._unet_key_map(lora=False), self._unet_key_map(lora=True)
        check_state_dict(self.vae, vae_state, where=where.get("vae", "vae state"))
        check_state_dict(_Spec({k: t for k, (_, t) in base_map.items()}), unet_state,
                         where=where.get("unet", "unet state"))
        check_state_dict(_Spec({k: t for k, (_, t) in lora_map.items()}), lora_state,
                         where=where.get("lora", "unet LoRA state"))
        check_state_dict(self.controlnet, controlnet_state, where=where.get("cn", "controlnet state"))
        check_state_dict(self.adapter, adapter_state, where=where.get("adapter", "adapter state"))

        load_state_strict(self.vae, vae_state, where=where.get("vae", "vae state"))
        unet_full = {base_map[k][0]: v for k, v in unet_state.items()}
        unet_full.update({lora_map[k][0]: v for k, v in lora_state.items()})
        self.unet.load_state_dict(unet_full, strict=True, assign=any(p.is_meta for p in self.unet.parameters()))
        load_state_strict(self.controlnet, controlnet_state, where=where.get("cn", "controlnet state"))
        load_state_strict(self.adapter, adapter_state, where=where.get("adapter", "adapter state"))
        # assign=True (meta build) takes the file's tensors; restore the training flags
        self.vae.requires_grad_(False)
        self.controlnet.requires_grad_(False)
        for name, p in self.unet.named_parameters():
            p.requires_grad_("lora_" in name)

    def _check_lora_config_file(self, path: Path) -> None:
        from peft import LoraConfig
        from peft.tuners.tuners_utils import check_target_module_exists

        try:
            file_cfg = LoraConfig.from_pretrained(str(path.parent))
        except Exception as e:  # peft raises ValueError/TypeError/OSError on bad files
            raise WeightsError(f"cannot read peft LoRA config {path}: {e}") from e
        ours = self.lora_target_modules()
        theirs = sorted(n for n, _ in self.unet.named_modules()
                        if n and ".lora_" not in n and ".base_layer" not in n
                        and check_target_module_exists(file_cfg, n))
        problems = []
        if (file_cfg.r, file_cfg.lora_alpha) != (self.config.lora_rank, self.config.lora_alpha):
            problems.append(f"r/alpha {file_cfg.r}/{file_cfg.lora_alpha} in the file vs "
                            f"{self.config.lora_rank}/{self.config.lora_alpha} in adapter/config.json")
        if file_cfg.use_dora or file_cfg.use_rslora or file_cfg.bias != "none" or file_cfg.lora_dropout:
            problems.append("only plain LoRA is supported (no DoRA / rsLoRA / bias / dropout)")
        if file_cfg.rank_pattern or file_cfg.alpha_pattern:
            problems.append("per-module rank/alpha patterns are not supported")
        if theirs != ours:
            extra, lacking = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
            problems.append(f"target modules differ ({len(theirs)} in file vs {len(ours)} expected; "
                            f"not expected: {extra[:3]}; not targeted: {lacking[:3]})")
        if problems:
            raise WeightsError(f"LoRA config {path} does not match the backbone: " + "; ".join(problems))

    def lora_target_modules(self) -> list[str]:
        """Sorted module paths of the UNet Linears that carry LoRA (144 for SD1.5)."""
        from peft.tuners.lora import LoraLayer

        return sorted(n for n, m in self.unet.named_modules() if isinstance(m, LoraLayer))

    def trainable_parameters(self, include_controlnet: bool = False) -> list[nn.Parameter]:
        """Parameters to optimise: UNet LoRA + adapter (+ ControlNet); sets requires_grad on exactly those.

        VAE and UNet base weights are always frozen. The upstream release trained LoRA + adapter.
        """
        self.controlnet.requires_grad_(include_controlnet)
        params = [p for n, p in self.unet.named_parameters() if "lora_" in n]
        params += list(self.adapter.parameters())
        if include_controlnet:
            params += list(self.controlnet.parameters())
        for p in params:
            p.requires_grad_(True)
        return params

    def train(self, mode: bool = True) -> "DiffusionBackbone":
        """Only the adapter follows ``mode``; the diffusers models stay in eval (no dropout anyway)."""
        super().train(mode)
        for m in (self.vae, self.unet, self.controlnet):
            m.eval()
        return self

    # ------------------------------------------------------------------ inference fast path
    @property
    def lora_merged(self) -> bool:
        """True once :meth:`merge_lora` folded the LoRA weights into the UNet Linears."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        return any(getattr(m, "merged", False) for m in self.unet.modules() if isinstance(m, BaseTunerLayer))

    def merge_lora(self) -> None:
        """Fold LoRA into the UNet weights (W <- W + B·A·alpha/r) for inference: 144 fewer GEMM pairs per
        forward, the same function up to float rounding (about 1e-6 relative in fp32). Not for training,
        and not exactly reversible (the sum is rounded), so a weights folder is always saved from an
        unmerged model (:meth:`save_folders` refuses a merged one)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for m in self.unet.modules():
            if isinstance(m, BaseTunerLayer) and not m.merged:
                m.merge(safe_merge=True)

    def to_channels_last(self) -> None:
        """Convolution weights in channels_last memory format (faster cuDNN / oneDNN kernels)."""
        self.to(memory_format=torch.channels_last)
        self._channels_last = True

    def compile(self, mode: str | None = None, backend: str = "inductor") -> None:  # type: ignore[override]
        """``torch.compile`` the heavy blocks: the VAE encoder, the ControlNet and every UNet block the forward
        runs (the output head is never reached). Blocks are compiled in place, so the feature taps (forward
        hooks that record into the capture store) and the attention capture keep working; the last up block
        is compiled through its children (its hook ends the UNet pass). Shapes should stay fixed (the pipeline
        pads the last batch to the batch size) to avoid recompilation. ``mode="reduce-overhead"`` adds CUDA
        graphs."""
        kw = {"mode": mode, "backend": backend, "dynamic": False}
        self.vae.encoder.compile(**kw)
        self.controlnet.compile(**kw)
        for block in [*self.unet.down_blocks, self.unet.mid_block, *self.unet.up_blocks[:-1]]:
            block.compile(**kw)
        for child in self.unet.up_blocks[-1].children():
            for m in (child if isinstance(child, nn.ModuleList) else [child]):
                m.compile(**kw)

    # ------------------------------------------------------------------ forward
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) RGB in [0,1] -> (B,4,H/8,W/8) VAE posterior mean (no [-1,1] map, no 0.18215)."""
        moments = self.vae.encoder(images)
        if self.vae.quant_conv is not None:
            moments = self.vae.quant_conv(moments)
        return moments[:, : self.vae.config.latent_channels]

    def forward_features(self, images: torch.Tensor, joints32: torch.Tensor,
                         heatmaps: torch.Tensor) -> BackboneFeatures:
        """Run VAE, ControlNet and UNet once (t = config.timestep) and collect taps and maps.

        Args:
            images: (B,3,256,256) RGB crops in [0,1].
            joints32: (B,J,2) joint (u, v) on the 32x32 grid (crop pixels / 8), all joints, unmasked.
            heatmaps: (B,J,32,32) masked Gaussian heatmaps, peak 1.
        """
        self._check_inputs(images, joints32, heatmaps)
        dtype = self.adapter.outmodules[0][0].weight.dtype
        images, joints32, heatmaps = images.to(dtype), joints32.to(dtype), heatmaps.to(dtype)
        if getattr(self, "_channels_last", False):
            images = images.contiguous(memory_format=torch.channels_last)
        latent = self.encode_images(images)  # (B, 4, 32, 32)
        tokens = self.adapter.joint_tokens(joints32, heatmaps.shape[-1])  # (B, J, D)
        t = torch.full((images.shape[0],), self.config.timestep, dtype=torch.long, device=images.device)
        with self.store.recording() as store:
            down_res, mid_res = self.controlnet(
                sample=torch.cat([latent, heatmaps.to(latent.dtype)], dim=1), timestep=t,
                encoder_hidden_states=tokens, controlnet_cond=heatmaps, conditioning_scale=1.0,
                guess_mode=False, return_dict=False)
            try:
                self.unet(latent, t, encoder_hidden_states=tokens, down_block_additional_residuals=list(down_res),
                          mid_block_additional_residual=mid_res, return_dict=False)
            except _StopAfterLastTap:
                pass
            else:
                raise RuntimeError("the UNet finished without reaching the last feature tap")
            taps, maps = dict(store.taps), dict(store.maps)
        missing = [n for n in CAPTURED_ATTN2 if n not in maps]
        if missing or len(taps) != 4:
            raise RuntimeError(f"feature capture incomplete: taps {sorted(taps)}, missing maps {missing}")
        by_size: dict[int, list[torch.Tensor]] = {}
        for name in CAPTURED_ATTN2:
            by_size.setdefault(maps[name].shape[1], []).append(maps[name])
        hw8, hw16 = taps["tap8"].shape[-2] * taps["tap8"].shape[-1], taps["tap16"].shape[-2] * taps["tap16"].shape[-1]
        return BackboneFeatures(tap4=taps["tap4"], tap8=taps["tap8"], tap16=taps["tap16"], tap32=taps["tap32"],
                                attn8=maps_to_grid(by_size[hw8]), attn16=maps_to_grid(by_size[hw16]))

    def forward(self, images: torch.Tensor, joints32: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        """(B,3,256,256) crops in [0,1], (B,J,2) joints on the 32 grid, (B,J,32,32) heatmaps -> (B,M,8,8)."""
        return self.adapter.merge(self.forward_features(images, joints32, heatmaps))

    @property
    def latent_factor(self) -> int:
        """Crop pixels per latent cell: the VAE downsamples by 2 per block after the first (8 for SD1.5)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    #: Latent cells per cell of the merged feature map (the 8x8 level of the SD1.5 UNet: 32 / 8 = 4).
    feature_stride = 4

    def _check_inputs(self, images: torch.Tensor, joints32: torch.Tensor, heatmaps: torch.Tensor) -> None:
        j, f = self.config.num_joints, self.latent_factor
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3] or images.shape[2] % (
                f * 8):
            raise InputError(f"images must be (B, 3, S, S) with S a multiple of {f * 8}, got {tuple(images.shape)}")
        b, g = images.shape[0], images.shape[2] // f
        if tuple(joints32.shape) != (b, j, 2):
            raise InputError(f"joints32 must be ({b},{j},2), got {tuple(joints32.shape)}")
        if tuple(heatmaps.shape) != (b, j, g, g):
            raise InputError(f"heatmaps must be ({b},{j},{g},{g}) (the latent grid of a {images.shape[2]} crop), "
                             f"got {tuple(heatmaps.shape)}")


class _Spec(nn.Module):
    """A module whose state_dict is a given mapping (lets weights.io.check_state_dict check key sets)."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = dict(state)

    def state_dict(self, *args, **kwargs) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._state


def _read_diffusers_config(path: Path, class_name: str) -> dict[str, Any]:
    cfg = read_json(path, error=WeightsError, what="diffusers config")
    if not isinstance(cfg, dict):
        raise WeightsError(f"diffusers config {path} is not a JSON object")
    if cfg.get("_class_name", class_name) != class_name:
        raise WeightsError(f"{path} describes a {cfg['_class_name']}, expected {class_name}")
    return cfg
