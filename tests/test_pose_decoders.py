"""Pose decoders: VPoser formula, VQ-VAE decoding, the trainable VQ-VAE prior, round trips."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from dpmesh_infer.errors import ConfigError, WeightsError
from dpmesh_infer.geometry.rotations import axis_angle_to_matrix
from dpmesh_infer.models.io import read_safetensors, save_safetensors
from dpmesh_infer.models.pose_decoders import (
    PoseDecoderConfig,
    VPoserDecoder,
    VQVAEDecoder,
    VQVAEPosePrior,
    load_pose_decoder,
    save_pose_decoder,
)

TINY_VQ = dict(type="vqvae", num_tokens=6, codebook_size=16, token_dim=8, dec_hidden_dim=12, dec_token_inter_dim=10,
               dec_hidden_inter_dim=14, enc_num_blocks=2, enc_hidden_dim=20, enc_token_inter_dim=9,
               enc_hidden_inter_dim=18)


def _assert_valid_body_pose(pose):
    assert pose.shape[1:] == (23, 3) and torch.isfinite(pose).all()
    assert (pose.norm(dim=-1) <= np.pi + 1e-5).all()
    r = axis_angle_to_matrix(pose.double())
    assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(3, dtype=torch.float64).expand_as(r), atol=1e-5)


# ----------------------------------------------------------------------------------- VPoser


def test_vposer_layout_matches_official_names():
    with torch.device("meta"):
        dec = VPoserDecoder(PoseDecoderConfig())
    assert {k: tuple(v.shape) for k, v in dec.state_dict().items()} == {
        "bodyprior_dec_fc1.weight": (512, 32), "bodyprior_dec_fc1.bias": (512,),
        "bodyprior_dec_fc2.weight": (512, 512), "bodyprior_dec_fc2.bias": (512,),
        "bodyprior_dec_out.weight": (126, 512), "bodyprior_dec_out.bias": (126,),
    }


def test_vposer_decode_equals_formula():
    torch.manual_seed(0)
    dec = VPoserDecoder(PoseDecoderConfig()).eval()
    z = torch.randn(4, 32)
    with torch.no_grad():
        pose = dec(z)
    # independent: plain ops in float64, 6D as (3, 2) row-major with Gram-Schmidt columns, scipy rotvec
    sd = {k: v.double() for k, v in dec.state_dict().items()}
    h = F.leaky_relu(z.double() @ sd["bodyprior_dec_fc1.weight"].T + sd["bodyprior_dec_fc1.bias"], 0.2)
    h = F.leaky_relu(h @ sd["bodyprior_dec_fc2.weight"].T + sd["bodyprior_dec_fc2.bias"], 0.2)
    six = (h @ sd["bodyprior_dec_out.weight"].T + sd["bodyprior_dec_out.bias"]).reshape(4, 21, 3, 2).numpy()
    a1, a2 = six[..., 0], six[..., 1]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 /= np.linalg.norm(b2, axis=-1, keepdims=True)
    mats = np.stack([b1, b2, np.cross(b1, b2)], axis=-1)
    expected = Rotation.from_matrix(mats.reshape(-1, 3, 3)).as_rotvec().reshape(4, 21, 3)
    assert np.allclose(pose[:, :21].numpy(), expected, atol=2e-5)
    assert torch.equal(pose[:, 21:], torch.zeros(4, 2, 3))  # hands
    _assert_valid_body_pose(pose)
    with pytest.raises(ValueError, match="latent"):
        dec(torch.randn(4, 31))


# ----------------------------------------------------------------------------------- VQ-VAE


def _mixer_reference(block, x):
    def mlp(m, v):
        return m.ff[3](F.gelu(m.ff[0](v)))
    y = mlp(block.MLP_token, F.layer_norm(x, x.shape[-1:], block.layernorm1.weight, block.layernorm1.bias)
            .transpose(1, 2)).transpose(1, 2)
    z = mlp(block.MLP_channel, F.layer_norm(x + y, x.shape[-1:], block.layernorm2.weight, block.layernorm2.bias))
    return x + y + z


def test_vq_decoder_one_hot_equals_direct_codebook_decoding():
    torch.manual_seed(1)
    dec = VQVAEDecoder(PoseDecoderConfig(**TINY_VQ)).eval()
    idx = torch.randint(0, 16, (3, 6))
    logits = F.one_hot(idx, 16).float() * 1e4  # softmax is exactly one-hot
    with torch.no_grad():
        raw = dec.decode_features(dec.codebook[idx])
        rot = dec.rotation_matrices(logits)
        pose = dec(logits)
        # independent decoding of the selected codebook entries
        x = dec.codebook[idx].transpose(1, 2) @ dec.decoder_token_mlp.weight.T + dec.decoder_token_mlp.bias
        x = dec.decoder_start(x.transpose(1, 2))
        x = _mixer_reference(dec.decoder[0], x)
        x = dec.recover_embed(F.layer_norm(x, (12,), dec.decoder_layer_norm.weight, dec.decoder_layer_norm.bias))
    assert torch.allclose(raw, x.reshape(3, 23, 3, 3), atol=1e-6)
    # orthonormalised: the nearest rotation of each raw matrix
    ref = np.stack([Rotation.from_matrix(m).as_matrix() if np.linalg.det(m) > 0 else np.full((3, 3), np.nan)
                    for m in raw.reshape(-1, 3, 3).double().numpy()]).reshape(3, 23, 3, 3)
    ok = ~np.isnan(ref[..., 0, 0])
    assert np.allclose(rot.numpy()[ok], ref[ok], atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3, 23), atol=1e-5)
    _assert_valid_body_pose(pose)


def test_vq_decoder_softmax_mixes_codebook_and_checks_shape():
    dec = VQVAEDecoder(PoseDecoderConfig(**TINY_VQ)).eval()
    logits = torch.randn(2, 6, 16)
    with torch.no_grad():
        mixed = dec.decode_features(torch.softmax(logits, -1) @ dec.codebook)
        raw_cfg = VQVAEDecoder(PoseDecoderConfig(**{**TINY_VQ, "orthonormalise": False})).eval()
        raw_cfg.load_state_dict(dec.state_dict())
        assert torch.allclose(raw_cfg.rotation_matrices(logits), mixed, atol=1e-6)
    with pytest.raises(ValueError, match="logits"):
        dec(torch.randn(2, 5, 16))


def test_full_size_vq_decoder_shapes():
    with torch.device("meta"):
        dec = VQVAEDecoder(PoseDecoderConfig(type="vqvae"))
    sd = dec.state_dict()
    assert sd["codebook"].shape == (2048, 256)
    assert sd["decoder_token_mlp.weight"].shape == (23, 48)
    assert sd["decoder_start.weight"].shape == (32, 256)
    assert sd["decoder.0.MLP_token.ff.0.weight"].shape == (64, 23)
    assert sd["decoder.0.MLP_channel.ff.0.weight"].shape == (64, 32)
    assert sd["recover_embed.weight"].shape == (9, 32)


# ------------------------------------------------------------------------------ VQ-VAE prior


def _rotations(b, seed=0):
    mats = Rotation.random(b * 23, random_state=seed).as_matrix()
    return torch.tensor(mats, dtype=torch.float32).reshape(b, 23, 3, 3)


def test_prior_encode_quantise_decode_and_ema():
    torch.manual_seed(2)
    prior = VQVAEPosePrior(PoseDecoderConfig(**TINY_VQ)).train()
    assert prior.codebook is prior.pose_decoder.codebook
    before = {k: v.clone() for k, v in prior.state_dict().items() if k in ("ema_w", "ema_cluster_size")}
    codebook0 = prior.codebook.clone()
    rot = _rotations(4)

    feat = prior.encode(rot).detach()
    idx_expected = torch.cdist(feat.reshape(-1, 8), codebook0).argmin(1).reshape(4, 6)
    out = prior(rot)
    assert out.raw_matrices.shape == (4, 23, 3, 3) and out.indices.shape == (4, 6)
    assert torch.equal(out.indices, idx_expected)
    assert torch.isfinite(out.commitment_loss)

    # EMA update, written out
    one_hot = F.one_hot(idx_expected.reshape(-1), 16).float()
    size = before["ema_cluster_size"] * 0.9 + 0.1 * one_hot.sum(0)
    n = size.sum()
    size = (size + 1e-5) / (n + 16 * 1e-5) * n
    ema_w = before["ema_w"] * 0.9 + 0.1 * one_hot.T @ feat.reshape(-1, 8)
    assert torch.allclose(prior.ema_cluster_size, size, atol=1e-6)
    assert torch.allclose(prior.ema_w, ema_w, atol=1e-5)
    assert torch.allclose(prior.pose_decoder.codebook, ema_w / size[:, None], atol=1e-4)
    assert not torch.allclose(prior.codebook, codebook0)

    # straight-through: reconstruction gradients reach the encoder; commitment too
    (F.mse_loss(out.raw_matrices, rot) + 0.25 * out.commitment_loss).backward()
    assert prior.start_embed.weight.grad is not None and prior.start_embed.weight.grad.abs().sum() > 0
    assert prior.pose_decoder.recover_embed.weight.grad.abs().sum() > 0

    # no codebook update in eval mode
    prior.eval()
    frozen = prior.codebook.clone()
    with torch.no_grad():
        prior(rot)
    assert torch.equal(prior.codebook, frozen)


def test_prior_exports_as_pose_decoder(tmp_path):
    prior = VQVAEPosePrior(PoseDecoderConfig(**TINY_VQ)).train()
    prior(_rotations(2))  # move the codebook away from its init
    save_pose_decoder(prior.pose_decoder, tmp_path / "pose_decoder")
    dec = load_pose_decoder(tmp_path / "pose_decoder")
    assert isinstance(dec, VQVAEDecoder)
    logits = torch.randn(2, 6, 16)
    with torch.no_grad():
        assert torch.equal(dec(logits), prior.pose_decoder.eval()(logits))
    with pytest.raises(ConfigError, match="vqvae"):
        VQVAEPosePrior(PoseDecoderConfig())


# --------------------------------------------------------------------------- config & files


def test_config_validation():
    cfg = PoseDecoderConfig(**TINY_VQ)
    assert PoseDecoderConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError):
        PoseDecoderConfig.from_dict({"type": "vae"})
    with pytest.raises(ConfigError, match="positive"):
        PoseDecoderConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="unknown keys"):
        PoseDecoderConfig.from_dict({"typ": "vposer"})


def test_vposer_round_trip_and_strict_errors(tmp_path):
    dec = VPoserDecoder(PoseDecoderConfig()).eval()
    directory = save_pose_decoder(dec, tmp_path / "pose_decoder")
    loaded = load_pose_decoder(directory)
    assert isinstance(loaded, VPoserDecoder) and not loaded.training
    z = torch.randn(3, 32)
    with torch.no_grad():
        assert torch.equal(loaded(z), dec(z))
    state = read_safetensors(directory / "model.safetensors")
    del state["bodyprior_dec_out.bias"]
    state["bodyprior_enc_fc1.weight"] = torch.zeros(512, 63)
    save_safetensors(state, directory / "model.safetensors")
    with pytest.raises(WeightsError, match="bodyprior_dec_out.bias") as err:
        load_pose_decoder(directory)
    assert "bodyprior_enc_fc1.weight" in str(err.value)
    with pytest.raises(WeightsError, match="config not found"):
        load_pose_decoder(tmp_path / "missing")
