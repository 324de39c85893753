"""SMPLBody: shapes, fp32 always, the 30-joint regressor, parity with smplpytorch's LBS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dpmesh_infer.errors import WeightsError
from dpmesh_infer.models.body import (
    FACE_VERTEX_IDS,
    HEAD_TOP_FALLBACK_VERTEX,
    JOINT_NAMES_30,
    SMPLBody,
    build_joint_regressor_30,
)
from dpmesh_infer.stand_ins.smpl import SYNTHETIC_REST_JOINTS, make_synthetic_smpl_arrays, write_synthetic_smpl_npz
from dpmesh_infer.weights.smpl import load_smpl, load_smpl_arrays


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    write_synthetic_smpl_npz(d)
    return d


@pytest.fixture(scope="module")
def body(weights_dir):
    return load_smpl(weights_dir)


def _params(b, seed=0, scale=0.4):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, 3, generator=g) * scale,
        torch.randn(b, 23, 3, generator=g) * scale,
        torch.randn(b, 10, generator=g),
        torch.randn(b, 3, generator=g),
    )


def test_forward_shapes_and_dtypes(body):
    go, bp, be, tr = _params(3)
    out = body(go, bp, be, tr)
    assert out.vertices.shape == (3, 6890, 3) and out.joints.shape == (3, 30, 3)
    assert out.vertices.dtype == torch.float32 and out.joints.dtype == torch.float32
    flat = body(go, bp.reshape(3, 69), be, tr)
    torch.testing.assert_close(flat.vertices, out.vertices, rtol=0, atol=0)
    assert body.faces.shape == (13776, 3) and body.faces.dtype == np.int64
    assert len(JOINT_NAMES_30) == 30 and body.J30.shape == (30, 6890)


def test_bad_shapes_raise(body):
    go, bp, be, _ = _params(2)
    with pytest.raises(ValueError, match="body_pose"):
        body(go, bp[:, :22], be)
    with pytest.raises(ValueError, match="betas"):
        body(go, bp, be[:, :5])


def test_fp32_under_fp16_inputs_and_autocast(body):
    go, bp, be, tr = _params(2)
    h = [x.half() for x in (go, bp, be, tr)]
    ref = body(*[x.float() for x in h])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = body(*h)
    assert out.vertices.dtype == torch.float32 and out.joints.dtype == torch.float32
    torch.testing.assert_close(out.vertices, ref.vertices, rtol=0, atol=0)
    torch.testing.assert_close(out.joints, ref.joints, rtol=0, atol=0)


def test_dtype_casts_keep_buffers_fp32(weights_dir):
    b = load_smpl(weights_dir).half()
    assert all(buf.dtype == torch.float32 for buf in b.buffers() if buf.is_floating_point())
    b = b.to(torch.float16)
    assert b.J30.dtype == torch.float32 and b.smpl.v_template.dtype == torch.float32
    go, bp, be, tr = _params(1)
    assert b(go.half(), bp.half(), be.half(), tr.half()).vertices.dtype == torch.float32


def test_joints_are_j30_times_vertices(body, weights_dir):
    go, bp, be, tr = _params(2, seed=1)
    out = body(go, bp, be, tr)
    arrays = load_smpl_arrays(weights_dir)
    v = out.vertices.double().numpy()
    j30, _ = build_joint_regressor_30(arrays["J_regressor"])
    np.testing.assert_allclose(out.joints.double().numpy(), np.einsum("jv,bvc->bjc", j30, v), atol=1e-5)
    # the one-hot rows give exactly the vertices
    for row, vid in enumerate(FACE_VERTEX_IDS, start=24):
        torch.testing.assert_close(out.joints[:, row], out.vertices[:, vid], rtol=0, atol=0)
    torch.testing.assert_close(out.joints[:, 29], out.vertices[:, HEAD_TOP_FALLBACK_VERTEX], rtol=0, atol=0)
    assert "411" in body.head_top_source and "fallback" in body.head_top_source
    # rows 0-23 (the SMPL regressor) and the one-hot rows are convex combinations
    np.testing.assert_allclose(body.J30.sum(1).numpy(), 1.0, atol=1e-5)


def test_head_top_from_extra_regressor(tmp_path):
    write_synthetic_smpl_npz(tmp_path, extra_regressor=True)
    b = load_smpl(tmp_path / "smpl")
    assert b.head_top_source == "J_regressor_extra.npy row 3"
    out = b(*_params(2))
    v = out.vertices
    expected = 0.7 * v[:, 411] + 0.1 * (v[:, 331] + v[:, 3489] + v[:, 3990])
    torch.testing.assert_close(out.joints[:, 29], expected, rtol=0, atol=1e-5)


def test_rest_pose_joints_and_translation(body):
    z = torch.zeros(1, 3)
    out = body(z, torch.zeros(1, 69), torch.zeros(1, 10))
    np.testing.assert_allclose(out.joints[0, :24].numpy(), SYNTHETIC_REST_JOINTS, atol=1e-5)
    height = out.vertices[0, :, 1].max() - out.vertices[0, :, 1].min()
    assert 1.5 < height.item() < 2.0  # plausible human scale, metres

    go, bp, be, tr = _params(2, seed=2)
    moved, still = body(go, bp, be, tr), body(go, bp, be)
    torch.testing.assert_close(moved.vertices, still.vertices + tr[:, None], rtol=0, atol=1e-5)
    rel = moved.root_relative()
    torch.testing.assert_close(rel.joints[:, 0], torch.zeros(2, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(rel.vertices, still.root_relative().vertices, rtol=0, atol=1e-5)
    torch.testing.assert_close(still.translated(tr).vertices, moved.vertices, rtol=0, atol=1e-5)


def _rodrigues(aa):
    """(N, 3) axis-angle → (N, 3, 3), float64."""
    theta = np.linalg.norm(aa, axis=1, keepdims=True)
    k = aa / np.maximum(theta, 1e-12)
    kx = np.zeros((len(aa), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx = kx - kx.transpose(0, 2, 1)
    t = theta[:, :, None]
    return np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * kx @ kx


def _smplpytorch_lbs(a, pose72, betas, trans):
    """Independent float64 re-statement of smplpytorch SMPL_Layer.forward (upstream's SMPL)."""
    parents = a["kintree_table"][0]
    rots = _rodrigues(pose72.reshape(-1, 3))  # (24, 3, 3)
    pose_map = (rots[1:] - np.eye(3)).reshape(-1)  # 207
    v_shaped = a["v_template"] + a["shapedirs"] @ betas
    j = a["J_regressor"] @ v_shaped
    v_posed = v_shaped + a["posedirs"] @ pose_map
    g = [None] * 24
    g[0] = np.eye(4)
    g[0][:3, :3], g[0][:3, 3] = rots[0], j[0]
    for i in range(1, 24):
        rel = np.eye(4)
        rel[:3, :3], rel[:3, 3] = rots[i], j[i] - j[parents[i]]
        g[i] = g[parents[i]] @ rel
    # G_i minus the transformed rest joint in the last column (smplpytorch th_results2)
    g2 = np.stack(
        [gi - np.pad((gi @ np.append(j[i], 0.0))[:, None], ((0, 0), (3, 0))) for i, gi in enumerate(g)]
    )
    t = np.einsum("vk,kab->vab", a["weights"], g2)
    verts = np.einsum("vab,vb->va", t, np.concatenate([v_posed, np.ones((6890, 1))], 1))[:, :3]
    return verts + trans


def test_matches_smplpytorch_lbs(body):
    a = {k: v.astype(np.float64) for k, v in make_synthetic_smpl_arrays(0).items()}
    a["kintree_table"] = a["kintree_table"].astype(np.int64)
    a["kintree_table"][0, 0] = -1
    go, bp, be, tr = _params(2, seed=3, scale=0.6)
    out = body(go, bp, be, tr)
    for i in range(2):
        pose72 = torch.cat([go[i], bp[i].reshape(-1)]).double().numpy()
        ref = _smplpytorch_lbs(a, pose72, be[i].double().numpy(), tr[i].double().numpy())
        np.testing.assert_allclose(out.vertices[i].double().numpy(), ref, atol=2e-5)


def test_load_smpl_missing_says_how_to_fix(tmp_path):
    with pytest.raises(WeightsError, match="dpmesh weights import-smpl"):
        load_smpl(tmp_path)


def test_smplbody_from_arrays(weights_dir):
    b = SMPLBody(load_smpl_arrays(weights_dir))
    assert b.device.type == "cpu" and b.faces_tensor.dtype == torch.long
