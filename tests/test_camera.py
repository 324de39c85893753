"""Camera formula, projection, crop→full-image placement (with the synthetic SMPL)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpmesh_infer.geometry import camera as C
from dpmesh_infer.stand_ins.smpl import write_synthetic_smpl_npz
from dpmesh_infer.weights.smpl import load_smpl

D = torch.float64


def test_default_focal_and_principal():
    assert C.default_focal(640, 480) == pytest.approx(800.0)
    torch.testing.assert_close(
        C.default_focal(torch.tensor([640.0, 3.0]), torch.tensor([480.0, 4.0])), torch.tensor([800.0, 5.0])
    )
    assert C.default_principal(640, 480) == (320.0, 240.0)


def test_camera_translation_matches_upstream_formula():
    g = torch.Generator().manual_seed(0)
    cam = torch.randn(5, 3, generator=g, dtype=D) * 2
    f = torch.rand(5, generator=g, dtype=D) * 3000 + 300
    t = C.camera_translation(cam, f, input_size=256)
    for i in range(5):
        k = math.sqrt(f[i].item() ** 2 * 2.5**2 / (256 * 256))
        expected = [cam[i, 0].item(), cam[i, 1].item(), k / (1 + math.exp(-cam[i, 2].item()))]
        np.testing.assert_allclose(t[i].numpy(), expected, rtol=1e-12)
    # scalar focal broadcasts
    scalar, batched = (C.camera_translation(cam[:1], 1000.0, input_size=256),
                        C.camera_translation(cam[:1], f[:1] * 0 + 1000, input_size=256))
    torch.testing.assert_close(scalar, batched)


def test_project_cube():
    # unit cube centred on the optical axis, front face at z = 4.5, back face at z = 5.5
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (4.5, 5.5)], dtype=D)
    f, pp = 1000.0, torch.tensor([320.0, 240.0], dtype=D)
    uv = C.project(corners[None], f, pp, eps=0)[0]
    for (x, y, z), (u, v) in zip(corners.tolist(), uv.tolist()):
        assert u == pytest.approx(320 + 1000 * x / z) and v == pytest.approx(240 + 1000 * y / z)
    front = uv[corners[:, 2] == 4.5]
    assert (front[:, 0].max() - front[:, 0].min()).item() == pytest.approx(1000 / 4.5)
    # upstream's eps and the intrinsics matrix agree with the formula
    uv_eps = C.project(corners[None], f, pp)[0]
    torch.testing.assert_close(uv_eps, corners[:, :2] / (corners[:, 2:] + 1e-4) * f + pp)
    k = C.intrinsics(torch.tensor([f], dtype=D), pp[None])
    hom = corners @ k[0].T
    torch.testing.assert_close(hom[:, :2] / hom[:, 2:], uv)
    assert k.shape == (1, 3, 3) and k[0, 2, 2] == 1 and k[0, 0, 1] == 0


def test_crop_to_image_inverts_the_crop_affine():
    box = torch.tensor([[700.0, 300.0, 512.0]], dtype=D)
    img = torch.tensor([[[700.0, 300.0], [444.0, 44.0], [956.0, 556.0], [10.0, 20.0]]], dtype=D)
    crop = (img - box[:, None, :2]) * (256 / box[:, None, 2:]) + 128  # the forward crop affine
    torch.testing.assert_close(C.crop_to_image(crop, box, 256), img)
    expected = torch.tensor([[128.0, 128.0], [0.0, 0.0], [256.0, 256.0]], dtype=D)
    torch.testing.assert_close(crop[0, :3], expected)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Synthetic people seen in their crops, with random photos and boxes (float64 camera math)."""
    d = tmp_path_factory.mktemp("w")
    write_synthetic_smpl_npz(d)
    body = load_smpl(d)
    g = torch.Generator().manual_seed(0)
    b = 64
    w = torch.randint(640, 4000, (b,), generator=g).to(D)
    h = torch.randint(480, 3000, (b,), generator=g).to(D)
    f = C.default_focal(w, h)
    go = (torch.rand(b, 3, generator=g) - 0.5) * 2
    go[:, 0] += math.pi  # upright in the OpenCV camera (y down)
    bp = torch.randn(b, 23, 3, generator=g) * 0.25
    be = torch.randn(b, 10, generator=g)
    posed = body(go, bp, be)
    offset = posed.root.to(D)
    # camera outputs that make the body fill 60-90 % of the crop, near its centre
    z_root = f * 1.7 / (150 + 80 * torch.rand(b, generator=g, dtype=D))
    k = 2.5 * f / 256
    gamma = ((z_root - offset[:, 2]) / k).clamp(1e-3, 1 - 1e-3)
    txy = (torch.rand(b, 2, generator=g, dtype=D) - 0.5) * 40 / f[:, None] * z_root[:, None]
    cam = torch.cat([txy, torch.logit(gamma)[:, None]], 1)
    t = C.camera_translation(cam, f, input_size=256)
    s = (torch.rand(b, generator=g, dtype=D) * 0.9 + 0.1) * torch.minimum(w, h)
    cx = s / 2 + torch.rand(b, generator=g, dtype=D) * (w - s)
    cy = s / 2 + torch.rand(b, generator=g, dtype=D) * (h - s)
    return dict(
        body=body, go=go, bp=bp, be=be, posed=posed, offset=offset, t=t, f=f,
        box=torch.stack([cx, cy, s], 1), pp=torch.stack([w / 2, h / 2], 1),
        joints_crop=posed.joints.to(D) + t[:, None],
    )  # fmt: skip


