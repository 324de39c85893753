"""Diffusion backbone: shapes (full size on meta), numerics against independent computations (tiny)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from dpmesh_infer.errors import ConfigError, InputError, WeightsError
from dpmesh_infer.models import sd15
from dpmesh_infer.models.attention import CAPTURED_ATTN2, CaptureStore, CrossAttentionCapture, maps_to_grid
from dpmesh_infer.models.backbone import (
    BackboneAdapter,
    BackboneConfig,
    DiffusionBackbone,
    _StopAfterLastTap,
)
from dpmesh_infer.models.io import read_safetensors, save_safetensors
from dpmesh_infer.stand_ins.tiny import tiny_configs
from dpmesh_infer.weights.layout import backbone_folders

TINY = tiny_configs()

B = 2


def _tiny(seed: int = 0, randomize: bool = True) -> DiffusionBackbone:
    torch.manual_seed(seed)
    bb = DiffusionBackbone.build(TINY.backbone, TINY.unet, TINY.controlnet, TINY.vae)
    if randomize:  # LoRA B and the ControlNet zero-convs are zero-initialised; make them matter
        with torch.no_grad():
            for name, p in bb.unet.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.05)
            for m in list(bb.controlnet.controlnet_down_blocks) + [bb.controlnet.controlnet_mid_block]:
                m.weight.normal_(0.0, 0.05)
                m.bias.normal_(0.0, 0.05)
    return bb


@pytest.fixture(scope="module")
def tiny() -> DiffusionBackbone:
    return _tiny()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(B, 3, 256, 256, generator=g)
    joints32 = torch.rand(B, 30, 2, generator=g) * 32
    heatmaps = torch.rand(B, 30, 32, 32, generator=g)
    return images, joints32, heatmaps


@pytest.fixture(scope="module")
def reference(tiny, inputs):
    with torch.no_grad():
        return tiny.forward_features(*inputs), tiny(*inputs)


@pytest.fixture(scope="module")
def saved_dir(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("backbone") / "weights"
    tiny.save_folders(**backbone_folders(root))
    return root


def _expected_lora_targets(n_blocks_per_stage=((2, 2, 2, 0), 1, (0, 3, 3, 3))) -> set[str]:
    down, mid, up = n_blocks_per_stage
    blocks = [f"down_blocks.{i}.attentions.{a}" for i, n in enumerate(down) for a in range(n)]
    blocks += ["mid_block.attentions.0"]
    blocks += [f"up_blocks.{i}.attentions.{a}" for i, n in enumerate(up) for a in range(n)]
    leaves = [f"attn{k}.{p}" for k in (1, 2) for p in ("to_q", "to_k", "to_v", "to_out.0")] + ["ff.net.0.proj"]
    return {f"{b}.transformer_blocks.0.{leaf}" for b in blocks for leaf in leaves}


# ----------------------------------------------------------------------------------------- full size
def test_full_size_on_meta_shapes_and_lora_coverage():
    full = DiffusionBackbone.build(BackboneConfig(), sd15.unet_config(), sd15.controlnet_config(),
                                   sd15.vae_config(), device="meta")
    targets = full.lora_target_modules()
    assert len(targets) == 144 and set(targets) == _expected_lora_targets()
    lora = {n: p for n, p in full.unet.named_parameters() if "lora_" in n}
    assert sum(p.numel() for p in lora.values()) == 19_943_424
    assert all(p.requires_grad for p in lora.values())
    assert not any(p.requires_grad for n, p in full.unet.named_parameters() if "lora_" not in n)
    assert not any(".lora_" in n for n, _ in full.controlnet.named_modules())
    assert tuple(full.controlnet.conv_in.weight.shape) == (320, 34, 3, 3)
    assert not any(k.startswith("controlnet_cond_embedding") for k in full.controlnet.state_dict())
    assert {k.split(".")[0] for k in full.vae.state_dict()} == {"encoder", "quant_conv"}
    ad = full.adapter.state_dict()
    assert tuple(ad["outmodules.2.0.weight"].shape) == (2048, 3580, 1, 1)
    assert tuple(ad["outmodules.1.0.weight"].shape) == (670, 670, 3, 3)
    assert tuple(ad["outmodules.0.3.weight"].shape) == (320, 320, 3, 3)
    assert tuple(ad["kp_lifting.weight"].shape) == (768, 2)
    assert sorted(ad) == sorted(f"{m}.{t}" for m in ("kp_lifting", "outmodules.0.0", "outmodules.0.1",
                                                     "outmodules.0.3", "outmodules.1.0", "outmodules.2.0",
                                                     "outmodules.2.1") for t in ("weight", "bias"))
    base = full.unet_base_state_dict()
    assert "conv_out.weight" in base and not any("base_layer" in k or "lora" in k for k in base)
    meta = torch.device("meta")
    feats = full.forward_features(torch.empty(1, 3, 256, 256, device=meta), torch.empty(1, 30, 2, device=meta),
                                  torch.empty(1, 30, 32, 32, device=meta))
    shapes = {k: tuple(getattr(feats, k).shape) for k in ("tap4", "tap8", "tap16", "tap32", "attn8", "attn16")}
    assert shapes == {"tap4": (1, 1280, 4, 4), "tap8": (1, 1280, 8, 8), "tap16": (1, 640, 16, 16),
                      "tap32": (1, 320, 32, 32), "attn8": (1, 30, 8, 8), "attn16": (1, 30, 16, 16)}
    assert tuple(full.adapter.merge(feats).shape) == (1, 2048, 8, 8)


def test_lora_saved_keys_are_peft_format(tiny):
    from peft.utils import get_peft_model_state_dict

    keys = set(get_peft_model_state_dict(tiny.unet))
    assert keys == set(tiny._unet_key_map(lora=True))
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.lora_B.weight" in keys
    assert len(keys) == 2 * 144


# ----------------------------------------------------------------------------------------- tiny numerics
def test_forward_shapes_and_map_normalisation(reference):
    feats, out = reference
    assert tuple(out.shape) == (B, TINY.backbone.merge_channels, 8, 8)
    assert tuple(feats.tap4.shape) == (B, 64, 4, 4)
    assert tuple(feats.tap8.shape) == (B, 64, 8, 8)
    assert tuple(feats.tap16.shape) == (B, 32, 16, 16)
    assert tuple(feats.tap32.shape) == (B, 32, 32, 32)
    assert tuple(feats.attn8.shape) == (B, 30, 8, 8) and tuple(feats.attn16.shape) == (B, 30, 16, 16)
    for m in (feats.attn8, feats.attn16):
        assert m.dtype == torch.float32
        torch.testing.assert_close(m.sum(dim=1), torch.ones_like(m[:, 0]), atol=1e-5, rtol=0)


def test_repeat_calls_identical_and_store_clean(tiny, inputs, reference):
    with torch.no_grad():
        again = tiny(*inputs)
    assert torch.equal(again, reference[1])
    assert not tiny.store.active and not tiny.store.maps and not tiny.store.taps
    with torch.no_grad():  # using the UNet outside the backbone neither records nor stops early
        out = tiny.unet(torch.rand(1, 4, 32, 32), 1, encoder_hidden_states=torch.rand(1, 30, 32)).sample
    assert tuple(out.shape) == (1, 4, 32, 32) and not tiny.store.maps and not tiny.store.taps


def test_capture_processor_matches_default_and_recomputation(tiny):
    from diffusers.models.attention_processor import AttnProcessor2_0

    attn = tiny.unet.get_submodule("up_blocks.1.attentions.0.transformer_blocks.0.attn2")
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(B, 64, attn.to_q.in_features, generator=g)
    context = torch.randn(B, 30, 32, generator=g)
    store = CaptureStore()
    with torch.no_grad():
        with store.recording():
            ours = CrossAttentionCapture("x", store)(attn, hidden, encoder_hidden_states=context)
            probs = store.maps["x"]
        default = AttnProcessor2_0()(attn, hidden, encoder_hidden_states=context)
        torch.testing.assert_close(ours, default, atol=1e-5, rtol=1e-5)
        q, k = attn.to_q(hidden), attn.to_k(context)  # LoRA-adapted projections
        assert not torch.allclose(q, attn.to_q.base_layer(hidden))  # LoRA is active
        d = q.shape[-1] // attn.heads
        qh = q.view(B, -1, attn.heads, d).transpose(1, 2)
        kh = k.view(B, -1, attn.heads, d).transpose(1, 2)
        expected = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1).mean(dim=1)
    assert tuple(probs.shape) == (B, 64, 30)
    torch.testing.assert_close(probs, expected, atol=1e-6, rtol=1e-5)


def test_whole_unet_same_output_with_default_processors(tiny):
    from diffusers.models.attention_processor import AttnProcessor2_0

    from dpmesh_infer.models.attention import install_capture

    g = torch.Generator().manual_seed(4)
    sample, ctx = torch.randn(1, 4, 32, 32, generator=g), torch.randn(1, 30, 32, generator=g)
    with torch.no_grad():
        ours = tiny.unet(sample, 1, encoder_hidden_states=ctx).sample
        try:
            tiny.unet.set_attn_processor(AttnProcessor2_0())
            default = tiny.unet(sample, 1, encoder_hidden_states=ctx).sample
        finally:
            install_capture(tiny.unet, tiny.store, CAPTURED_ATTN2)
    torch.testing.assert_close(ours, default, atol=1e-5, rtol=1e-5)


def test_attention_maps_equal_independent_recomputation(tiny, inputs, reference):
    """attn8/attn16 = mean over the 5 modules of head-mean softmax(q k^T / sqrt(d)), tokens as channels."""
    seen = {}

    def grab(name):
        def hook(module, args, kwargs):
            seen[name] = (args[0], kwargs["encoder_hidden_states"])
        return hook

    handles = [tiny.unet.get_submodule(n).register_forward_pre_hook(grab(n), with_kwargs=True)
               for n in CAPTURED_ATTN2]
    try:
        with torch.no_grad():
            tiny.forward_features(*inputs)
            by_side = {}
            for name in CAPTURED_ATTN2:
                attn = tiny.unet.get_submodule(name)
                hidden, ctx = seen[name]
                q, k = attn.to_q(hidden), attn.to_k(ctx)
                d = q.shape[-1] // attn.heads
                qh = q.view(B, -1, attn.heads, d).transpose(1, 2)
                kh = k.view(B, -1, attn.heads, d).transpose(1, 2)
                p = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1).mean(dim=1)  # (B, HW, 30)
                side = math.isqrt(p.shape[1])
                by_side.setdefault(side, []).append(p.transpose(1, 2).reshape(B, 30, side, side))
    finally:
        for h in handles:
            h.remove()
    assert sorted((s, len(v)) for s, v in by_side.items()) == [(8, 5), (16, 5)]
    feats = reference[0]
    torch.testing.assert_close(feats.attn8, torch.stack(by_side[8]).mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(feats.attn16, torch.stack(by_side[16]).mean(0), atol=1e-6, rtol=1e-5)


def test_maps_to_grid_row_major():
    hw = torch.arange(16.0)  # pixel index r*4 + c
    m = torch.stack([hw, 10 * hw], dim=-1)[None]  # (1, 16, 2): token 1 = 10 x token 0
    grid = maps_to_grid([m, 3 * m])
    assert tuple(grid.shape) == (1, 2, 4, 4)
    assert grid[0, 0, 1, 2].item() == pytest.approx(2 * 6.0) and grid[0, 1, 3, 0].item() == pytest.approx(2 * 120.0)


def test_taps_feed_the_unet_head_with_controlnet_residuals(tiny, inputs, reference):
    """The 32x32 tap is the input of conv_norm_out: head(tap32) equals a full UNet pass with residuals."""
    images, joints32, heatmaps = inputs
    with torch.no_grad():
        latent = tiny.encode_images(images)
        tokens = tiny.adapter.joint_tokens(joints32, 32)
        t = torch.ones(B, dtype=torch.long)
        down, mid = tiny.controlnet(torch.cat([latent, heatmaps], 1), t, tokens, heatmaps, return_dict=False)
        full = tiny.unet(latent, t, encoder_hidden_states=tokens, down_block_additional_residuals=list(down),
                         mid_block_additional_residual=mid).sample
        u = tiny.unet
        head = u.conv_out(u.conv_act(u.conv_norm_out(reference[0].tap32)))
    torch.testing.assert_close(head, full, atol=1e-5, rtol=1e-5)


def test_controlnet_residuals_are_added():
    bb = _tiny(seed=5)
    g = torch.Generator().manual_seed(6)
    images, joints32 = torch.rand(1, 3, 256, 256, generator=g), torch.rand(1, 30, 2, generator=g) * 32
    heatmaps = torch.rand(1, 30, 32, 32, generator=g)

    def plain_unet_path():
        latent = bb.encode_images(images)
        tokens = bb.adapter.joint_tokens(joints32, 32)
        with bb.store.recording() as st:
            with pytest.raises(_StopAfterLastTap):
                bb.unet(latent, torch.ones(1, dtype=torch.long), encoder_hidden_states=tokens)
            return dict(st.taps)

    with torch.no_grad():
        plain = plain_unet_path()
        with_cn = bb.forward_features(images, joints32, heatmaps)
        assert not torch.allclose(with_cn.tap32, plain["tap32"], atol=1e-4)
        for m in list(bb.controlnet.controlnet_down_blocks) + [bb.controlnet.controlnet_mid_block]:
            m.weight.zero_()
            m.bias.zero_()
        zeroed = bb.forward_features(images, joints32, heatmaps)
    for key in ("tap4", "tap8", "tap16", "tap32"):
        torch.testing.assert_close(getattr(zeroed, key), plain[key], atol=1e-6, rtol=1e-6)


def test_lora_changes_output(tiny, inputs, reference):
    with torch.no_grad():
        try:
            tiny.unet.disable_adapters()
            without = tiny(*inputs)
        finally:
            tiny.unet.enable_adapters()
        again = tiny(*inputs)
    assert not torch.allclose(without, reference[1], atol=1e-4)
    assert torch.equal(again, reference[1])


def test_vae_latent_is_posterior_mean_of_intact_autoencoder(tiny, inputs):
    from diffusers import AutoencoderKL

    torch.manual_seed(7)
    intact = AutoencoderKL.from_config(TINY.vae).eval()
    state = {k: v for k, v in intact.state_dict().items() if k.split(".")[0] in ("encoder", "quant_conv")}
    bb = _tiny(randomize=False)
    bb.vae.load_state_dict(state, strict=True)
    with torch.no_grad():
        ours = bb.encode_images(inputs[0])
        expected = intact.encode(inputs[0]).latent_dist.mode()
    assert tuple(ours.shape) == (B, 4, 32, 32)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-6)


def test_fp32_maps_under_autocast(tiny, inputs):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = tiny.forward_features(*inputs)
        out = tiny.adapter.merge(feats)
    assert feats.attn8.dtype == torch.float32 and feats.attn16.dtype == torch.float32
    torch.testing.assert_close(feats.attn16.sum(1), torch.ones_like(feats.attn16[:, 0]), atol=1e-5, rtol=0)
    assert tuple(out.shape) == (B, TINY.backbone.merge_channels, 8, 8) and torch.isfinite(out).all()


def test_gradients_reach_lora_and_adapter_only():
    bb = _tiny(seed=8)
    params = bb.trainable_parameters()
    n_lora = sum(1 for n, _ in bb.unet.named_parameters() if "lora_" in n)
    assert len(params) == n_lora + len(list(bb.adapter.parameters()))
    g = torch.Generator().manual_seed(9)
    out = bb(torch.rand(1, 3, 256, 256, generator=g), torch.rand(1, 30, 2, generator=g) * 32,
             torch.rand(1, 30, 32, 32, generator=g))
    out.square().mean().backward()
    assert all(p.grad is not None for p in params)
    frozen = [p for p in list(bb.vae.parameters()) + list(bb.controlnet.parameters()) if p.grad is not None]
    frozen += [p for n, p in bb.unet.named_parameters() if "lora_" not in n and p.grad is not None]
    assert not frozen
    assert len(bb.trainable_parameters(include_controlnet=True)) == len(params) + len(list(bb.controlnet.parameters()))


# ----------------------------------------------------------------------------------------- weights I/O
def test_saved_layout_and_key_names(tiny, saved_dir):
    expected_files = ["adapter/config.json", "adapter/model.safetensors", "controlnet/config.json",
                      "controlnet/diffusion_pytorch_model.safetensors", "unet/config.json",
                      "unet/diffusion_pytorch_model.safetensors", "unet_lora/adapter_config.json",
                      "unet_lora/adapter_model.safetensors", "vae/config.json",
                      "vae/diffusion_pytorch_model.safetensors"]
    assert sorted(str(p.relative_to(saved_dir)) for p in saved_dir.rglob("*") if p.is_file()) == expected_files
    vae = read_safetensors(saved_dir / "vae/diffusion_pytorch_model.safetensors")
    assert {k.split(".")[0] for k in vae} == {"encoder", "quant_conv"}
    unet = read_safetensors(saved_dir / "unet/diffusion_pytorch_model.safetensors")
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        plain = UNet2DConditionModel.from_config(TINY.unet)
    assert set(unet) == set(plain.state_dict())  # exactly the diffusers names, LoRA not merged
    lora = read_safetensors(saved_dir / "unet_lora/adapter_model.safetensors")
    assert len(lora) == 288 and all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in lora)
    cn = read_safetensors(saved_dir / "controlnet/diffusion_pytorch_model.safetensors")
    assert "conv_in.weight" in cn and not any(k.startswith("controlnet_cond_embedding") for k in cn)
    assert json.loads((saved_dir / "controlnet/config.json").read_text())["in_channels"] == 34
    lcfg = json.loads((saved_dir / "unet_lora/adapter_config.json").read_text())
    assert (lcfg["r"], lcfg["lora_alpha"], lcfg["lora_dropout"], lcfg["peft_type"]) == (
        TINY.backbone.lora_rank, TINY.backbone.lora_alpha, 0.0, "LORA")
    assert BackboneConfig.load_json(saved_dir / "adapter/config.json") == TINY.backbone


def test_round_trip_identical_output(saved_dir, inputs, reference):
    loaded = DiffusionBackbone.from_folders(**backbone_folders(saved_dir))
    assert not any(t.is_meta for t in loaded.state_dict().values())
    with torch.no_grad():
        out = loaded(*inputs)
    assert torch.equal(out, reference[1])


def _copy(saved_dir, tmp_path):
    dst = tmp_path / "w"
    shutil.copytree(saved_dir, dst)
    return dst


def test_strict_loading_names_missing_and_unexpected_keys(saved_dir, tmp_path):
    d = _copy(saved_dir, tmp_path)
    path = d / "unet/diffusion_pytorch_model.safetensors"
    state = read_safetensors(path)
    victim = "up_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight"
    del state[victim]
    save_safetensors(state, path)
    with pytest.raises(WeightsError, match="missing keys") as e:
        DiffusionBackbone.from_folders(**backbone_folders(d))
    assert victim in str(e.value) and str(path) in str(e.value)

    d2 = _copy(saved_dir, tmp_path / "b")
    path = d2 / "adapter/model.safetensors"
    state = read_safetensors(path)
    state["outmodules.3.0.weight"] = torch.zeros(1)
    save_safetensors(state, path)
    with pytest.raises(WeightsError, match="unexpected keys") as e:
        DiffusionBackbone.from_folders(**backbone_folders(d2))
    assert "outmodules.3.0.weight" in str(e.value)

    d3 = _copy(saved_dir, tmp_path / "c")
    path = d3 / "unet_lora/adapter_model.safetensors"
    state = read_safetensors(path)
    key = "mid_block.attentions.0.transformer_blocks.0.attn1.to_v.lora_B.weight"
    state[key] = torch.zeros(state[key].shape[0], 3)
    save_safetensors(state, path)
    with pytest.raises(WeightsError, match="shape mismatches") as e:
        DiffusionBackbone.from_folders(**backbone_folders(d3))
    assert key in str(e.value)


def test_missing_folder_and_lora_config_mismatch(saved_dir, tmp_path):
    d = _copy(saved_dir, tmp_path)
    shutil.rmtree(d / "controlnet")
    with pytest.raises(WeightsError, match="controlnet") as e:
        DiffusionBackbone.from_folders(**backbone_folders(d))
    assert str(d / "controlnet" / "config.json") in str(e.value)

    d2 = _copy(saved_dir, tmp_path / "b")
    cfg_path = d2 / "unet_lora/adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = ["to_q", "to_k", "to_v", "to_out.0"]  # misses ff.net.0.proj
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="target modules differ"):
        DiffusionBackbone.from_folders(**backbone_folders(d2))


def test_load_component_states_is_strict(tiny):
    bb = _tiny(randomize=False)
    states = dict(vae_state=tiny.vae.state_dict(), unet_state=tiny.unet_base_state_dict(),
                  lora_state={k: t for k, (_, t) in tiny._unet_key_map(lora=True).items()},
                  controlnet_state=tiny.controlnet.state_dict(), adapter_state=tiny.adapter.state_dict())
    bb.load_component_states(**states)
    for a, b in zip(bb.state_dict().values(), tiny.state_dict().values()):
        assert torch.equal(a, b)
    bad = dict(states, controlnet_state=dict(states["controlnet_state"], **{"controlnet_cond_embedding.conv_in.weight":
                                                                          torch.zeros(1)}))
    with pytest.raises(WeightsError, match="controlnet_cond_embedding.conv_in.weight"):
        bb.load_component_states(**bad)


# ----------------------------------------------------------------------------------------- config / inputs
def test_config_round_trip_and_validation():
    cfg = TINY.backbone
    assert BackboneConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert BackboneConfig().merge_in_channels == 3580
    with pytest.raises(ConfigError, match="joint_token_layers"):
        BackboneConfig(joint_token_layers=3)
    with pytest.raises(ConfigError, match="unknown keys"):
        BackboneConfig.from_dict({"nope": 1})
    two = BackboneAdapter(BackboneConfig(joint_token_layers=2, cross_attention_dim=8, unet_channels=(16, 16, 32, 32),
                                         merge_channels=32))
    assert {k for k in two.state_dict() if k.startswith("kp_lifting")} == {
        "kp_lifting.0.weight", "kp_lifting.0.bias", "kp_lifting.2.weight", "kp_lifting.2.bias"}
    assert tuple(two.joint_tokens(torch.zeros(3, 30, 2), 32).shape) == (3, 30, 8)


def test_inconsistent_component_configs_rejected():
    cn = dict(TINY.controlnet)
    cn["in_channels"] = 4 + 17
    with pytest.raises(ConfigError, match="in_channels"):
        DiffusionBackbone.build(TINY.backbone, TINY.unet, cn, TINY.vae,
                                device="meta")


def test_input_shapes_validated(tiny, inputs):
    images, joints32, heatmaps = inputs
    with pytest.raises(InputError, match="images"):
        tiny(images[:, :, :128], joints32, heatmaps)
    with pytest.raises(InputError, match="joints32"):
        tiny(images, torch.cat([joints32, joints32[..., :1]], -1), heatmaps)
    with pytest.raises(InputError, match="heatmaps"):
        tiny(images, joints32, heatmaps[:, :17])
