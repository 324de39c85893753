"""Per-person visibility (dpmesh_infer.analysis.visibility): keypoint share, occlusion ratio from rendered depth."""

import json

import numpy as np
import pytest
import torch

from dpmesh_infer.analysis.visibility import add_occlusion_ratios, occlusion_ratios, scaled_camera
from dpmesh_infer.geometry.joints import coco17_to_j30
from dpmesh_infer.outputs import ImageResult, Person, Visibility
from dpmesh_infer.refine.losses import body_spheres

K = np.array([[400.0, 0.0, 160.0], [0.0, 400.0, 120.0], [0.0, 0.0, 1.0]])
SIZE = (320, 240)


@pytest.fixture(scope="module")
def renderer():
    try:
        from dpmesh_infer.render import Renderer

        r = Renderer()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no headless OpenGL renderer on this machine: {e}")
    yield r
    r.close()


@pytest.fixture(scope="module")
def two_people(tiny_pipeline):
    """Two synthetic people (the stand-in SMPL's posed joints as unions of spheres): A at 4 m, B at 6 m
    and 0.3 m to the side, so A hides part of B. Returns (vertices [A, B], faces, centres (2, S, 3), radii)."""
    import trimesh

    go = torch.tensor([[np.pi, 0.0, 0.0]] * 2)  # upright, facing the camera
    pose = torch.zeros(2, 23, 3)
    pose[:, 15, 2], pose[:, 16, 2] = -1.0, 1.0  # arms down
    with torch.no_grad():
        transl = torch.tensor([[0.0, 0.1, 4.0], [0.3, 0.15, 6.0]])
        joints = tiny_pipeline.body(go, pose, torch.zeros(2, 10), transl).joints
    centres, radii = body_spheres(joints.double())
    centres, radii = centres.numpy(), radii.numpy()
    unit = trimesh.creation.icosphere(subdivisions=3)
    verts = [np.concatenate([unit.vertices * r + c for c, r in zip(cs, radii)]) for cs in centres]
    faces = np.concatenate([unit.faces + i * len(unit.vertices) for i in range(len(radii))])
    return verts, faces, centres, radii


def ray_sphere_depths(centres, radii, K, size):
    """Independent reference: depth z of the first hit of the ray through every pixel centre with a union
    of spheres (closed form), inf where the ray misses. centres (S, 3), radii (S,) -> (H, W)."""
    w, h = size
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    d = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    b = d @ centres.T  # (H, W, S)
    disc = b * b - ((centres**2).sum(-1) - radii**2)
    t = np.where(disc >= 0, b - np.sqrt(np.maximum(disc, 0)), np.inf)
    return (t * d[..., 2:3]).min(-1)


def test_nearer_person_is_not_hidden_and_the_farther_one_by_the_true_share(renderer, two_people):
    verts, faces, centres, radii = two_people
    za, zb = (ray_sphere_depths(c, radii, K, SIZE) for c in centres)
    share_b = float(((za < zb) & np.isfinite(zb)).sum() / np.isfinite(zb).sum())
    assert 0.1 < share_b < 0.9  # a real partial occlusion
    ratios, area = occlusion_ratios(renderer, verts, faces, K, SIZE)
    assert ratios[0] < 0.005, ratios
    assert abs(ratios[1] - share_b) < 0.05, (ratios, share_b)
    assert abs(area[1] - np.isfinite(zb).sum()) < 0.05 * area[1]  # the silhouette itself is right
    # listing order does not matter (one depth buffer), and a coarser render gives the same share
    flipped, _ = occlusion_ratios(renderer, verts[::-1], faces, K, SIZE)
    np.testing.assert_allclose(flipped[::-1], ratios, atol=1e-9)
    coarse, coarse_area = occlusion_ratios(renderer, verts, faces, K, SIZE, max_side=160)
    assert abs(coarse[1] - share_b) < 0.05 and coarse_area[1] < area[1] / 3


def test_person_outside_the_image_has_no_ratio(renderer, two_people):
    verts, faces, _, _ = two_people
    behind = verts[0] * np.array([1.0, 1.0, -1.0])  # behind the camera
    ratios, area = occlusion_ratios(renderer, [verts[1], behind], faces, K, SIZE)
    assert ratios[0] == 0.0 and np.isnan(ratios[1]) and area[1] == 0


def test_add_occlusion_ratios_fills_visibility(renderer, two_people):
    verts, faces, _, _ = two_people
    kp = np.zeros((30, 3))
    persons = [Person(vertices=v, joints=np.zeros((30, 3)), global_orient=np.zeros(3), body_pose=np.zeros((23, 3)),
                      betas=np.zeros(10), transl=np.zeros(3), keypoints_2d=kp, joints_2d=np.zeros((30, 2)),
                      bbox=np.zeros(4)) for v in verts]
    res = add_occlusion_ratios(ImageResult(persons=persons, K=K, image_size=SIZE), renderer, faces)
    assert res.persons[0].visibility.occlusion_ratio == pytest.approx(0.0, abs=0.005)
    assert 0.1 < res.persons[1].visibility.occlusion_ratio < 0.9 and res.persons[1].visibility.silhouette_px > 100
    arrays = res.stacked()
    assert arrays["occlusion_ratio"].shape == (2,) and arrays["confident_keypoints"].tolist() == [0.0, 0.0]


def test_confident_keypoint_fraction():
    coco = np.zeros((1, 17, 3))
    coco[0, :10, 2] = 0.9  # 10 of the 17 body keypoints detected
    coco[0, 10, 2] = 0.29  # just below the 0.3 threshold
    kp30 = coco17_to_j30(coco)[0]
    v = Visibility.from_keypoints(kp30)
    assert v.confident_keypoints == pytest.approx(10 / 17) and v.occlusion_ratio is None
    assert Visibility.from_keypoints(kp30, threshold=0.2).confident_keypoints == pytest.approx(11 / 17)
    full = np.ones((30, 3))  # J30 slots without a COCO name (torso, hands, ...) do not count
    full[[3, 6, 9, 22, 23], 2] = 0.0
    assert Visibility.from_keypoints(full).confident_keypoints == 1.0


def test_scaled_camera_keeps_pixel_centres():
    k, size = scaled_camera(K, (1600, 1200), 800)
    assert size == (800, 600) and k[0, 0] == pytest.approx(200.0)
    # the centre of pixel 0 at full size lies a quarter pixel inside pixel 0 of the half-size image
    assert (0 - K[0, 2]) / K[0, 0] == pytest.approx(((0 + 0.5) * 0.5 - 0.5 - k[0, 2]) / k[0, 0])
    assert scaled_camera(K, SIZE, 800)[1] == SIZE


def test_people_json_always_has_the_keypoint_share(tiny_pipeline, scene, tmp_path):
    image, kp = scene
    kp = kp.copy()
    kp[0, :5, 2] = 0.1  # person 0: the 5 face keypoints are unsure
    out = tiny_pipeline(image, keypoints=kp)
    persons = json.loads(out.save(tmp_path / "a.json").read_text())["persons"]
    assert [p["visibility"]["confident_keypoints"] for p in persons] == [pytest.approx(12 / 17, abs=1e-4), 1.0]
    assert all(p["visibility"]["occlusion_ratio"] is None for p in persons)  # nothing was rendered
    with np.load(out.save(tmp_path / "a.npz"), allow_pickle=False) as z:
        assert np.isnan(z["occlusion_ratio"]).all() and z["confident_keypoints"][0] == pytest.approx(12 / 17)
