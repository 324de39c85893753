"""Regressor: official key layout, shapes, upstream quirks, an independent forward, round trips."""

import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F

from dpmesh_infer.errors import ConfigError, WeightsError
from dpmesh_infer.models.io import read_safetensors, save_safetensors
from dpmesh_infer.models.regressor import Regressor, RegressorConfig, _run_cascade, load_regressor, save_regressor
from dpmesh_infer.models.transformer import JointDecoder, inverse_sigmoid, sine_position_encoding_2d, sinusoid_table

REGRESSOR_PREFIXES = {
    "down_linear", "conv2d_to_3d", "conv_3d_coord", "exponent", "spose_shape_cam_param", "query",
    "pos_embed_1d", "transformer", "refine_3d", "cascade_root_pose_out", "cascade_pose_out",
    "cascade_shaoe_out", "cascade_cam_out",
}
# sha256 of the sorted "key:shape" lines of the official layout for REGRESSOR_PREFIXES ("module."
# removed), computed from shared/reference/official_checkpoint_layout.json: 182 tensors, 15,575,719 values
LAYOUT_DIGEST = "c94a0bb19e663ed67e1f75421c56c627311fd745a17e41bf19c23a85125260ba"

TINY = dict(in_channels=12, d_model=16, nhead=2, enc_layers=2, dec_layers=3, dim_feedforward=32,
            refine_layers=2, refine_feedforward=24, num_joints=5, depth_bins=3, feat_size=4,
            pose_latent_dim=6, vq_tokens=4, vq_classes=7)


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    model = Regressor(RegressorConfig(**{**TINY, **kw})).eval()
    with torch.no_grad():  # make zero-initialised targets etc. non-trivial
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.exponent.fill_(2.3)
    return model


def _digest(shapes: dict) -> str:
    text = "\n".join(f"{k}:{'x'.join(map(str, v))}" for k, v in sorted(shapes.items()))
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------- layout


def test_full_size_state_dict_matches_official_layout():
    with torch.device("meta"):
        model = Regressor(RegressorConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    from conftest import official_layout

    data = official_layout()
    ref = {k[len("module."):]: tuple(v["shape"]) for k, v in data.items()
           if k.startswith("module.") and k[len("module."):].split(".")[0] in REGRESSOR_PREFIXES}
    assert set(ours) - set(ref) == set(), "keys not in the official layout"
    assert set(ref) - set(ours) == set(), "official keys missing from the model"
    assert {k: v for k, v in ours.items() if ref[k] != v} == {}
    assert len(ours) == 182
    assert _digest(ours) == LAYOUT_DIGEST
    assert ours["pos_embed_1d.pos_table"] == (512, 256)
    assert "transformer.encoder.norm.weight" not in ours and "refine_3d.norm.weight" in ours


def test_vq_head_layout():
    with torch.device("meta"):
        model = Regressor(RegressorConfig(pose_head="vqvae"))
    sd = model.state_dict()
    assert sd["spose_shape_cam_param"].shape == (51, 256)
    assert sd["cascade_pose_out.0.weight"].shape == (2048, 256)
    assert sd["cascade_pose_out.3.weight"].shape == (2048, 256 + 2048)


# ------------------------------------------------------------------------------------- config


def test_config_validation_and_round_trip():
    cfg = RegressorConfig(**TINY)
    assert RegressorConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError, match="nhead"):
        RegressorConfig(d_model=18, nhead=4)
    with pytest.raises(ConfigError, match="multiple of 4"):
        RegressorConfig(d_model=6, nhead=3)
    with pytest.raises(ConfigError, match="unknown keys"):
        RegressorConfig.from_dict({"d_modle": 8})
    with pytest.raises(ConfigError):
        RegressorConfig.from_dict({"pose_head": "vq"})


