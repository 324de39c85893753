"""Synthetic dataset generator: exact labels, rendering that agrees with them, determinism, the format."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from dpmesh_infer.data.format import Dataset
from dpmesh_infer.data.synthetic import (
    POSE_BOX,
    generate_synthetic_dataset,
    image_rngs,
    render_people,
    surface_triangles,
    synthetic_background,
)
from dpmesh_infer.errors import InputError
from dpmesh_infer.models.body import SMPLBody
from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays

TORSO_JOINTS = (0, 3, 6, 9)  # pelvis, torso (spine1), spine (spine2), chest (spine3): inside the body
PELVIS, HEAD_TOP = 0, 29
CROWD_SEED, SINGLE_SEED = 0, 3


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """SMPL batches here are 1-3 bodies: one thread is fastest, and the test machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def body():
    return SMPLBody(make_synthetic_smpl_arrays(seed=0))


@pytest.fixture(scope="module")
def crowd_ds(tmp_path_factory):
    """8 images with 2-3 people each (overlaps and occlusion likely)."""
    root = generate_synthetic_dataset(tmp_path_factory.mktemp("crowd"), splits={"train": 5, "test": 3},
                                      persons_per_image=(2, 3), seed=CROWD_SEED)
    return Dataset(root)


@pytest.fixture(scope="module")
def single_ds(tmp_path_factory):
    """5 images with exactly one person: the drawn silhouette is that person's."""
    root = generate_synthetic_dataset(tmp_path_factory.mktemp("single"), splits={"val": 5},
                                      persons_per_image=(1, 1), seed=SINGLE_SEED)
    return Dataset(root)


def _all(ds):
    return [rec for split in ds.splits for rec in ds.records(split)]


def _rgb(ds, rec):
    img = cv2.imread(str(ds.image_path(rec)), cv2.IMREAD_COLOR)
    assert img is not None, ds.image_path(rec)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _background(rec, seed):
    """The record's background, drawn again on its own (the generator's first random stream)."""
    bg_rng, _ = image_rngs(seed, rec.split, rec.index)
    return synthetic_background(rec.width, rec.height, bg_rng)


# --------------------------------------------------------------------------- format


def test_opens_with_dataset_and_has_requested_counts(crowd_ds, single_ds):
    assert sorted(crowd_ds.splits) == ["test", "train"]
    assert len(crowd_ds.records("train")) == 5 and len(crowd_ds.records("test")) == 3
    assert len(single_ds.records("val")) == 5
    meta = crowd_ds.meta
    assert "synthetic" in meta["source"] and "synthetic" in meta["notes"].lower()
    assert "make_synthetic_smpl_arrays" in meta["notes"]  # says which body model
    for rec in _all(crowd_ds):
        assert rec.image == f"{rec.split}/{rec.index:05d}.png"
        assert (rec.width, rec.height) == (320, 240)
        assert _rgb(crowd_ds, rec).shape == (240, 320, 3)
        assert 2 <= len(rec.persons) <= 3
        assert "synthetic" in rec.tags
        np.testing.assert_allclose(rec.focal, [math.hypot(320, 240)] * 2, atol=1e-4)
        np.testing.assert_allclose(rec.principal, [160.0, 120.0])
        for p in rec.persons:
            assert p.smpl is not None and p.smpl.valid and p.smpl.gender == "neutral"
            assert p.smpl.transl is not None
            assert np.all(p.joints_3d_valid == 1)


def test_crowd_tag_matches_box_overlap(crowd_ds):
    def iou(a, b):
        ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
        iw, ih = min(ax2, bx2) - max(a[0], b[0]), min(ay2, by2) - max(a[1], b[1])
        inter = max(iw, 0) * max(ih, 0)
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)

    n_crowd = 0
    for rec in _all(crowd_ds):
        boxes = [p.bbox for p in rec.persons]
        pairs = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))]
        crowd = any(iou(boxes[i], boxes[j]) > 0.1 for i, j in pairs)
        assert ("crowd" in rec.tags) == crowd, rec.image
        n_crowd += crowd
    assert n_crowd > 0  # the fixture does exercise the tag


