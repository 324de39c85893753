"""VQ-VAE pose prior pre-training: data loading, loss decrease, baseline, exact resume, export."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from dpmesh_infer.errors import InputError
from dpmesh_infer.geometry.rotations import axis_angle_to_matrix
from dpmesh_infer.models.io import read_safetensors
from dpmesh_infer.models.pose_decoders import PoseDecoderConfig, VQVAEDecoder, VQVAEPosePrior, load_pose_decoder
from dpmesh_infer.train import vqvae as vq

TINY = PoseDecoderConfig(type="vqvae", num_tokens=6, codebook_size=16, token_dim=8, dec_hidden_dim=16,
                         dec_token_inter_dim=16, dec_hidden_inter_dim=32, enc_num_blocks=1, enc_hidden_dim=32,
                         enc_token_inter_dim=16, enc_hidden_inter_dim=32)
TRAIN = dict(batch_size=64, lr=1e-2, seed=0, device="cpu", log_every=5, config=TINY)


def _motion_clip(rng, frames, columns):
    """A smooth random 'motion': per-joint base rotation + sinusoids, as an AMASS-like (T, columns) array."""
    t = np.arange(frames)[:, None] / 30.0
    base = rng.normal(scale=0.4, size=(1, columns))
    amp = rng.normal(scale=0.3, size=(1, columns))
    freq = rng.uniform(0.3, 1.5, size=(1, columns))
    phase = rng.uniform(0, 2 * np.pi, size=(1, columns))
    return base + amp * np.sin(2 * np.pi * freq * t + phase)


def _write_clips(directory, seed=0, n_clips=4, frames=120):
    rng = np.random.default_rng(seed)
    (directory / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n_clips):
        path = directory / ("sub" if i % 2 else ".") / f"clip_{i}_poses.npz"
        np.savez(path, poses=_motion_clip(rng, frames, 72), trans=rng.normal(size=(frames, 3)),
                 betas=rng.normal(size=16), mocap_framerate=np.array(30.0))
    return directory


@pytest.fixture(scope="module")
def poses_dir(tmp_path_factory):
    return _write_clips(tmp_path_factory.mktemp("amass"))


@pytest.fixture(scope="module")
def trained(poses_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vq_run")
    torch.set_num_threads(2)
    result = vq.train_vqvae(poses_dir, out, epochs=40, checkpoint_every=10_000, **TRAIN)
    return out, result


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------- data


def test_loader_column_layouts(tmp_path):
    rng = np.random.default_rng(1)
    p72, p156, p66 = (rng.normal(size=(5, c)) for c in (72, 156, 66))
    np.savez(tmp_path / "a.npz", poses=p72)
    np.savez(tmp_path / "b.npz", poses=p156)
    np.savez(tmp_path / "c.npz", poses=p66)
    body = vq.load_amass_body_poses(tmp_path)  # sorted: a, b, c
    assert body.shape == (15, 23, 3) and body.dtype == torch.float32
    np.testing.assert_allclose(body[:5].reshape(5, 69), p72[:, 3:72], rtol=1e-6)
    np.testing.assert_allclose(body[5:10].reshape(5, 69), p156[:, 3:72], rtol=1e-6)
    np.testing.assert_allclose(body[10:, :21].reshape(5, 63), p66[:, 3:66], rtol=1e-6)
    assert (body[10:, 21:] == 0).all()
    zeroed = vq.load_amass_body_poses(tmp_path, zero_hands=True, frame_stride=2)
    assert zeroed.shape == (9, 23, 3) and (zeroed[:, 21:] == 0).all()
    np.testing.assert_allclose(zeroed[:3, :21].reshape(3, 63), p72[::2, 3:66], rtol=1e-6)


def test_loader_errors(tmp_path):
    with pytest.raises(InputError, match="no .npz"):
        vq.load_amass_body_poses(tmp_path)
    np.savez(tmp_path / "x.npz", trans=np.zeros((3, 3)))
    with pytest.raises(InputError, match="no 'poses'"):
        vq.load_amass_body_poses(tmp_path)
    (tmp_path / "x.npz").unlink()
    np.savez(tmp_path / "obj.npz", poses=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="obj.npz"):  # pickled content is refused
        vq.load_amass_body_poses(tmp_path)
    (tmp_path / "obj.npz").unlink()
    np.savez(tmp_path / "short.npz", poses=np.zeros((3, 60)))
    with pytest.raises(InputError, match=">=66"):
        vq.load_amass_body_poses(tmp_path)


# --------------------------------------------------------------------------------------- training


def test_loss_decreases_and_usage_is_logged(trained):
    out, result = trained
    records = _log(out)
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 40 and records[-1]["event"] == "final"
    assert steps[-1]["step"] == result.steps == 40 * 8  # 480 frames / 64 → 8 steps per epoch
    first, last = steps[0]["loss"], np.mean([r["loss"] for r in steps[-4:]])
    assert last < 0.4 * first, (first, last)  # after 320 steps
    for r in steps + epochs:
        assert 0.0 < r["codebook_usage"] <= 1.0 and 1.0 <= r["perplexity"] <= TINY.codebook_size
    assert result.codebook_usage >= 0.5, result  # most of the 16 codes are in use


def test_reconstruction_beats_constant_baselines(trained, poses_dir):
    _, result = trained
    rot = axis_angle_to_matrix(vq.load_amass_body_poses(poses_dir)).double()
    # best constant predictor under L1: the element-wise median of the training matrices
    median_l1 = float((rot - rot.median(dim=0).values).abs().mean())
    identity_l1 = float((rot - torch.eye(3, dtype=torch.float64)).abs().mean())
    assert result.recon_l1 < 0.7 * median_l1, (result.recon_l1, median_l1)
    assert result.recon_l1 < 0.6 * identity_l1
    # geodesic error against the identity pose
    cos = ((rot.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    identity_deg = float(torch.rad2deg(torch.acos(cos)).mean())
    assert result.angle_deg < 0.6 * identity_deg, (result.angle_deg, identity_deg)


def test_exported_decoder_loads_and_matches_the_prior(trained, poses_dir):
    out, result = trained
    assert result.pose_decoder_dir == out / "pose_decoder"
    decoder = load_pose_decoder(result.pose_decoder_dir)
    assert isinstance(decoder, VQVAEDecoder) and decoder.config == TINY
    torch.manual_seed(0)
    with torch.no_grad():
        pose = decoder(torch.randn(3, TINY.num_tokens, TINY.codebook_size))
    assert pose.shape == (3, 23, 3) and torch.isfinite(pose).all()
    # one-hot logits of the prior's codes decode to the prior's reconstruction
    prior = VQVAEPosePrior(TINY)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    prior.load_state_dict(ckpt["model"])
    prior.eval()
    rot = axis_angle_to_matrix(vq.load_amass_body_poses(poses_dir)[:8])
    with torch.no_grad():
        ref = prior(rot)
        logits = 1e4 * torch.nn.functional.one_hot(ref.indices, TINY.codebook_size).float()
        raw = decoder.decode_features(torch.softmax(logits, -1) @ decoder.codebook)
    torch.testing.assert_close(raw, ref.raw_matrices, atol=1e-5, rtol=1e-5)


def test_interrupted_and_resumed_run_equals_uninterrupted(poses_dir, tmp_path, monkeypatch):
    settings = dict(epochs=3, checkpoint_every=4, **TRAIN)
    full = vq.train_vqvae(poses_dir, tmp_path / "full", **settings)

    real_step, calls = vq._train_step, {"n": 0}

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # dies mid-epoch 1, after the checkpoint at step 8
            raise RuntimeError("simulated crash")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(vq, "_train_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        vq.train_vqvae(poses_dir, tmp_path / "cut", **settings)
    monkeypatch.setattr(vq, "_train_step", real_step)
    assert not (tmp_path / "cut" / "pose_decoder").exists()
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["global_step"] == 8
    with pytest.raises(InputError, match="resume"):  # never silently restarts over a checkpoint
        vq.train_vqvae(poses_dir, tmp_path / "cut", **settings)
    with pytest.raises(InputError, match="lr"):  # a resume must use the same settings
        vq.train_vqvae(poses_dir, tmp_path / "cut", resume=True, **{**settings, "lr": 5e-2})
    resumed = vq.train_vqvae(poses_dir, tmp_path / "cut", resume=True, **settings)

    assert resumed == dataclasses.replace(full, pose_decoder_dir=resumed.pose_decoder_dir)
    a = read_safetensors(tmp_path / "full" / "pose_decoder" / "model.safetensors")
    b = read_safetensors(tmp_path / "cut" / "pose_decoder" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert (tmp_path / "full" / "log.jsonl").read_text() == (tmp_path / "cut" / "log.jsonl").read_text()


def test_vqvae_command_summary(poses_dir, tmp_path):
    cfg = tmp_path / "model.json"
    TINY.save_json(cfg)
    text = vq.vqvae_command(poses_dir, tmp_path / "run", epochs=1, batch_size=128, device="cpu",
                            model_config=cfg)
    assert "480 frames" in text and "pose_decoder" in text
    assert isinstance(load_pose_decoder(tmp_path / "run" / "pose_decoder"), VQVAEDecoder)


def test_cli_train_vqvae(poses_dir, tmp_path):
    from typer.testing import CliRunner

    from dpmesh_infer.cli import app

    cfg = tmp_path / "model.json"
    TINY.save_json(cfg)
    out = tmp_path / "cli_run"
    args = ["train", "vqvae", "--poses", str(poses_dir), "--out", str(out), "--epochs", "1", "--batch-size", "128",
            "--device", "cpu", "--model-config", str(cfg)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert isinstance(load_pose_decoder(out / "pose_decoder"), VQVAEDecoder)
    r = CliRunner().invoke(app, args)  # a checkpoint exists and --resume was not given
    assert r.exit_code == 2 and "resume" in r.output.lower()
