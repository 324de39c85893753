"""Evaluation metrics: known values, independent Procrustes computations, invariances, the §10 protocol."""

import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.spatial.transform import Rotation

from dpmesh_infer.metrics import (
    H36M_EVAL_JOINTS,
    evaluate_meshes,
    h36m_eval_joints,
    h36m_joints,
    mpjpe,
    mpve,
    pa_mpjpe,
    similarity_align,
    weighted_mean,
)


def _umeyama_pa_mpjpe(pred, gt):
    """Independent PA-MPJPE (mm): Umeyama 1991, Σ = gᵀp/n, R = U·diag(1,1,sign det UV)·Vᵀ, one instance."""
    n = pred.shape[0]
    mp, mg = pred.mean(0), gt.mean(0)
    p, g = pred - mp, gt - mg
    u, d, vt = np.linalg.svd(g.T @ p / n)
    sgn = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
    r = u @ sgn @ vt
    c = np.trace(np.diag(d) @ sgn) / ((p ** 2).sum() / n)
    aligned = c * p @ r.T + mg
    return np.linalg.norm(aligned - gt, axis=1).mean() * 1000.0


def _random_similarity(rng):
    return rng.uniform(0.5, 2.0), Rotation.random(random_state=rng).as_matrix(), rng.normal(size=3)


def test_mpjpe_known_values():
    gt = np.zeros((2, 4, 3))
    pred = gt.copy()
    pred[0, :, 0] = 0.01  # every joint 1 cm off → 10 mm
    pred[1, 0] = [0.003, 0.004, 0.0]  # one joint 5 mm off, three exact → 1.25 mm
    np.testing.assert_allclose(mpjpe(pred, gt), [10.0, 1.25])
    # unbatched input is one instance
    np.testing.assert_allclose(mpjpe(pred[0], gt[0]), [10.0])


def test_pa_mpjpe_known_values():
    # a pure translation/rotation/scale is removed entirely; a reflection is not (reflection fix)
    gt = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]], dtype=float) * 0.1
    rot = Rotation.from_euler("z", 90, degrees=True).as_matrix()
    pred = 1.7 * gt @ rot.T + np.array([0.3, -0.2, 5.0])
    assert pa_mpjpe(pred[None], gt[None])[0] < 1e-9
    mirrored = gt * np.array([1.0, 1.0, -1.0])
    assert pa_mpjpe(mirrored[None], gt[None])[0] > 10.0
    np.testing.assert_allclose(pa_mpjpe(mirrored[None], gt[None]), [_umeyama_pa_mpjpe(mirrored, gt)])


def test_pa_mpjpe_agrees_with_independent_umeyama():
    rng = np.random.default_rng(0)
    gt = rng.normal(scale=0.3, size=(32, 14, 3))
    pred = gt + rng.normal(scale=0.05, size=gt.shape)
    # apply random similarities to half of the predictions, and a reflection to a few
    for b in range(16):
        s, r, t = _random_similarity(rng)
        pred[b] = s * pred[b] @ r.T + t
    pred[20:24] *= np.array([-1.0, 1.0, 1.0])
    expected = np.array([_umeyama_pa_mpjpe(p, g) for p, g in zip(pred, gt)])
    np.testing.assert_allclose(pa_mpjpe(pred, gt), expected, rtol=1e-9, atol=1e-9)


def test_pa_alignment_agrees_with_scipy_procrustes():
    # scipy standardises both sets and aligns the second onto the first: disparity = residual SS / ||gt_c||²
    rng = np.random.default_rng(1)
    gt = rng.normal(scale=0.3, size=(8, 14, 3))
    pred = gt + rng.normal(scale=0.03, size=gt.shape)  # close to gt: no reflection is optimal
    aligned = similarity_align(pred, gt)
    for a, p, g in zip(aligned, pred, gt):
        _, _, disparity = procrustes(g, p)
        gc = g - g.mean(0)
        np.testing.assert_allclose(((a - g) ** 2).sum(), disparity * (gc ** 2).sum(), rtol=1e-8)


def test_pa_mpjpe_invariant_to_similarity_of_pred():
    rng = np.random.default_rng(2)
    gt = rng.normal(scale=0.3, size=(10, 14, 3))
    noisy = gt + rng.normal(scale=0.04, size=gt.shape)
    exact = np.empty_like(gt)
    moved = np.empty_like(gt)
    for b in range(10):
        s, r, t = _random_similarity(rng)
        exact[b] = s * gt[b] @ r.T + t
        moved[b] = s * noisy[b] @ r.T + t
    assert np.abs(pa_mpjpe(exact, gt)).max() < 1e-9  # ≈ 0 when pred = s·R·gt + t
    np.testing.assert_allclose(pa_mpjpe(moved, gt), pa_mpjpe(noisy, gt), rtol=1e-9)
    assert (mpjpe(moved, gt) > pa_mpjpe(moved, gt)).all()
    assert (pa_mpjpe(noisy, gt) <= mpjpe(noisy, gt) + 1e-9).all()  # alignment never hurts