# --------------------------------------------------------------------------- exact labels


def test_keypoints_are_the_projection_of_joints_3d(crowd_ds):
    for rec in _all(crowd_ds):
        k = np.array([[rec.focal[0], 0, rec.principal[0]], [0, rec.focal[1], rec.principal[1]], [0, 0, 1]],
                     dtype=np.float64)
        for p in rec.persons:
            hom = p.joints_3d.astype(np.float64) @ k.T
            xy = hom[:, :2] / hom[:, 2:]
            np.testing.assert_allclose(p.keypoints_2d[:, :2], xy, atol=1e-3, rtol=0)
            inside = ((p.joints_3d[:, 2] > 0) & (xy[:, 0] >= 0) & (xy[:, 0] <= rec.width - 1)
                      & (xy[:, 1] >= 0) & (xy[:, 1] <= rec.height - 1))
            np.testing.assert_array_equal(p.keypoints_2d[:, 2], inside.astype(np.float32))


def test_smpl_parameters_reproduce_joints_3d(crowd_ds, body):
    for rec in _all(crowd_ds):
        s = [p.smpl for p in rec.persons]
        with torch.no_grad():
            out = body(torch.tensor(np.stack([x.global_orient for x in s])),
                       torch.tensor(np.stack([x.body_pose for x in s])),
                       torch.tensor(np.stack([x.betas for x in s])),
                       torch.tensor(np.stack([x.transl for x in s])))
        joints = np.stack([p.joints_3d for p in rec.persons])
        np.testing.assert_allclose(out.joints.numpy(), joints, atol=1e-5, rtol=0)


def test_people_are_upright_facing_the_camera_at_plausible_depth(crowd_ds, single_ds):
    for rec in _all(crowd_ds) + _all(single_ds):
        for p in rec.persons:
            assert p.keypoints_2d[HEAD_TOP, 1] < p.keypoints_2d[PELVIS, 1], rec.image
            r, _ = cv2.Rodrigues(p.smpl.global_orient.astype(np.float64))
            assert r[1, 1] < -math.cos(math.radians(15))  # model up → camera up (−y), tilt ≤ ~14°
            assert r[2, 2] < -0.4  # model front (+z) → towards the camera, yaw ≤ 60°
            assert 2.9 < p.joints_3d[PELVIS, 2] < 8.1


def test_pose_and_shape_stay_in_the_documented_ranges(crowd_ds):
    box = np.array([POSE_BOX[j] for j in range(1, 24)])  # (23, 3, 2)
    for rec in _all(crowd_ds):
        for p in rec.persons:
            pose = p.smpl.body_pose.reshape(23, 3)
            assert np.all(pose >= box[..., 0] - 1e-6) and np.all(pose <= box[..., 1] + 1e-6)
            assert np.all(np.abs(p.smpl.betas) <= 2.0 + 1e-6)


# --------------------------------------------------------------------------- rendering agrees with labels


def test_single_person_silhouette_matches_bbox_and_covers_torso(single_ds):
    for rec in single_ds.records("val"):
        (p,) = rec.persons
        drawn = np.any(_rgb(single_ds, rec) != _background(rec, SINGLE_SEED), axis=2)
        ys, xs = np.nonzero(drawn)
        assert xs.size > 100, rec.image
        x, y, w, h = p.bbox
        np.testing.assert_allclose([xs.min(), ys.min(), xs.max(), ys.max()], [x, y, x + w, y + h], atol=2.0)
        for j in TORSO_JOINTS:
            u, v, vis = p.keypoints_2d[j]
            if vis:
                assert drawn[int(round(v)), int(round(u))], (rec.image, j)


