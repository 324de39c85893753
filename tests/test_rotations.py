"""Rotation conversions: conventions, scipy agreement, torchgeometry-route parity, edge cases."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dpmesh_infer.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    orthonormalise,
    rot6d_to_axis_angle,
    rot6d_to_matrix,
)


def _random_rotations(n, seed=0):
    return Rotation.random(n, random_state=seed)


def _tgm_reference(mats: np.ndarray) -> np.ndarray:
    """torchgeometry's rotation_matrix_to_angle_axis, one matrix at a time, written from its description:
    quaternion from the transposed matrix by the 4-way case selection, then the atan2 angle; NaN → 0."""
    out = []
    eps = 1e-6
    for r in mats:
        t = r.T
        if t[2, 2] < eps:
            if t[0, 0] > t[1, 1]:
                s = 1 + t[0, 0] - t[1, 1] - t[2, 2]
                q = [t[1, 2] - t[2, 1], s, t[0, 1] + t[1, 0], t[2, 0] + t[0, 2]]
            else:
                s = 1 - t[0, 0] + t[1, 1] - t[2, 2]
                q = [t[2, 0] - t[0, 2], t[0, 1] + t[1, 0], s, t[1, 2] + t[2, 1]]
        else:
            if t[0, 0] < -t[1, 1]:
                s = 1 - t[0, 0] - t[1, 1] + t[2, 2]
                q = [t[0, 1] - t[1, 0], t[2, 0] + t[0, 2], t[1, 2] + t[2, 1], s]
            else:
                s = 1 + t[0, 0] + t[1, 1] + t[2, 2]
                q = [s, t[1, 2] - t[2, 1], t[2, 0] - t[0, 2], t[0, 1] - t[1, 0]]
        q = np.array(q) * 0.5 / math.sqrt(s)
        sin_t = math.sqrt(q[1] ** 2 + q[2] ** 2 + q[3] ** 2)
        cos_t = q[0]
        two_theta = 2 * (math.atan2(-sin_t, -cos_t) if cos_t < 0 else math.atan2(sin_t, cos_t))
        k = two_theta / sin_t if sin_t > 0 else 2.0
        out.append(q[1:] * k)
    return np.nan_to_num(np.array(out), nan=0.0)


# ------------------------------------------------------------------------------------------------ 6D


def test_rot6d_column_convention():
    r = torch.tensor(_random_rotations(50).as_matrix())
    six = r[..., :2].reshape(50, 6)  # row-major 3x2: [r00, r01, r10, r11, r20, r21]
    assert torch.equal(six[:, [0, 2, 4]], r[:, :, 0])  # column a1 = elements 0, 2, 4
    assert torch.allclose(rot6d_to_matrix(six), r, atol=1e-12)


def test_rot6d_gram_schmidt_random_input():
    x = torch.randn(4, 7, 6, dtype=torch.float64)
    r = rot6d_to_matrix(x)
    assert r.shape == (4, 7, 3, 3)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r.transpose(-1, -2) @ r, eye.expand_as(r), atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(4, 7, dtype=torch.float64), atol=1e-12)
    a1 = x.reshape(4, 7, 3, 2)[..., 0]
    assert torch.allclose(r[..., 0], a1 / a1.norm(dim=-1, keepdim=True), atol=1e-12)
    # second column lies in the plane of a1 and a2 (Gram-Schmidt, not a row convention)
    a2 = x.reshape(4, 7, 3, 2)[..., 1]
    assert torch.allclose((torch.linalg.cross(a1, a2) * r[..., 1]).sum(-1), torch.zeros(4, 7, dtype=torch.float64),
                          atol=1e-10)


def test_rot6d_to_axis_angle_matches_scipy():
    rot = _random_rotations(20, seed=3)
    six = torch.tensor(rot.as_matrix())[..., :2].reshape(20, 6) * 3.0  # scale does not matter
    assert np.allclose(rot6d_to_axis_angle(six).numpy(), rot.as_rotvec(), atol=1e-10)


# ----------------------------------------------------------------------------------- matrix → aa


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-10), (torch.float32, 2e-6)])
def test_matrix_to_axis_angle_matches_scipy(dtype, atol):
    rot = _random_rotations(2000, seed=1)
    aa = matrix_to_axis_angle(torch.tensor(rot.as_matrix(), dtype=dtype))
    assert aa.dtype == dtype
    assert np.allclose(aa.numpy(), rot.as_rotvec(), atol=atol)


def test_matrix_to_axis_angle_batched_shapes():
    r = torch.tensor(_random_rotations(24).as_matrix()).reshape(2, 3, 4, 3, 3)
    aa = matrix_to_axis_angle(r)
    assert aa.shape == (2, 3, 4, 3)
    assert torch.allclose(aa.reshape(-1, 3), matrix_to_axis_angle(r.reshape(-1, 3, 3)))


@pytest.mark.parametrize("angle", [0.0, 1e-8, 1e-6, 1e-4, 1e-2])
def test_matrix_to_axis_angle_near_identity(angle):
    axes = np.random.default_rng(0).normal(size=(30, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    rot = Rotation.from_rotvec(axes * angle)
    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        aa = matrix_to_axis_angle(torch.tensor(rot.as_matrix(), dtype=dtype)).double().numpy()
        assert np.isfinite(aa).all()
        assert np.allclose(aa, rot.as_rotvec(), atol=atol)
    assert torch.equal(matrix_to_axis_angle(torch.eye(3)), torch.zeros(3))


@pytest.mark.parametrize("delta", [0.0, 1e-7, 1e-5, 1e-3])
def test_matrix_to_axis_angle_near_pi(delta):
    axes = np.random.default_rng(1).normal(size=(30, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    rot = Rotation.from_rotvec(axes * (math.pi - delta))
    mats = rot.as_matrix()
    aa = matrix_to_axis_angle(torch.tensor(mats)).numpy()
    angle = np.linalg.norm(aa, axis=1)
    assert np.allclose(angle, math.pi - delta, atol=1e-7)
    # at π the sign of the axis is arbitrary: compare up to sign, and through the rotation itself
    ref = rot.as_rotvec()
    sign = np.sign((aa * ref).sum(1, keepdims=True))
    assert np.allclose(aa, sign * ref, atol=1e-6)
    assert np.allclose(Rotation.from_rotvec(aa).as_matrix(), mats, atol=1e-9)
    aa32 = matrix_to_axis_angle(torch.tensor(mats, dtype=torch.float32)).double().numpy()
    assert np.allclose(Rotation.from_rotvec(aa32).as_matrix(), mats, atol=5e-5)


def test_matrix_to_axis_angle_is_torchgeometry_route():
    rng = np.random.default_rng(4)
    mats = np.concatenate([
        _random_rotations(300, seed=5).as_matrix(),
        rng.normal(size=(300, 3, 3)),  # raw, non-orthonormal (VQ-VAE decoder output)
        Rotation.from_rotvec(np.array([[math.pi, 0, 0], [0, math.pi, 0], [0, 0, math.pi]])).as_matrix(),
    ])
    ours = matrix_to_axis_angle(torch.tensor(mats)).numpy()
    assert np.allclose(ours, _tgm_reference(mats), atol=1e-12, rtol=0)


def test_matrix_to_axis_angle_nan_becomes_zero():
    m = torch.tensor(_random_rotations(3).as_matrix())
    m[1, 0, 0] = float("nan")
    aa = matrix_to_axis_angle(m)
    assert torch.equal(aa[1], torch.zeros(3, dtype=aa.dtype))
    assert torch.isfinite(aa).all() and aa[0].abs().sum() > 0


def test_half_inputs_are_computed_in_float32():
    r = torch.tensor(_random_rotations(10).as_matrix(), dtype=torch.float16)
    assert matrix_to_axis_angle(r).dtype == torch.float32
    assert rot6d_to_matrix(torch.randn(5, 6, dtype=torch.bfloat16)).dtype == torch.float32


# ----------------------------------------------------------------------------------- aa → matrix


def test_axis_angle_to_matrix_matches_scipy():
    rot = _random_rotations(500, seed=6)
    r = axis_angle_to_matrix(torch.tensor(rot.as_rotvec()))
    assert np.allclose(r.numpy(), rot.as_matrix(), atol=1e-12)
    small = np.random.default_rng(2).normal(size=(20, 3)) * 1e-5
    assert np.allclose(axis_angle_to_matrix(torch.tensor(small)).numpy(),
                       Rotation.from_rotvec(small).as_matrix(), atol=1e-14)
    assert torch.equal(axis_angle_to_matrix(torch.zeros(2, 3)), torch.eye(3).expand(2, 3, 3))


def test_axis_angle_round_trip_and_gradient_at_zero():
    aa = torch.tensor(_random_rotations(100, seed=7).as_rotvec())
    assert torch.allclose(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa, atol=1e-10)
    z = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()


# ---------------------------------------------------------------------------------- orthonormalise


def _assert_rotations(r, atol):
    eye = torch.eye(3, dtype=r.dtype).expand_as(r)
    assert torch.allclose(r.transpose(-1, -2) @ r, eye, atol=atol)
    assert torch.allclose(torch.linalg.det(r), torch.ones(r.shape[:-2], dtype=r.dtype), atol=atol)


def test_orthonormalise_gives_nearest_rotation():
    m = torch.randn(200, 3, 3, dtype=torch.float64)
    r = orthonormalise(m)
    _assert_rotations(r, 1e-12)
    # the nearest proper rotation maximises trace(Rᵀ M) (Wahba); scipy solves it by Markley's method
    # but only accepts det > 0
    pos = torch.linalg.det(m) > 0
    ref = Rotation.from_matrix(m[pos].numpy()).as_matrix()
    assert np.allclose(r[pos].numpy(), ref, atol=1e-8)
    # for every matrix (det < 0 too), no nearby rotation scores higher
    score = (r * m).sum((-1, -2))
    for seed in range(5):
        delta = torch.tensor(Rotation.from_rotvec(
            np.random.default_rng(seed).normal(size=(200, 3)) * 0.05).as_matrix())
        assert (((r @ delta) * m).sum((-1, -2)) <= score + 1e-12).all()


def test_orthonormalise_keeps_rotations_and_fixes_reflections():
    rot = torch.tensor(_random_rotations(20, seed=8).as_matrix())
    assert torch.allclose(orthonormalise(rot), rot, atol=1e-12)
    assert torch.allclose(orthonormalise(2.5 * rot), rot, atol=1e-12)
    reflected = rot * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # det −1
    _assert_rotations(orthonormalise(reflected), 1e-12)
    r16 = orthonormalise(torch.randn(4, 23, 3, 3).half())
    assert r16.dtype == torch.float32 and r16.shape == (4, 23, 3, 3)


def test_orthonormalise_gradient():
    m = torch.randn(6, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(orthonormalise, (m,))
    # exact rotations have three equal singular values: torch's SVD backward is inf/NaN there
    rot = torch.tensor(_random_rotations(5, seed=9).as_matrix(), requires_grad=True)
    (orthonormalise(rot) * torch.randn(5, 3, 3, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(rot.grad).all()
