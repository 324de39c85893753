"""A tiny checkpoint in the official DPMesh release format (tests of weights/convert_official.py).

The diffusers -> ldm renaming here is written from the naming rules of the two code bases (CompVis
``openaimodel.UNetModel`` / ``cldm.ControlNet`` / ``ldm`` VAE ``Encoder`` vs diffusers), independently
of the converter, which uses diffusers' own ldm -> diffusers functions. Converting the tiny
checkpoint back must therefore reproduce the tiny diffusers weights exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

_RESNET_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP_LDM = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                 "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
                 "controlnet_mid_block": "middle_block_out.0"}
_VAE_ATTN_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet_rest_to_ldm(rest: str) -> str:
    head, tail = rest.split(".", 1)
    return f"{_RESNET_LDM[head]}.{tail}"


def diffusers_unet_key_to_ldm(key: str, layers_per_block: int, up_block_types: tuple[str, ...] = ()) -> str:
    """ldm name of a diffusers UNet2DConditionModel / ControlNetModel key (SD1.x layout).

    ldm numbers the UNet's layers flat: ``input_blocks`` = conv_in, then per down block
    ``layers_per_block`` (resnet[, attention]) layers and a downsampler; ``middle_block`` = resnet,
    attention, resnet; ``output_blocks`` = per up block ``layers_per_block + 1`` (resnet[, attention]
    [, upsampler]) layers. Inside a layer, index 0 is the resnet (or the downsampler ``op``), 1 the
    attention (or the upsampler when there is no attention), 2 the upsampler after an attention.
    ControlNet zero convs: ``controlnet_down_blocks.i`` -> ``zero_convs.i.0``.
    """
    import re

    n = layers_per_block
    for d, ldm in _UNET_TOP_LDM.items():
        if key.startswith(d + "."):
            return ldm + key[len(d):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        layer = b * (n + 1) + j + 1
        return (f"input_blocks.{layer}.0.{_resnet_rest_to_ldm(rest)}" if kind == "resnets"
                else f"input_blocks.{layer}.1.{rest}")
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (n + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_rest_to_ldm(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        layer = b * (n + 1) + j
        return (f"output_blocks.{layer}.0.{_resnet_rest_to_ldm(rest)}" if kind == "resnets"
                else f"output_blocks.{layer}.1.{rest}")
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        slot = 2 if up_block_types[b].startswith("CrossAttn") else 1
        return f"output_blocks.{b * (n + 1) + n}.{slot}.conv.{m[2]}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
        return f"zero_convs.{m[1]}.0.{m[2]}"
    raise KeyError(f"no ldm name for diffusers UNet key {key!r}")


def diffusers_vae_key_to_ldm(key: str) -> tuple[str, bool]:
    """(ldm name, conv1x1) of a diffusers AutoencoderKL encoder-side key; conv1x1: the ldm tensor is the
    diffusers linear weight with two trailing unit dimensions (mid-block attention q/k/v/proj_out)."""
    import re

    simple = {"encoder.conv_in": "encoder.conv_in", "encoder.conv_out": "encoder.conv_out",
              "encoder.conv_norm_out": "encoder.norm_out", "quant_conv": "quant_conv",
              "post_quant_conv": "post_quant_conv"}
    for d, ldm in simple.items():
        if key.startswith(d + "."):
            return ldm + key[len(d):], False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.fullmatch(r"encoder\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.mid.block_{int(m[1]) + 1}.{m[2]}", False
    if m := re.fullmatch(r"encoder\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)",
                         key):
        return f"encoder.mid.attn_1.{_VAE_ATTN_LDM[m[1]]}.{m[2]}", m[1] != "group_norm" and m[2] == "weight"
    raise KeyError(f"no ldm name for diffusers VAE key {key!r}")


@dataclasses.dataclass
class TinyOfficialCheckpoint:
    """What :func:`make_tiny_official_checkpoint` wrote.

    Attributes:
        path: the checkpoint file.
        state: the flat state dict as written (with ``module.`` unless disabled; before any wrapper).
            Duplicated subtrees are the same tensor objects (as in the release).
        expected: our components' state dicts that converting must reproduce exactly (keys as in
            ``docs/CONTRACTS.md``: "vae", "unet", "unet_lora", "controlnet", "adapter", "regressor",
            "pose_decoder").
        target: the :class:`~dpmesh_infer.weights.convert_official.ConversionTarget` of the tiny model.
        backbone, regressor, pose_decoder: the source modules (eval mode).
    """

    path: Path
    state: dict
    expected: dict
    target: Any
    backbone: Any
    regressor: Any
    pose_decoder: Any


def make_tiny_official_checkpoint(path: str | Path, *, seed: int = 0, wrapper: str | None = None,
                                  module_prefix: bool = True, position_ids: bool = False) -> TinyOfficialCheckpoint:
    """Write a tiny checkpoint laid out exactly like an official DPMesh release file.

    Built from tiny random modules (``tiny.tiny_configs()``: SD1.5 structure at small widths, LoRA
    rank 4 with non-zero ``lora_B``, non-zero ControlNet zero-convs) and renamed to ldm names with
    :func:`diffusers_unet_key_to_ldm` / :func:`diffusers_vae_key_to_ldm`. Contents, as in the release:
    ``module.`` prefix; ``backbone.sd_model.{model.diffusion_model, control_model (34-channel input,
    no hint block), first_stage_model (encoder, quant_conv, post_quant_conv)}``; LoRA triples
    ``X.linear.{weight,bias}`` + ``X.lora_down.weight`` + ``X.lora_up.weight``; the duplicated
    subtrees ``backbone.unet.unet.*`` and ``backbone.encoder_vq.*`` (same tensors, saved once); DDPM
    buffers; a few CLIP text-tower tensors; ``backbone.outmodules.*``, ``kp_lifting.*``; the regressor;
    VPoser encoder (with BatchNorm stats) + decoder; SMPL ``human_model_layer.th_*`` buffers (tiny).

    Args:
        wrapper: None (flat, as released) or "network"/"state_dict" (``{wrapper: state, "epoch": 0}``).
        module_prefix: add ``module.`` (DDP) to every key.
        position_ids: add the CLIP ``embeddings.position_ids`` buffer (transformers < 4.31 saved it).
    """
    import torch
    from peft.utils import get_peft_model_state_dict

    from ..models.backbone import ADAPTER_NAME, DiffusionBackbone
    from ..models.pose_decoders import build_pose_decoder
    from ..models.regressor import Regressor
    from ..weights.convert_official import ConversionTarget
    from .tiny import tiny_configs

    b_cfg, r_cfg, d_cfg, unet_cfg, cn_cfg, vae_cfg = tiny_configs("vposer")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=gen) * scale

    bb = DiffusionBackbone.build(b_cfg, unet_cfg, cn_cfg, vae_cfg)
    with torch.no_grad():  # zero-initialised parts must matter for the test
        for name, p in bb.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(rnd(*p.shape))
        for m in list(bb.controlnet.controlnet_down_blocks) + [bb.controlnet.controlnet_mid_block]:
            m.weight.copy_(rnd(*m.weight.shape))
            m.bias.copy_(rnd(*m.bias.shape))
    regressor = Regressor(r_cfg).eval()
    decoder = build_pose_decoder(d_cfg).eval()
    expected = {
        "vae": dict(bb.vae.state_dict()),
        "unet": bb.unet_base_state_dict(),
        "unet_lora": get_peft_model_state_dict(bb.unet, adapter_name=ADAPTER_NAME),
        "controlnet": dict(bb.controlnet.state_dict()),
        "adapter": dict(bb.adapter.state_dict()),
        "regressor": dict(regressor.state_dict()),
        "pose_decoder": dict(decoder.state_dict()),
    }
    expected = {c: {k: v.detach().clone() for k, v in s.items()} for c, s in expected.items()}

    sd: dict[str, torch.Tensor] = {}
    lpb, up_types = unet_cfg["layers_per_block"], tuple(unet_cfg["up_block_types"])
    lora_modules = {k[: -len(".lora_A.weight")] for k in expected["unet_lora"] if k.endswith(".lora_A.weight")}
    unet_p = "backbone.sd_model.model.diffusion_model."
    for k, v in expected["unet"].items():
        module, leaf = k.rsplit(".", 1)
        if module in lora_modules:
            x = diffusers_unet_key_to_ldm(module + ".weight", lpb, up_types)[: -len(".weight")]
            sd[f"{unet_p}{x}.linear.{leaf}"] = v
        else:
            sd[unet_p + diffusers_unet_key_to_ldm(k, lpb, up_types)] = v
    for module in sorted(lora_modules):
        x = diffusers_unet_key_to_ldm(module + ".weight", lpb, up_types)[: -len(".weight")]
        sd[f"{unet_p}{x}.lora_down.weight"] = expected["unet_lora"][module + ".lora_A.weight"]
        sd[f"{unet_p}{x}.lora_up.weight"] = expected["unet_lora"][module + ".lora_B.weight"]
    for k, v in expected["controlnet"].items():
        sd["backbone.sd_model.control_model." + diffusers_unet_key_to_ldm(k, cn_cfg["layers_per_block"])] = v
    vae_keys = {}
    for k, v in expected["vae"].items():
        ldm, conv = diffusers_vae_key_to_ldm(k)
        vae_keys["first_stage_model." + ldm] = v[:, :, None, None] if conv else v
    lat = vae_cfg["latent_channels"]
    vae_keys["first_stage_model.post_quant_conv.weight"] = rnd(lat, lat, 1, 1)
    vae_keys["first_stage_model.post_quant_conv.bias"] = rnd(lat)
    for k, v in vae_keys.items():
        sd["backbone.sd_model." + k] = v

    t_steps = 10
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "logvar"):
        sd["backbone.sd_model." + name] = torch.rand(t_steps, generator=gen)
    clip = "backbone.sd_model.cond_stage_model.transformer."
    sd[clip + "embeddings.token_embedding.weight"] = rnd(16, 8)
    sd[clip + "embeddings.position_embedding.weight"] = rnd(7, 8)
    sd[clip + "encoder.layers.0.self_attn.q_proj.weight"] = rnd(8, 8)
    sd[clip + "final_layer_norm.weight"] = rnd(8)
    sd[clip + "final_layer_norm.bias"] = rnd(8)
    if position_ids:
        sd[clip + "embeddings.position_ids"] = torch.arange(7).unsqueeze(0)

    for k in [k for k in sd if k.startswith("backbone.sd_model.")]:  # same module registered twice
        sd["backbone.unet.unet." + k[len("backbone.sd_model."):]] = sd[k]
    for k, v in vae_keys.items():
        sd["backbone.encoder_vq." + k[len("first_stage_model."):]] = v

    for k, v in expected["adapter"].items():
        sd[("backbone." + k) if k.startswith("outmodules.") else k] = v
    sd.update(expected["regressor"])
    for k, v in expected["pose_decoder"].items():
        sd["vposer.vposer." + k] = v
    hid, lat_dim = d_cfg.hidden_dim, d_cfg.latent_dim
    enc = {"bodyprior_enc_fc1.weight": rnd(hid, 63), "bodyprior_enc_fc1.bias": rnd(hid),
           "bodyprior_enc_fc2.weight": rnd(hid, hid), "bodyprior_enc_fc2.bias": rnd(hid),
           "bodyprior_enc_mu.weight": rnd(lat_dim, hid), "bodyprior_enc_mu.bias": rnd(lat_dim),
           "bodyprior_enc_logvar.weight": rnd(lat_dim, hid), "bodyprior_enc_logvar.bias": rnd(lat_dim)}
    for bn, c in (("bodyprior_enc_bn1", 63), ("bodyprior_enc_bn2", hid)):
        enc.update({f"{bn}.weight": 1 + rnd(c), f"{bn}.bias": rnd(c), f"{bn}.running_mean": rnd(c),
                    f"{bn}.running_var": 1 + rnd(c).abs(), f"{bn}.num_batches_tracked": torch.tensor(7)})
    for k, v in enc.items():
        sd["vposer.vposer." + k] = v
    n_v = 20
    sd.update({"human_model_layer.th_betas": rnd(1, 10), "human_model_layer.th_shapedirs": rnd(n_v, 3, 10),
               "human_model_layer.th_posedirs": rnd(n_v, 3, 207), "human_model_layer.th_v_template": rnd(1, n_v, 3),
               "human_model_layer.th_J_regressor": rnd(24, n_v), "human_model_layer.th_weights": rnd(n_v, 24),
               "human_model_layer.th_faces": torch.randint(0, n_v, (10, 3), generator=gen)})

    sd = {k: v.detach() for k, v in sd.items()}
    if module_prefix:
        sd = {"module." + k: v for k, v in sd.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 0}, path)
    target = ConversionTarget(b_cfg, r_cfg, d_cfg, unet_cfg, cn_cfg, vae_cfg)
    bb.eval()
    return TinyOfficialCheckpoint(path, sd, expected, target, bb, regressor, decoder)
