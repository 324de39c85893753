"""Official checkpoint conversion: full-size key mapping on meta (layout JSON), exact tiny round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dpmesh_infer.errors import InputError, UntrustedCheckpointError, WeightsError
from dpmesh_infer.models.io import read_safetensors
from dpmesh_infer.stand_ins.official import make_tiny_official_checkpoint
from dpmesh_infer.weights import convert_official as co
from dpmesh_infer.weights.convert_official import (
    ConversionReport,
    convert_official,
    load_official_checkpoint,
    map_official_state_dict,
    verify_mapped,
)
from dpmesh_infer.weights.layout import backbone_folders

FILES = {
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "unet_lora": "unet_lora/adapter_model.safetensors",
    "controlnet": "controlnet/diffusion_pytorch_model.safetensors",
    "adapter": "adapter/model.safetensors",
    "regressor": "regressor/model.safetensors",
    "pose_decoder": "pose_decoder/model.safetensors",
}
SD, DUP = "module.backbone.sd_model.", "module.backbone.unet.unet."


# ----------------------------------------------------------------------------------- full size, meta
@pytest.fixture(scope="module")
def layout() -> dict[str, dict]:
    from conftest import official_layout

    return official_layout()


def _meta_state(layout: dict[str, dict]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v["shape"], dtype=getattr(torch, v["dtype"]), device="meta") for k, v in layout.items()}


def _both_copies(state: dict, rest: str, tensor: torch.Tensor | None) -> None:
    """Set (or delete, when tensor is None) a backbone.sd_model key and its backbone.unet.unet twin."""
    for prefix in (SD, DUP):
        if tensor is None:
            del state[prefix + rest]
        else:
            state[prefix + rest] = tensor


def test_layout_json_maps_completely_on_meta(layout):
    state = _meta_state(layout)
    mapped = map_official_state_dict(state)
    verify_mapped(mapped)  # full-size target modules on meta: exact keys and shapes
    r, c = mapped.report, mapped.components

    assert r.num_mapped + r.num_dropped + sum(r.duplicates.values()) == len(state)
    assert r.duplicates_check == "shape"
    assert r.duplicates == {"backbone.unet.unet.* = backbone.sd_model.*": 1617,
                            "backbone.encoder_vq.* = backbone.sd_model.first_stage_model.*": 110}
    assert (r.lora_rank, r.lora_targets) == (64, 144)
    assert r.module_prefix and r.unwrapped is None
    assert r.mapped == {"vae": 108, "unet": 686, "unet_lora": 288, "controlnet": 324, "adapter": 14,
                        "regressor": 182, "pose_decoder": 6}
    dropped = {reason.split(" ")[0]: len(keys) for reason, keys in r.dropped.items()}
    assert dropped == {"CLIP": 196, "DDPM": 13, "VAE": 2, "VPoser": 18, "SMPL": 7}
    assert all(t.is_meta for comp in c.values() for t in comp.values())

    # spot checks of the renaming
    assert c["controlnet"]["conv_in.weight"].shape == (320, 34, 3, 3)
    assert c["controlnet"]["controlnet_down_blocks.11.weight"].shape == (1280, 1280, 1, 1)
    assert c["controlnet"]["controlnet_mid_block.weight"].shape == (1280, 1280, 1, 1)
    assert not any(k.startswith("controlnet_cond_embedding.") for k in c["controlnet"])
    assert c["vae"]["encoder.mid_block.attentions.0.to_q.weight"].shape == (512, 512)  # 1x1 conv -> linear
    assert set(k.split(".")[0] for k in c["vae"]) == {"encoder", "quant_conv"}
    assert c["unet"]["conv_out.weight"].shape == (4, 320, 3, 3)  # head kept: complete diffusers UNet
    lora_a = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight"
    assert c["unet_lora"][lora_a].shape == (64, 768)
    assert c["unet_lora"]["up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.lora_B.weight"].shape == (
        2560, 64)
    assert mapped.target.backbone.lora_rank == mapped.target.backbone.lora_alpha == 64
    assert "Converted state dict" in str(r) and "144 Linears, rank 64" in str(r)


def test_layout_json_with_position_ids_converts(layout):
    state = _meta_state(layout)
    for prefix in (SD, DUP):  # transformers < 4.31 persisted this buffer (in each copy)
        state[prefix + "cond_stage_model.transformer.embeddings.position_ids"] = torch.empty(
            1, 77, dtype=torch.int64, device="meta")
    mapped = map_official_state_dict(state)
    verify_mapped(mapped)
    clip = next(keys for reason, keys in mapped.report.dropped.items() if reason.startswith("CLIP"))
    assert "backbone.sd_model.cond_stage_model.transformer.embeddings.position_ids" in clip


def test_layout_json_unknown_keys_are_named(layout):
    state = _meta_state(layout)
    state["module.backbone.sd_model.model_ema.decay"] = torch.empty((), device="meta")
    state["module.something_new.weight"] = torch.empty(3, device="meta")
    with pytest.raises(WeightsError) as e:
        map_official_state_dict(state)
    assert "backbone.sd_model.model_ema.decay" in str(e.value) and "something_new.weight" in str(e.value)


def test_layout_json_unknown_key_inside_the_unet_is_named(layout):
    state = _meta_state(layout)
    _both_copies(state, "model.diffusion_model.input_blocks.1.1.extra_gate.weight", torch.empty(3, device="meta"))
    mapped = map_official_state_dict(state)  # diffusers' renaming passes unknown attention keys through
    with pytest.raises(WeightsError, match=r"sd_model.model.diffusion_model.input_blocks.1.1.extra_gate.weight "
                                           r"\(-> unet down_blocks.0.attentions.0.extra_gate.weight\)"):
        verify_mapped(mapped)


def test_lora_coverage_is_detected_generically(layout):
    """LoRA on a ResBlock Linear (upstream §2.8 ambiguity) maps generically; the backbone cannot load it."""
    state = _meta_state(layout)
    x = "model.diffusion_model.input_blocks.1.0.emb_layers.1"
    for leaf in ("weight", "bias"):
        t = state[SD + f"{x}.{leaf}"]
        _both_copies(state, f"{x}.{leaf}", None)
        _both_copies(state, f"{x}.linear.{leaf}", t)
    _both_copies(state, f"{x}.lora_down.weight", torch.empty(64, 1280, device="meta"))
    _both_copies(state, f"{x}.lora_up.weight", torch.empty(320, 64, device="meta"))
    mapped = map_official_state_dict(state)
    assert mapped.report.lora_targets == 145
    assert "down_blocks.0.resnets.0.time_emb_proj" in mapped.lora_pairs
    assert mapped.components["unet"]["down_blocks.0.resnets.0.time_emb_proj.weight"].shape == (320, 1280)
    with pytest.raises(WeightsError, match="down_blocks.0.resnets.0.time_emb_proj"):
        verify_mapped(mapped)


def test_incomplete_lora_triple_refused(layout):
    state = _meta_state(layout)
    _both_copies(state, "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.lora_up.weight", None)
    with pytest.raises(WeightsError, match="incomplete or malformed LoRA.*middle_block.1.transformer_blocks.0"):
        map_official_state_dict(state)


def test_vq_variant_refused(layout):
    state = _meta_state(layout)
    for k in [k for k in state if k.startswith("module.vposer.")]:
        del state[k]
    for i in range(4):
        state[f"module.cascade_pose_out.{i}.weight"] = torch.empty(2048, 256 if i == 0 else 256 + 2048, device="meta")
        state[f"module.cascade_pose_out.{i}.bias"] = torch.empty(2048, device="meta")
    state["module.spose_shape_cam_param"] = torch.empty(51, 256, device="meta")
    state["module.vqvae.codebook"] = torch.empty(2048, 256, device="meta")
    with pytest.raises(WeightsError, match="VQ-VAE variant.*not supported"):
        map_official_state_dict(state)


def test_controlnet_hint_block_refused(layout):
    state = _meta_state(layout)
    _both_copies(state, "control_model.input_hint_block.0.weight", torch.empty(16, 3, 3, 3, device="meta"))
    with pytest.raises(WeightsError, match="hint encoder"):
        map_official_state_dict(state)


def test_wrong_shape_is_reported_by_verification(layout):
    state = _meta_state(layout)
    _both_copies(state, "control_model.input_blocks.0.0.weight", torch.empty(320, 4, 3, 3, device="meta"))
    mapped = map_official_state_dict(state)
    with pytest.raises(WeightsError, match=r"conv_in.weight: file \(320, 4, 3, 3\) vs model \(320, 34, 3, 3\)"):
        verify_mapped(mapped)


# ----------------------------------------------------------------------------------- tiny, real data
@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_official_checkpoint(tmp_path_factory.mktemp("official") / "tiny_best_ckpt.pth.tar")


@pytest.fixture(scope="module")
def converted(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "weights"
    report = convert_official(tiny_ckpt.path, out, target=tiny_ckpt.target)
    return out, report


def _assert_exact(out: Path, expected: dict, dtype: torch.dtype | None = None) -> None:
    for comp, rel in FILES.items():
        got, exp = read_safetensors(out / rel), expected[comp]
        assert set(got) == set(exp), comp
        for k, v in exp.items():
            want = v.to(dtype) if dtype is not None and v.is_floating_point() else v
            assert got[k].dtype == want.dtype and torch.equal(got[k], want), f"{comp}: {k}"


def test_tiny_conversion_is_exact(tiny_ckpt, converted):
    out, report = converted
    _assert_exact(out, tiny_ckpt.expected)
    assert report.output == out and report.duplicates_check == "data"
    assert (report.lora_rank, report.lora_targets) == (4, 144)
    assert report.num_mapped + report.num_dropped + sum(report.duplicates.values()) == len(tiny_ckpt.state)
    assert "import-smpl" in str(report) and "tiny_best_ckpt.pth.tar" in str(report)
    assert sorted(p.name for p in out.parent.iterdir()) == ["weights"]  # no temporary folders left
    pipe = json.loads((out / "pipeline.json").read_text())
    assert pipe["pose_decoder"] == "vposer" and "tiny_best_ckpt.pth.tar" in pipe["source"]
    lora_cfg = json.loads((out / "unet_lora/adapter_config.json").read_text())
    assert (lora_cfg["r"], lora_cfg["lora_alpha"], lora_cfg["lora_dropout"]) == (4, 4, 0.0)
    assert json.loads((out / "controlnet/config.json").read_text())["in_channels"] == 34


def test_converted_folder_loads_and_reproduces_outputs(tiny_ckpt, converted):
    from dpmesh_infer.models.backbone import DiffusionBackbone
    from dpmesh_infer.models.pose_decoders import load_pose_decoder
    from dpmesh_infer.models.regressor import load_regressor

    out, _ = converted
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 256, 256, generator=g)
    joints32 = torch.rand(2, 30, 2, generator=g) * 32
    heatmaps = torch.rand(2, 30, 32, 32, generator=g)
    with torch.no_grad():
        feat_ref = tiny_ckpt.backbone(images, joints32, heatmaps)
        feat = DiffusionBackbone.from_folders(**backbone_folders(out))(images, joints32, heatmaps)
        assert torch.equal(feat, feat_ref)
        reg_ref = tiny_ckpt.regressor(feat_ref)
        reg = load_regressor(out / "regressor")(feat)
        for name in ("root_pose_6d", "pose", "betas", "cam", "joint_img"):
            assert torch.equal(getattr(reg, name), getattr(reg_ref, name)), name
        assert torch.equal(load_pose_decoder(out / "pose_decoder")(reg.pose), tiny_ckpt.pose_decoder(reg_ref.pose))


def test_converted_folder_is_a_complete_pipeline_after_smpl_import(converted, tmp_path):
    import shutil

    from dpmesh_infer.pipeline import Pipeline
    from dpmesh_infer.stand_ins.smpl import write_synthetic_smpl_npz
    from dpmesh_infer.weights.layout import missing_files as missing_weight_files

    out, _ = converted
    weights = tmp_path / "w"
    shutil.copytree(out, weights)
    assert missing_weight_files(weights) == ["smpl/SMPL_NEUTRAL.npz"]
    write_synthetic_smpl_npz(weights)
    assert missing_weight_files(weights) == []
    Pipeline.from_pretrained(weights, device="cpu")


def test_wrapper_and_missing_module_prefix(tiny_ckpt, tmp_path):
    ckpt = make_tiny_official_checkpoint(tmp_path / "c.pth.tar", seed=1, wrapper="network", module_prefix=False,
                                         position_ids=True)
    report = convert_official(ckpt.path, tmp_path / "out", target=ckpt.target)
    _assert_exact(tmp_path / "out", ckpt.expected)
    assert report.unwrapped == "network" and report.ignored_top_level == ["epoch"]
    assert not report.module_prefix
    torch.save({"state_dict": tiny_ckpt.state}, tmp_path / "sd.pth")
    report = ConversionReport()
    assert load_official_checkpoint(tmp_path / "sd.pth", report=report).keys() == tiny_ckpt.state.keys()
    assert report.unwrapped == "state_dict"


def test_duplicates_must_agree(tiny_ckpt, tmp_path):
    state = dict(tiny_ckpt.state)
    key = "module.backbone.unet.unet.model.diffusion_model.input_blocks.0.0.bias"
    state[key] = state[key].clone() + 1
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="duplicated subtrees disagree.*input_blocks.0.0.bias"):
        convert_official(tmp_path / "bad.pth", tmp_path / "out", target=tiny_ckpt.target)
    assert not (tmp_path / "out").exists()
    report = convert_official(tmp_path / "bad.pth", tmp_path / "out", target=tiny_ckpt.target, check_duplicates=False)
    assert report.duplicates_check == "skipped"
    _assert_exact(tmp_path / "out", tiny_ckpt.expected)  # the backbone.sd_model.* copy is the one kept


def test_unshared_equal_duplicates_pass(tiny_ckpt, tmp_path):
    state = {k: (v.clone() if k.startswith(DUP) else v) for k, v in tiny_ckpt.state.items()}
    torch.save(state, tmp_path / "c.pth")
    report = convert_official(tmp_path / "c.pth", tmp_path / "out", target=tiny_ckpt.target)
    assert report.duplicates_check == "data"


def test_fp16_copy(tiny_ckpt, tmp_path):
    from dpmesh_infer.models.backbone import DiffusionBackbone

    report = convert_official(tiny_ckpt.path, tmp_path / "out", target=tiny_ckpt.target, dtype=torch.float16)
    _assert_exact(tmp_path / "out", tiny_ckpt.expected, dtype=torch.float16)
    assert report.dtype == "float16" and "float16" in str(report)
    DiffusionBackbone.from_folders(**backbone_folders(tmp_path / "out"))  # loads (cast to float32)


class _OddDict(dict):
    """A dict subclass defined here: unpickling it needs a global that weights_only refuses."""


def test_untrusted_pickle_refused_unless_trusted(tiny_ckpt, tmp_path):
    torch.save(_OddDict(tiny_ckpt.state), tmp_path / "odd.pth")
    with pytest.raises(UntrustedCheckpointError, match="refused") as e:
        convert_official(tmp_path / "odd.pth", tmp_path / "out", target=tiny_ckpt.target)
    assert "_OddDict" in str(e.value) and "arbitrary code" in str(e.value)
    # the message never advises turning weights_only off (nor passes on torch's text that does)
    assert "weights_only" not in str(e.value) and "--trust-checkpoint" not in str(e.value)
    assert not (tmp_path / "out").exists()
    convert_official(tmp_path / "odd.pth", tmp_path / "out", target=tiny_ckpt.target, trust_pickle=True)
    _assert_exact(tmp_path / "out", tiny_ckpt.expected)


def test_numpy_object_in_checkpoint_needs_trust(tiny_ckpt, tmp_path):
    torch.save({"network": tiny_ckpt.state, "epoch": np.int64(12), "best": np.array([1.0])}, tmp_path / "np.pth")
    with pytest.raises(UntrustedCheckpointError, match="numpy"):
        load_official_checkpoint(tmp_path / "np.pth")
    report = ConversionReport()
    state = load_official_checkpoint(tmp_path / "np.pth", trust_pickle=True, report=report)
    assert len(state) == len(tiny_ckpt.state) and report.ignored_top_level == ["best", "epoch"]


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(WeightsError, match="checkpoint not found: .*nope.pth"):
        convert_official(tmp_path / "nope.pth", tmp_path / "out")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="text.pth is not a readable PyTorch checkpoint"):
        convert_official(tmp_path / "text.pth", tmp_path / "out")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="holds a list, not a state dict"):
        load_official_checkpoint(tmp_path / "list.pth")
    torch.save({"a": torch.zeros(1), "b": 3}, tmp_path / "mixed.pth")
    with pytest.raises(WeightsError, match="non-tensor entries: b"):
        load_official_checkpoint(tmp_path / "mixed.pth")
    torch.save({"a": torch.zeros(1)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert set(load_official_checkpoint(tmp_path / "legacy.pth")) == {"a"}  # no mmap for the old format


def test_output_directory_rules(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()  # empty: fine
    convert_official(tiny_ckpt.path, out, target=tiny_ckpt.target)
    (out / "smpl").mkdir()
    (out / "smpl" / "SMPL_NEUTRAL.npz").write_bytes(b"user data")
    with pytest.raises(InputError, match="not empty.*--overwrite"):
        convert_official(tiny_ckpt.path, out, target=tiny_ckpt.target)
    report = convert_official(tiny_ckpt.path, out, target=tiny_ckpt.target, overwrite=True)
    assert (out / "smpl" / "SMPL_NEUTRAL.npz").read_bytes() == b"user data"  # imported SMPL kept
    assert "smpl/ folder was kept" in str(report)
    _assert_exact(out, tiny_ckpt.expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        convert_official(tiny_ckpt.path, tmp_path / "file", target=tiny_ckpt.target)


def test_interrupted_write_leaves_nothing(tiny_ckpt, tmp_path, monkeypatch):
    import dpmesh_infer.models.io as io

    calls = []
    real = io.save_safetensors

    def flaky(state, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(state, path)

    monkeypatch.setattr(io, "save_safetensors", flaky)
    with pytest.raises(KeyboardInterrupt):
        convert_official(tiny_ckpt.path, tmp_path / "out", target=tiny_ckpt.target)
    assert list(tmp_path.iterdir()) == []


def test_bad_options(tiny_ckpt, tmp_path):
    with pytest.raises(InputError, match="smpl='compare'"):
        convert_official(tiny_ckpt.path, tmp_path / "out", smpl="compare")
    with pytest.raises(InputError, match="dtype"):
        convert_official(tiny_ckpt.path, tmp_path / "out", dtype=torch.int8)


def test_module_exports():
    assert set(co.__all__) >= {"convert_official", "ConversionReport", "ConversionTarget", "map_official_state_dict"}