def test_crowd_images_are_background_outside_boxes_and_people_at_torso_joints(crowd_ds):
    for rec in _all(crowd_ds):
        img, bg = _rgb(crowd_ds, rec), _background(rec, CROWD_SEED)
        in_boxes = np.zeros(img.shape[:2], dtype=bool)
        for p in rec.persons:
            x, y, w, h = p.bbox
            in_boxes[max(int(y) - 2, 0):int(y + h) + 3, max(int(x) - 2, 0):int(x + w) + 3] = True
        np.testing.assert_array_equal(img[~in_boxes], bg[~in_boxes])
        drawn = np.any(img != bg, axis=2)
        for p in rec.persons:
            x, y, w, h = (int(round(c)) for c in p.bbox)
            assert drawn[y:y + h + 1, x:x + w + 1].mean() > 0.1  # the person really is drawn in its box
            for j in TORSO_JOINTS:
                u, v, vis = p.keypoints_2d[j]
                if vis:
                    assert drawn[int(round(v)), int(round(u))], (rec.image, j)


def _posed(body, pelvis_positions):
    n = len(pelvis_positions)
    go = torch.tensor([[math.pi, 0.0, 0.0]] * n)  # upright, facing the camera
    with torch.no_grad():
        out = body(go, torch.zeros(n, 69), torch.zeros(n, 10))
    offset = torch.tensor(pelvis_positions, dtype=torch.float32) - out.joints[:, 0]
    return (out.vertices + offset[:, None]).numpy(), (out.joints + offset[:, None]).numpy()


def test_render_people_occlusion_and_person_map(body):
    mesh = surface_triangles(body.smpl.v_template.numpy(), body.faces)
    assert not mesh.closed  # the synthetic stand-in's faces are random: a local triangulation is used
    assert np.unique(mesh.triangles).size == 6890  # every vertex is drawn
    rgb = np.full((mesh.triangles.shape[0], 3), 200.0)
    bg = np.zeros((240, 320, 3), np.uint8)
    f, pp = 400.0, np.array([160.0, 120.0])
    # person 1 stands 2 m right behind person 0
    verts, joints = _posed(body, [[0.0, 0.0, 4.0], [0.0, 0.0, 6.0]])
    res = render_people(bg, verts, mesh.triangles, rgb, f, pp)
    assert res.occluded_fraction[0] == 0.0 and res.occluded_fraction[1] >= 0.3
    u, v = joints[0, 0, :2] / joints[0, 0, 2] * f + pp
    assert res.person_map[int(round(v)), int(round(u))] == 0
    assert np.array_equal(res.person_map >= 0, np.any(res.image != bg, axis=2))
    # the input order does not decide who is in front
    swapped = render_people(bg, verts[::-1].copy(), mesh.triangles, rgb, f, pp)
    np.testing.assert_array_equal(swapped.occluded_fraction, res.occluded_fraction[::-1])
    # side by side, 2 m apart: nobody is covered
    verts, _ = _posed(body, [[-1.0, 0.0, 5.0], [1.0, 0.0, 5.0]])
    apart = render_people(bg, verts, mesh.triangles, rgb, f, pp)
    np.testing.assert_array_equal(apart.occluded_fraction, [0.0, 0.0])