@pytest.mark.parametrize("eps", [0.0, 1e-4])
def test_place_in_image_root_exact_and_others_by_formula(scene, eps):
    jc, box, f, pp = scene["joints_crop"], scene["box"], scene["f"], scene["pp"]
    root_c = jc[:, 0]
    root_f = C.place_in_image(root_c, box, f, pp, crop_size=256, eps=eps)
    torch.testing.assert_close(root_f[:, 2], root_c[:, 2] * 256 / box[:, 2])
    joints_full = jc - root_c[:, None] + root_f[:, None]
    uv_full = C.project(joints_full, f, pp, eps=0)  # exact pinhole through K
    uv_crop = C.project(jc, f, torch.tensor([128.0, 128.0], dtype=D), eps=eps)
    uv_mapped = C.crop_to_image(uv_crop, box, 256)
    # root: exact
    torch.testing.assert_close(uv_full[:, 0], uv_mapped[:, 0], rtol=0, atol=1e-8)
    # other joints: the documented difference f·dz/(Z'+dz)·(s_crop·(1 − S/256) − m)
    dz = (jc[..., 2] - root_c[:, None, 2])[..., None]
    s_crop = (uv_crop - 128) / f[:, None, None]
    m = (box[:, None, :2] - pp[:, None]) / f[:, None, None]
    slope = s_crop * (1 - box[:, None, 2:] / 256) - m
    predicted = f[:, None, None] * dz / (root_f[:, None, 2:] + dz) * slope
    atol = 1e-7 if eps == 0 else 0.02  # upstream's eps only perturbs the crop projection
    torch.testing.assert_close(uv_full - uv_mapped, predicted, rtol=0, atol=atol)
    # sanity of the scenario: most joints land within a few percent of the box size
    rel = ((uv_full - uv_mapped).norm(dim=-1) / box[:, None, 2]).flatten()
    assert rel.median() < 0.02


def test_place_in_image_with_focal_override(scene):
    jc, box, f, pp = scene["joints_crop"], scene["box"], scene["f"], scene["pp"]
    f_user = f * 1.37
    root_f = C.place_in_image(jc[:, 0], box, f_user, pp, model_focal=f, crop_size=256)
    uv_full = C.project(root_f[:, None], f_user, pp, eps=0)[:, 0]
    uv_mapped = C.crop_to_image(C.project(jc[:, :1], f, torch.tensor([128.0, 128.0], dtype=D)), box, 256)[:, 0]
    torch.testing.assert_close(uv_full, uv_mapped, rtol=0, atol=1e-8)
    torch.testing.assert_close(root_f[:, 2], jc[:, 0, 2] * 256 / box[:, 2] * 1.37)


def test_full_translation_reproduces_the_placed_mesh(scene):
    body, jc, box, f, pp = scene["body"], scene["joints_crop"], scene["box"], scene["f"], scene["pp"]
    root_f = C.place_in_image(jc[:, 0], box, f, pp, crop_size=256)
    transl = C.full_translation(root_f, scene["offset"])
    out = body(scene["go"], scene["bp"], scene["be"], transl)
    torch.testing.assert_close(out.root.to(D), root_f, rtol=0, atol=1e-4)
    placed = scene["posed"].root_relative().vertices.to(D) + root_f[:, None]
    torch.testing.assert_close(out.vertices.to(D), placed, rtol=0, atol=1e-4)
    # upstream's crop-camera mesh: smpl(θ, β, T) has its root at the crop-camera root
    crop = body(scene["go"], scene["bp"], scene["be"], scene["t"])
    torch.testing.assert_close(crop.root.to(D), jc[:, 0], rtol=0, atol=1e-4)


def test_intrinsics_batch_and_scalar_focal():
    k = C.intrinsics(torch.tensor([1000.0, 2000.0]), torch.tensor([320.0, 240.0]))
    assert k.shape == (2, 3, 3)
    torch.testing.assert_close(k[1], torch.tensor([[2000.0, 0, 320], [0, 2000, 240], [0, 0, 1]]))
    k1 = C.intrinsics(500.0, torch.tensor([[10.0, 20.0]]))
    torch.testing.assert_close(k1[0], torch.tensor([[500.0, 0, 10], [0, 500, 20], [0, 0, 1]]))