# ------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("head", ["vposer", "vqvae"])
def test_tiny_forward_shapes(head):
    model = _tiny(pose_head=head)
    with torch.no_grad():
        out = model(torch.randn(2, 12, 4, 4))
    assert out.root_pose_6d.shape == (2, 6)
    assert out.pose.shape == ((2, 6) if head == "vposer" else (2, 4, 7))
    assert out.betas.shape == (2, 10) and out.cam.shape == (2, 3)
    assert out.joint_img.shape == (2, 5, 3) and out.joint_img.dtype == torch.float32
    assert ((out.joint_img > 0) & (out.joint_img < 1)).all()
    with pytest.raises(ValueError, match="expects features"):
        model(torch.randn(2, 12, 8, 8))


def test_batch_items_are_independent_and_dropout_only_in_training():
    model = _tiny()
    x = torch.randn(3, 12, 4, 4)
    with torch.no_grad():
        full, single = model(x), model(x[1:2])
        again = model(x)
    assert torch.allclose(full.pose[1:2], single.pose, atol=1e-5)
    assert torch.equal(full.pose, again.pose)
    model.train()
    torch.manual_seed(1)
    assert not torch.allclose(model(x).pose, full.pose)


def test_low_precision_runs():
    model = _tiny()
    x = torch.randn(2, 12, 4, 4)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(x)
        cast = model.to(torch.bfloat16)(x.half())  # half features into a bf16 module
    for out in (auto, cast):
        assert out.joint_img.dtype == torch.float32
        for a, b in zip((out.pose, out.joint_img), (ref.pose, ref.joint_img)):
            assert torch.isfinite(a).all() and torch.allclose(a.float(), b, atol=0.15)


# ----------------------------------------------------------------------------- position codes


def test_sine_position_encoding_is_degenerate():
    pos = sine_position_encoding_2d(8, 8, 256)
    assert pos.shape == (64, 256)
    rows = torch.arange(8).repeat_interleave(8).double()  # token t = 8·row + col
    cols = torch.arange(8).repeat(8).double()
    y = (rows + 1) / 8 * 2 * math.pi
    x = (cols + 1) / 8 * 2 * math.pi
    for k in range(64):  # every frequency is 1
        assert torch.allclose(pos[:, 2 * k].double(), torch.sin(y), atol=1e-5)
        assert torch.allclose(pos[:, 2 * k + 1].double(), torch.cos(y), atol=1e-5)
        assert torch.allclose(pos[:, 128 + 2 * k].double(), torch.sin(x), atol=1e-5)
        assert torch.allclose(pos[:, 128 + 2 * k + 1].double(), torch.cos(x), atol=1e-5)
    assert torch.equal(pos[:, 0], pos[:, 2])


def test_refine_position_table_is_proper_sinusoid():
    table = sinusoid_table(512, 256)
    p, j = 37, 10
    assert table.dtype == torch.float32
    assert math.isclose(table[p, j].item(), math.sin(p / 10000 ** (10 / 256)), abs_tol=1e-6)
    assert math.isclose(table[p, j + 1].item(), math.cos(p / 10000 ** (10 / 256)), abs_tol=1e-6)
    assert "pos_embed_1d.pos_table" in _tiny().state_dict()


# ---------------------------------------------------------------------------- decoder pieces


def test_volume_sampling_of_a_known_volume():
    d, h, w = 3, 4, 5
    dd, hh, ww = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    volume = torch.stack([ww, hh, dd, 2 * ww - hh + 3 * dd]).float()[None].repeat(2, 1, 1, 1, 1)
    joint_img = torch.rand(2, 7, 3)
    exponent = torch.tensor(2.5)
    got = JointDecoder.sample_volume(volume, joint_img, exponent)  # (B, J, C)
    zw = joint_img[..., 2] ** 2.5
    exp_w, exp_h, exp_d = joint_img[..., 0] * (w - 1), joint_img[..., 1] * (h - 1), zw * (d - 1)
    expected = torch.stack([exp_w, exp_h, exp_d, 2 * exp_w - exp_h + 3 * exp_d], -1)
    assert torch.allclose(got, expected, atol=1e-5)  # trilinear is exact on linear fields
    # at a voxel centre with align_corners=True the sample is the voxel value itself
    corner = torch.tensor([[[1.0, 0.0, 1.0]]]).repeat(2, 1, 1)  # x=W−1, y=0, z=D−1
    assert torch.allclose(JointDecoder.sample_volume(volume, corner, exponent)[:, 0], volume[:, :, -1, 0, -1])