def test_closed_meshes_are_wound_outward_and_culling_keeps_the_picture():
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 3))
    pts = 0.1 * pts / np.linalg.norm(pts, axis=1, keepdims=True)  # sphere, radius 10 cm: edges ~2 cm
    tris = ConvexHull(pts).simplices.astype(np.int64)
    n = np.cross(pts[tris[:, 1]] - pts[tris[:, 0]], pts[tris[:, 2]] - pts[tris[:, 0]])
    outward = (n * pts[tris].mean(axis=1)).sum(1) > 0
    inward = np.where(outward[:, None], tris[:, [0, 2, 1]], tris)  # all wound inward
    mesh = surface_triangles(pts, inward)
    assert mesh.closed
    n = np.cross(pts[mesh.triangles[:, 1]] - pts[mesh.triangles[:, 0]],
                 pts[mesh.triangles[:, 2]] - pts[mesh.triangles[:, 0]])
    assert np.all((n * pts[mesh.triangles].mean(axis=1)).sum(1) > 0)

    colours = rng.uniform(0, 255, size=(tris.shape[0], 3))
    bg = np.zeros((240, 320, 3), np.uint8)
    verts = (pts + [0.0, 0.0, 1.0])[None]
    args = (bg, verts, mesh.triangles, colours, 400.0, np.array([160.0, 120.0]))
    full, culled = render_people(*args), render_people(*args, cull_back_faces=True)
    np.testing.assert_array_equal(culled.person_map, full.person_map)
    same = np.all(culled.image == full.image, axis=2)[full.person_map >= 0]
    assert same.mean() > 0.97
    # culling with the wrong winding shows the back faces: a different picture (the test can fail)
    wrong = render_people(bg, verts, inward, colours, 400.0, np.array([160.0, 120.0]), cull_back_faces=True)
    assert np.all(wrong.image == full.image, axis=2)[full.person_map >= 0].mean() < 0.5


# --------------------------------------------------------------------------- determinism and arguments


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_different(tmp_path):
    kw = dict(splits={"train": 2, "test": 1}, persons_per_image=(1, 3), image_size=(160, 120))
    a = _files(generate_synthetic_dataset(tmp_path / "a", seed=5, **kw))
    b = _files(generate_synthetic_dataset(tmp_path / "b", seed=5, **kw))
    c = _files(generate_synthetic_dataset(tmp_path / "c", seed=6, **kw))
    assert sorted(a) == sorted(b) == sorted(c)
    expected = {"dataset.json", "annotations/train.jsonl", "annotations/test.jsonl", "images/train/00001.png"}
    assert expected <= set(a)
    assert a == b
    for name in ("annotations/train.jsonl", "annotations/test.jsonl", "images/train/00000.png",
                 "images/test/00000.png"):
        assert a[name] != c[name], name


@pytest.mark.parametrize("kwargs, message", [
    (dict(splits={}), "splits"),
    (dict(splits={"train": 0}), "positive integer"),
    (dict(splits={"a/b": 1}), "split name"),
    (dict(persons_per_image=(0, 2)), "persons_per_image"),
    (dict(persons_per_image=(3, 2)), "persons_per_image"),
    (dict(image_size=(320, -5)), "image_size"),
    (dict(seed=-1), "seed"),
])  # fmt: skip
def test_invalid_arguments_are_input_errors(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        generate_synthetic_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x" / "dataset.json").exists()


def test_smpl_from_a_weights_directory(tmp_path):
    from dpmesh_infer.errors import WeightsError
    from dpmesh_infer.stand_ins.smpl import write_synthetic_smpl_npz
    from dpmesh_infer.weights.smpl import load_smpl

    weights = tmp_path / "weights"
    write_synthetic_smpl_npz(weights, seed=1, extra_regressor=True)  # a different body than the default
    ds = Dataset(generate_synthetic_dataset(tmp_path / "ds", splits={"train": 2}, smpl=weights, seed=2))
    assert "SMPL neutral from" in ds.meta["notes"] and "J_regressor_extra" in ds.meta["notes"]
    body = load_smpl(weights)
    for rec in ds.records("train"):
        for p in rec.persons:
            s = p.smpl
            with torch.no_grad():
                params = (s.global_orient, s.body_pose, s.betas, s.transl)
                out = body(*(torch.tensor(a[None]) for a in params))
            np.testing.assert_allclose(out.joints[0].numpy(), p.joints_3d, atol=1e-5, rtol=0)
    with pytest.raises(WeightsError):
        generate_synthetic_dataset(tmp_path / "none", splits={"train": 1}, smpl=tmp_path / "missing")
