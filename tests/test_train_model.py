"""The trainable model: initialisation sources, trainable set, losses, gradient checkpointing, export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpmesh_infer.errors import ConfigError, WeightsError
from dpmesh_infer.stand_ins.tiny import tiny_configs
from dpmesh_infer.train.losses import masked_l1, nkr_loss, simclr_loss
from dpmesh_infer.train.model import build_model, export_weights


def _init(**kw):
    from dpmesh_infer.train.config import InitConfig

    return InitConfig(**kw)


@pytest.fixture(scope="module")
def smpl_dir(tmp_path_factory):
    from dpmesh_infer.stand_ins.smpl import write_synthetic_smpl_npz

    d = tmp_path_factory.mktemp("smpl")
    write_synthetic_smpl_npz(d)
    return d


@pytest.fixture(scope="module")
def fake_sd15(tmp_path_factory):
    """Tiny SD1.5-layout folders (unet/, vae/) and a standard 4-channel ControlNet, saved by diffusers."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    root = tmp_path_factory.mktemp("sd")
    torch.manual_seed(3)
    tiny = tiny_configs()
    unet = UNet2DConditionModel.from_config(tiny.unet)
    vae = AutoencoderKL.from_config(tiny.vae)
    unet.save_pretrained(root / "sd" / "unet")
    vae.save_pretrained(root / "sd" / "vae")
    cn_cfg = dict(tiny.controlnet)
    cn_cfg["in_channels"] = 4
    cn = ControlNetModel.from_config(cn_cfg)
    cn.save_pretrained(root / "cn")
    return root, unet.state_dict(), vae.state_dict(), cn.state_dict()


def _tiny_decoder_dir(tmp_path, head="vqvae"):
    from dpmesh_infer.models.pose_decoders import build_pose_decoder, save_pose_decoder
    from dpmesh_infer.stand_ins.tiny import tiny_configs

    _, _, d_cfg, *_ = tiny_configs(head)
    return save_pose_decoder(build_pose_decoder(d_cfg), tmp_path / "pose_decoder")


def test_init_from_sd15_and_openpose_controlnet(fake_sd15, smpl_dir, tmp_path):
    root, unet_sd, vae_sd, cn_sd = fake_sd15
    dec = _tiny_decoder_dir(tmp_path)
    model, source = build_model(_init(sd15=str(root / "sd"), controlnet=str(root / "cn"), pose_decoder=str(dec),
                                      smpl=str(smpl_dir)))
    assert "Stable Diffusion" in source
    bb_ = model.backbone
    # UNet base and VAE encoder weights are the files' weights
    base = bb_.unet_base_state_dict()
    assert all(torch.equal(base[k], unet_sd[k]) for k in unet_sd)
    assert all(torch.equal(bb_.vae.state_dict()[k], vae_sd[k]) for k in bb_.vae.state_dict())
    # ControlNet: conv_in grows from 4 to 34 input channels, the new ones zero; the rest copied
    w = bb_.controlnet.conv_in.weight
    assert w.shape[1] == 34
    assert torch.equal(w[:, :4], cn_sd["conv_in.weight"]) and not w[:, 4:].any()
    assert torch.equal(bb_.controlnet.down_blocks[0].resnets[0].conv1.weight,
                       cn_sd["down_blocks.0.resnets.0.conv1.weight"])
    # LoRA starts as the identity (B = 0)
    assert all(not p.any() for n, p in bb_.unet.named_parameters() if "lora_B" in n)
    # trainable set: LoRA + ControlNet + adapter + regressor; frozen VAE, UNet base, pose decoder
    params = model.set_trainable(train_controlnet=True)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert len(params) == len(names)
    assert all(("lora_" in n) for n in names if n.startswith("backbone.unet."))
    assert any(n.startswith("backbone.controlnet.") for n in names)
    assert not any(n.startswith(("backbone.vae.", "pose_decoder.", "body.")) for n in names)
    assert any(n.startswith("backbone.adapter.kp_lifting") for n in names)
    model.set_trainable(train_controlnet=False)
    assert not any(p.requires_grad for p in model.backbone.controlnet.parameters())


def test_init_errors(smpl_dir, tmp_path):
    with pytest.raises(WeightsError, match="nowhere"):
        build_model(_init(sd15=str(tmp_path / "nowhere"), pose_decoder=str(_tiny_decoder_dir(tmp_path)),
                          smpl=str(smpl_dir)))
    with pytest.raises(ConfigError, match="pose_head"):
        build_model(_init(tiny=True, pose_head="vposer", pose_decoder=str(_tiny_decoder_dir(tmp_path)),
                          smpl=str(smpl_dir)))
    with pytest.raises(WeightsError, match="incomplete"):
        build_model(_init(weights=str(tmp_path), pose_head="vposer"))