def test_inverse_sigmoid_clamps():
    x = torch.tensor([-0.5, 0.0, 0.3, 1.0, 2.0])
    expected = torch.tensor([math.log(1e-5), math.log(1e-5), math.log(0.3 / 0.7), math.log(1e5), math.log(1e5)])
    assert torch.allclose(inverse_sigmoid(x), expected, atol=1e-5)
    assert inverse_sigmoid(x.half()).dtype == torch.float32


def test_cascade_recurrence():
    torch.manual_seed(0)
    heads = torch.nn.ModuleList([torch.nn.Linear(4, 2)] + [torch.nn.Linear(6, 2) for _ in range(2)])
    hs = torch.randn(3, 5, 4)
    w = [(m.weight, m.bias) for m in heads]
    out0 = hs[0] @ w[0][0].T + w[0][1]
    out1 = out0 + hs[1] @ w[1][0][:, :4].T + out0 @ w[1][0][:, 4:].T + w[1][1]
    out2 = out1 + hs[2] @ w[2][0][:, :4].T + out1 @ w[2][0][:, 4:].T + w[2][1]
    assert torch.allclose(_run_cascade(hs, heads), out2, atol=1e-6)


# ------------------------------------------------------- independent sequence-first forward


def _mha(mod, q, k, v):
    return F.multi_head_attention_forward(
        q, k, v, mod.embed_dim, mod.num_heads, mod.in_proj_weight, mod.in_proj_bias, None, None, False, 0.0,
        mod.out_proj.weight, mod.out_proj.bias, training=False, need_weights=True)[0]


def _enc(layer, src, pos):
    src = layer.norm1(src + _mha(layer.self_attn, src + pos, src + pos, src))
    return layer.norm2(src + layer.linear2(F.relu(layer.linear1(src))))


def _dec(layer, tgt, mem, pos, qpos):
    tgt = layer.norm1(tgt + _mha(layer.self_attn, tgt + qpos, tgt + qpos, tgt))
    tgt = layer.norm2(tgt + _mha(layer.multihead_attn, tgt + qpos, mem + pos, mem))
    return layer.norm3(tgt + layer.linear2(F.relu(layer.linear1(tgt))))