def test_h36m_joints_and_eval_selection():
    rng = np.random.default_rng(3)
    verts = rng.normal(size=(2, 50, 3))
    reg = rng.random((17, 50))
    reg /= reg.sum(1, keepdims=True)
    joints = h36m_joints(verts, reg)
    np.testing.assert_allclose(joints[1], reg @ verts[1])
    ev = h36m_eval_joints(joints)
    assert ev.shape == (2, 14, 3)
    np.testing.assert_allclose(ev[0, 0], joints[0, 1] - joints[0, 0])
    np.testing.assert_allclose(ev[1, -1], joints[1, 16] - joints[1, 0])
    np.testing.assert_allclose(ev[0, 6], joints[0, 8] - joints[0, 0])
    assert H36M_EVAL_JOINTS == (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)
    with pytest.raises(ValueError, match="17 H36M joints"):
        h36m_eval_joints(joints[:, :14])
    with pytest.raises(ValueError, match="regressor"):
        h36m_joints(verts, reg[:, :40])


def test_mpve_pelvis_relative_and_known_value():
    rng = np.random.default_rng(4)
    gt = rng.normal(size=(3, 40, 3))
    reg = rng.random((24, 40))
    reg /= reg.sum(1, keepdims=True)
    # a global translation of the prediction is removed by the pelvis
    np.testing.assert_allclose(mpve(gt + np.array([1.0, 2.0, 3.0]), gt, reg), 0.0, atol=1e-9)
    # deform one vertex by 4 cm with a regressor that ignores it → 40 mm / 40 vertices = 1 mm
    reg0 = reg.copy()
    reg0[0, 7] = 0.0
    reg0[0] /= reg0[0].sum()
    pred = gt.copy()
    pred[:, 7, 1] += 0.04
    np.testing.assert_allclose(mpve(pred, gt, reg0), 1.0)
    np.testing.assert_allclose(mpve(pred, gt, reg0[0]), 1.0)  # row 0 alone works too
    # a separate GT regressor: each mesh relative to its own pelvis
    reg_gt = rng.random(40)
    reg_gt /= reg_gt.sum()
    pred_rel = pred - np.einsum("v,bvc->bc", reg0[0], pred)[:, None]
    gt_rel = gt - np.stack([reg_gt @ g for g in gt])[:, None]
    expected = np.linalg.norm(pred_rel - gt_rel, axis=-1).mean(-1) * 1000
    np.testing.assert_allclose(mpve(pred, gt, reg0, reg_gt), expected)
    with pytest.raises(ValueError, match="regressor"):
        mpve(pred, gt, reg[:, :30])


def test_evaluate_meshes_protocol():
    rng = np.random.default_rng(5)
    gt = rng.normal(scale=0.3, size=(4, 60, 3))
    h36m = rng.random((17, 60))
    h36m /= h36m.sum(1, keepdims=True)
    smpl = rng.random((24, 60))
    smpl /= smpl.sum(1, keepdims=True)
    shifted = gt + np.array([0.5, 0.1, 4.0])  # camera-space translation only: every metric is 0
    m = evaluate_meshes(shifted, gt, h36m_regressor=h36m, smpl_regressor=smpl)
    for v in (m.mpjpe, m.pa_mpjpe, m.mpve):
        np.testing.assert_allclose(v, 0.0, atol=1e-9)
    rot = Rotation.from_euler("y", 30, degrees=True).as_matrix()
    turned = 1.2 * gt @ rot.T
    m = evaluate_meshes(turned, gt, h36m_regressor=h36m, smpl_regressor=smpl)
    assert (m.mpjpe > 1.0).all() and (m.mpve > 1.0).all()
    np.testing.assert_allclose(m.pa_mpjpe, 0.0, atol=1e-9)
    pj = h36m_eval_joints(h36m_joints(turned, h36m))
    gj = h36m_eval_joints(h36m_joints(gt, h36m))
    np.testing.assert_allclose(m.mpjpe, np.linalg.norm(pj - gj, axis=-1).mean(-1) * 1000)
    means = m.means()
    assert means["count"] == 4 and means["mpjpe"] == pytest.approx(m.mpjpe.mean())


def test_weighted_mean_and_shape_errors():
    assert weighted_mean([10.0, 40.0], [3, 1]) == pytest.approx(17.5)
    assert np.isnan(weighted_mean([], []))
    with pytest.raises(ValueError):
        weighted_mean([1.0], [1, 2])
    with pytest.raises(ValueError, match="same shape"):
        mpjpe(np.zeros((2, 14, 3)), np.zeros((2, 13, 3)))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        pa_mpjpe(np.zeros((2, 14, 2)), np.zeros((2, 14, 2)))