def test_init_config_validation():
    from dpmesh_infer.train.config import InitConfig

    with pytest.raises(ConfigError, match="exactly one"):
        InitConfig(smpl="x")
    with pytest.raises(ConfigError, match="exactly one"):
        InitConfig(tiny=True, sd15="a", smpl="x")
    with pytest.raises(ConfigError, match="pose_decoder"):
        InitConfig(sd15="a", smpl="x")
    with pytest.raises(ConfigError, match="smpl"):
        InitConfig(tiny=True)


def test_masked_l1_and_simclr_match_independent_computation():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 5, 2, generator=g), torch.randn(3, 5, 2, generator=g)
    w = (torch.rand(3, 5, 1, generator=g) > 0.4).float()
    expect = sum(abs(float(pred[i, j, c] - target[i, j, c])) for i in range(3) for j in range(5) for c in range(2)
                 if w[i, j, 0]) / (2 * float(w.sum()))
    assert math.isclose(float(masked_l1(pred, target, w)), expect, rel_tol=1e-6)
    assert float(masked_l1(pred, target, torch.zeros_like(w))) == 0.0

    s, t = torch.randn(4, 8, 2, 2, generator=g), torch.randn(4, 8, 2, 2, generator=g)
    sv = s.mean(dim=(2, 3)).numpy()
    tv = t.mean(dim=(2, 3)).numpy()
    sv /= np.linalg.norm(sv, axis=1, keepdims=True)
    tv /= np.linalg.norm(tv, axis=1, keepdims=True)
    logits = sv @ tv.T / 0.1

    def ce(lg):
        return float(np.mean([-lg[i, i] + np.log(np.exp(lg[i]).sum()) for i in range(4)]))

    assert math.isclose(float(simclr_loss(s, t, 0.1)), 0.5 * (ce(logits) + ce(logits.T)), rel_tol=1e-5)
    # identical features: the MSE part vanishes and SimCLR is lowest when pairs match
    loss_same, parts = nkr_loss(t.clone().requires_grad_(True), t, 0.1)
    assert float(parts["nkr_mse"]) == 0.0
    shuffled, _ = nkr_loss(t[[1, 2, 3, 0]], t, 0.1)
    assert float(loss_same.detach()) < float(shuffled)


def test_gradient_checkpointing_gives_the_same_gradients(smpl_dir):
    torch.manual_seed(0)
    grads = []
    for ckpt in (False, True):
        model, _ = build_model(_init(tiny=True, smpl=str(smpl_dir)), seed=1)
        # make LoRA non-trivial so its gradient path through the attention capture is exercised
        with torch.no_grad():
            for n, p in model.backbone.unet.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.full_like(p, 0.01))
        params = model.set_trainable(True)
        if ckpt:
            model.enable_gradient_checkpointing()
            assert model.backbone.unet.is_gradient_checkpointing and model.backbone.controlnet.is_gradient_checkpointing
        model.eval()  # no dropout: both runs must be deterministic
        g = torch.Generator().manual_seed(5)
        out = model(torch.rand(2, 3, 256, 256, generator=g), torch.rand(2, 30, 2, generator=g) * 32,
                    torch.ones(2, 30, dtype=torch.bool), torch.full((2,), 500.0))
        (out.joints_rel.square().sum() + out.features.mean() + out.joint_img.sum()).backward()
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(names) == len(params)  # set_trainable's list is exactly the parameters that require grad
    by_name = dict(zip(names, zip(*grads)))  # name -> (gradient without, gradient with checkpointing)
    lora_a = [n for n in names if ".lora_A." in n]
    lora_b = [n for n in names if ".lora_B." in n]
    assert len(lora_a) == len(lora_b) == 144
    # gradients reach every LoRA matrix (B directly; A through the non-zero B) and the ControlNet...
    for n in lora_a + lora_b + [n for n in names if n.startswith("backbone.controlnet.")][:5]:
        assert float(by_name[n][1].abs().sum()) > 0, n
    # ...and are the same with and without checkpointing, for every trainable parameter
    for n, (a, b) in by_name.items():
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=n)


def test_export_loads_in_pipeline(smpl_dir, tmp_path, scene):
    from dpmesh_infer import Pipeline

    model, _ = build_model(_init(tiny=True, smpl=str(smpl_dir)), seed=2)
    with torch.no_grad():
        model.regressor.cascade_cam_out[0].bias.add_(0.5)  # something not at init
    out = export_weights(model, tmp_path / "w", smpl_source=smpl_dir, source="test", untrained=True)
    again = export_weights(model, tmp_path / "w", smpl_source=smpl_dir, source="test", untrained=True)
    assert again == out and not (tmp_path / "w.tmp").exists() and not (tmp_path / "w.old").exists()
    pipe = Pipeline.from_pretrained(out, device="cpu")
    torch.testing.assert_close(pipe.regressor.cascade_cam_out[0].bias, model.regressor.cascade_cam_out[0].bias)
    image, kp = scene
    res = pipe(image, keypoints=kp)
    assert len(res.images[0].persons) == kp.shape[0]
    assert np.isfinite(res.images[0].persons[0].vertices).all()