def _reference_forward(m, img):
    """Upstream's computation restated in (N, B, C) layout with explicit loops (eval mode)."""
    c = m.config
    b, ch, d, s = img.shape[0], c.d_model, c.depth_bins, c.feat_size
    p, nj = c.num_param_tokens, c.num_joints
    k = m.exponent.clamp(1, 20)
    vol = m.conv2d_to_3d(img).reshape(b, ch, d, s, s)
    rz, rs = torch.arange(d) / d, torch.arange(s) / s
    anchors = torch.zeros(b, 3, d, s, s)
    for di in range(d):
        for hi in range(s):
            for wi in range(s):
                anchors[:, :, di, hi, wi] = torch.stack([rz[di] ** k, rs[hi], rs[wi]])
    vol = m.conv_3d_coord(torch.cat([vol, anchors], 1))
    tok = vol.permute(2, 3, 4, 0, 1).reshape(d * s * s, b, ch)
    pos3 = torch.tensor([[n / 10000 ** (2 * (j // 2) / ch) for j in range(ch)] for n in range(d * s * s)])
    pos3[:, 0::2], pos3[:, 1::2] = pos3[:, 0::2].sin(), pos3[:, 1::2].cos()
    for layer in m.refine_3d.layers:
        tok = _enc(layer, tok, pos3[:, None])
    vol = m.refine_3d.norm(tok).reshape(d, s, s, b, ch).permute(3, 4, 0, 1, 2)
    x = m.down_linear(img).flatten(2).permute(2, 0, 1)
    ry = (torch.arange(s).repeat_interleave(s) + 1) / (s + 1e-6) * 2 * math.pi
    rx = (torch.arange(s).repeat(s) + 1) / (s + 1e-6) * 2 * math.pi
    ipos = torch.cat([torch.stack([ry.sin(), ry.cos()], 1).repeat(1, ch // 4),
                      torch.stack([rx.sin(), rx.cos()], 1).repeat(1, ch // 4)], 1)[:, None].repeat(1, b, 1)
    qpos = torch.cat([m.spose_shape_cam_param, m.query.weight])[:, None].repeat(1, b, 1)
    t = m.transformer
    out = torch.cat([t.smpl_tgt.repeat(p, b, 1), t.kp_tgt.repeat(nj, b, 1)])
    mem, pos = x, ipos
    for layer in t.encoder.layers:
        mem = _enc(layer, mem, pos)
    dec, inter = t.decoder, []
    for idx, layer in enumerate(dec.layers):
        out = dec.norm(_dec(layer, out, mem, pos, qpos))
        inter.append(out[:p])
        jh = out[p:].transpose(0, 1)
        if idx == 0:
            ji = torch.sigmoid(dec.joint_img_regress[0](jh))
        else:
            iv = inverse_sigmoid(ji)
            ji = torch.sigmoid(iv + dec.joint_img_regress[idx](torch.cat([jh, iv], -1)))
        grid = torch.cat([ji[..., :2] * 2 - 1, ji[..., 2:] ** k * 2 - 1], -1)[:, None, None]
        sf = F.grid_sample(vol, grid, mode="bilinear", align_corners=True)[:, :, 0, 0].permute(2, 0, 1)
        sp = dec.fc_pos_3d(inverse_sigmoid(ji)).transpose(0, 1)
        mem = torch.cat([mem if idx == 0 else mem[:-nj], sf])
        pos = torch.cat([pos if idx == 0 else pos[:-nj], sp])
    hs = torch.stack(inter).transpose(1, 2)  # (L, B, P, C)

    def cascade(h, heads):
        o = heads[0](h[0])
        for i in range(1, len(heads)):
            o = o + heads[i](torch.cat([h[i], o], -1))
        return o

    pose_tok = hs[:, :, 0] if c.pose_head == "vposer" else hs[:, :, 1:-2]
    return (cascade(hs[:, :, 0], m.cascade_root_pose_out), cascade(pose_tok, m.cascade_pose_out),
            cascade(hs[:, :, -2], m.cascade_shaoe_out), cascade(hs[:, :, -1], m.cascade_cam_out), ji)


@pytest.mark.parametrize("head", ["vposer", "vqvae"])
def test_forward_matches_independent_reference(head):
    model = _tiny(seed=3, pose_head=head)
    x = torch.randn(3, 12, 4, 4)
    with torch.no_grad():
        out = model(x)
        ref = _reference_forward(model, x)
    for got, want in zip((out.root_pose_6d, out.pose, out.betas, out.cam, out.joint_img), ref):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()


# ------------------------------------------------------------------------------- round trips


def test_save_load_round_trip(tmp_path):
    model = _tiny(pose_head="vqvae")
    save_regressor(model, tmp_path / "regressor")
    loaded = load_regressor(tmp_path / "regressor")
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(2, 12, 4, 4)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for name in ("root_pose_6d", "pose", "betas", "cam", "joint_img"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_strict_load_errors(tmp_path):
    directory = save_regressor(_tiny(), tmp_path / "regressor")
    state = read_safetensors(directory / "model.safetensors")
    del state["transformer.kp_tgt"]
    save_safetensors(state, directory / "model.safetensors")
    with pytest.raises(WeightsError, match="transformer.kp_tgt"):
        load_regressor(directory)
    with pytest.raises(WeightsError, match="config not found"):
        load_regressor(tmp_path / "nowhere")
