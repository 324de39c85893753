"""Training augmentation and sample builder (dpmesh_infer.train.augment / .samples).

Everything runs on small generated images and hand-built records; expectations are computed
independently (pixel markers, projections, SMPL forward passes, PoseFix's probability table).
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from dpmesh_infer.data.format import ImageAnnotation, PersonAnnotation, SMPLParams
from dpmesh_infer.errors import ConfigError
from dpmesh_infer.geometry.crops import PreprocessConfig, SquareBox, crop_affines, prepare_persons  # fmt: skip
from dpmesh_infer.geometry.joints import COCO17_NAMES, J30_NAMES, coco17_to_j30  # fmt: skip
from dpmesh_infer.train.augment import (
    ERROR_KINDS,
    AugmentConfig,
    AugmentParams,
    crop_affine,
    synthesize_detector_errors,
    synthesize_detector_errors_labelled,
    synthetic_occlusion,
    transform_joints_3d,
    transform_smpl_pose,
)  # fmt: skip
from dpmesh_infer.train.samples import make_training_sample, usable_person

W, H = 320, 240
FOCAL, Z = 300.0, 4.0
PCFG = PreprocessConfig()
NO_NOISE = AugmentConfig(occlusion_prob=0.0, posefix=False, student_drop=0.0, color_factor=0.0)
KEYS = {"img_teacher", "img_student", "joints32_teacher", "mask_teacher", "joints32_student", "mask_student",
        "target_j2d", "target_j3d", "j3d_valid", "has_j3d", "smpl_pose", "smpl_betas", "has_smpl", "pose_valid",
        "focal", "box", "img2crop", "flipped", "rot_deg"}  # fmt: skip


def mirror_index(names):
    """Independent L/R permutation: names[perm[i]] is the mirror name of names[i]."""
    out = []
    for n in names:
        m = {"L_": "R_", "R_": "L_"}.get(n[:2])
        out.append(names.index(m + n[2:]) if m else names.index(n))
    return np.array(out)


J30_MIRROR = mirror_index(J30_NAMES)
SMPL_MIRROR = np.array([0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22])


# --------------------------------------------------------------------------- scene helpers


def body_j30_camera(x_shift=0.0):
    """(30,3) planar person facing the camera at depth Z, OpenCV camera frame (person's left = +X)."""
    from dpmesh_infer.stand_ins.smpl import SYNTHETIC_REST_JOINTS

    body = np.zeros((30, 2))
    body[:24] = SYNTHETIC_REST_JOINTS[:, :2]
    body[24:] = [[0, 0.45], [0.035, 0.48], [-0.035, 0.48], [0.08, 0.45], [-0.08, 0.45], [0, 0.55]]
    cam = np.stack([body[:, 0] + x_shift, -body[:, 1] + 0.3, np.full(30, Z)], axis=1)
    return cam


def project(j3d):
    uv = FOCAL * j3d[:, :2] / j3d[:, 2:3] + np.array([W / 2, H / 2])
    return uv


def make_person(j3d, visibility=None, smpl=None, bbox=None):
    kp = np.zeros((30, 3), np.float32)
    kp[:, :2] = project(j3d)
    kp[:, 2] = 1.0 if visibility is None else visibility
    return PersonAnnotation(keypoints_2d=kp, bbox=bbox, joints_3d=j3d.astype(np.float32),
                            joints_3d_valid=np.ones(30, np.float32), smpl=smpl)


def make_record(persons):
    return ImageAnnotation(image="gen.png", width=W, height=H, persons=persons)


def noise_image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def blob_image(xy, sigma=1.5):
    """uint8 image, a white Gaussian blob centred at sub-pixel xy."""
    yy, xx = np.mgrid[0:H, 0:W]
    g = np.exp(-((xx - xy[0]) ** 2 + (yy - xy[1]) ** 2) / (2 * sigma**2))
    return np.repeat((255 * g).round().astype(np.uint8)[..., None], 3, axis=2)


def centroid(crop_chw):
    w = crop_chw[0].astype(np.float64)
    w = np.where(w > 0.02, w, 0.0)
    yy, xx = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    return np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()])


# --------------------------------------------------------------------------- config


def test_config_defaults_round_trip_and_validation():
    cfg = AugmentConfig()
    assert cfg.bbox_scale_range == (1.0, 1.2) and cfg.scale_factor == 0.25 and cfg.rot_factor == 30
    assert cfg.rot_prob == 0.6 and cfg.flip_prob == 0.5 and cfg.color_factor == 0.2
    assert cfg.student_drop == 0.2 and cfg.zero_betas_above == 3.0 and cfg.posefix
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        AugmentConfig.from_dict({"rotation": 3})
    for bad in ({"flip_prob": 1.5}, {"bbox_scale_range": (1.2, 1.0)}, {"scale_factor": 1.0},
                {"occlusion_aspect": (0.0, 2.0)}, {"occlusion_tries": 0}, {"posefix_scale": 2.0},
                {"student_drop": -0.1}, {"zero_betas_above": 0.0}):  # fmt: skip
        with pytest.raises(ConfigError):
            AugmentConfig(**bad)


def test_crop_affine_equals_test_time_affine():
    rng = np.random.default_rng(1)
    for _ in range(20):
        box = SquareBox(x=float(np.float32(rng.uniform(-50, 300))), y=float(np.float32(rng.uniform(-50, 200))),
                        size=float(np.float32(rng.uniform(5, 400))), source="keypoints")
        a, b = crop_affine(box.center, box.size, W, PCFG)
        ea, eb = crop_affines(box, PCFG)
        assert a.dtype == np.float32 and np.array_equal(a, ea) and np.array_equal(b, eb)
    # flipped + rotated: crop2img inverts img2crop
    a, b = crop_affine((100.0, 90.0), 120.0, W, PCFG, scale=1.2, rot_deg=33.0, flip=True)
    full = np.vstack([a, [0, 0, 1]]) @ np.vstack([b, [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-4)
    assert np.linalg.det(a[:, :2]) < 0


# --------------------------------------------------------------------------- train=False parity


def test_eval_sample_equals_prepare_persons():
    j3d = body_j30_camera()
    vis = np.ones(30, np.float32)
    vis[[3, 9, 24, 27]] = [0.0, 0.5, 0.0, 0.7]  # some unannotated joints, some partial visibility
    p0 = make_person(j3d, vis, bbox=np.array([90, 20, 150, 200], np.float32))
    # a person with only non-COCO joints annotated: the box comes from the bbox fallback
    vis1 = np.zeros(30, np.float32)
    vis1[[10, 11, 29]] = 1.0
    p1 = make_person(body_j30_camera(0.6), vis1, bbox=np.array([150, 30, 120, 190], np.float32))
    record, image = make_record([p0, p1]), noise_image()
    for idx, p in enumerate([p0, p1]):
        s = make_training_sample(image, record, idx, np.random.default_rng(0), AugmentConfig(), train=False)
        # independent detector view: J30 -> COCO-17 by name -> test-time mapping
        coco = p.keypoints_2d[[J30_NAMES.index(n) for n in COCO17_NAMES]]
        kp30 = coco17_to_j30(coco[None])
        persons, skipped = prepare_persons(image, kp30, PCFG, [p.bbox])
        assert not skipped
        ref = persons[0]
        assert ref.box_source == ("keypoints" if idx == 0 else "fallback")
        assert set(s) == KEYS
        assert np.array_equal(s["img_teacher"], ref.image) and np.array_equal(s["img_student"], ref.image)
        assert np.array_equal(s["joints32_teacher"], ref.joints32) and np.array_equal(s["mask_teacher"], ref.mask)
        assert np.array_equal(s["joints32_student"], ref.joints32) and np.array_equal(s["mask_student"], ref.mask)
        assert np.array_equal(s["img2crop"], ref.img2crop)
        np.testing.assert_allclose(s["box"], ref.box, rtol=1e-6)
        assert s["flipped"] == 0 and s["rot_deg"] == 0 and s["focal"] == np.float32(math.hypot(W, H))
        uv = p.keypoints_2d[:, :2] @ ref.img2crop[:, :2].T.astype(np.float64) + ref.img2crop[:, 2]
        np.testing.assert_allclose(s["target_j2d"][:, :2], uv, atol=1e-3)
        inside = (uv >= 0).all(1) & (uv < 256).all(1)
        assert np.array_equal(s["target_j2d"][:, 2] > 0, (p.keypoints_2d[:, 2] > 0) & inside)
    assert s["mask_teacher"].sum() == 0  # person 1 has no COCO joint annotated


def test_unusable_person_raises():
    p = make_person(body_j30_camera(), np.zeros(30, np.float32))
    record = make_record([p])
    assert not usable_person(p, W, H, PCFG)
    with pytest.raises(ValueError, match="no usable box"):
        make_training_sample(noise_image(), record, 0, np.random.default_rng(0), AugmentConfig())
    p.bbox = np.array([100, 50, 60, 120], np.float32)
    assert usable_person(p, W, H, PCFG)
    make_training_sample(noise_image(), record, 0, np.random.default_rng(0), AugmentConfig())


# --------------------------------------------------------------------------- flip / rotation geometry


@pytest.mark.parametrize("flip,rot", [(True, 0.0), (False, 25.0), (True, -40.0)])
def test_markers_land_on_targets(flip, rot):
    """A blob drawn at joint j's image position lands, in the augmented crop, on target_j2d of the
    mirrored index (flip) or of j itself (no flip)."""
    person = make_person(body_j30_camera())
    record = make_record([person])
    params = AugmentParams(bbox_scale=1.1, scale=1.15, rot_deg=rot, flip=flip, color_scale=(1.0, 1.0, 1.0))
    checked = 0
    for j in range(30):
        img = blob_image(person.keypoints_2d[j, :2])
        s = make_training_sample(img, record, 0, np.random.default_rng(0), NO_NOISE, params=params)
        k = J30_MIRROR[j] if flip else j
        target = s["target_j2d"][k]
        if not (target[2] > 0 and 6 < target[0] < 250 and 6 < target[1] < 250):
            continue
        np.testing.assert_allclose(centroid(s["img_teacher"]), target[:2], atol=0.1)  # measured <= 0.02
        checked += 1
    assert checked >= 28
    assert s["flipped"] == flip and s["rot_deg"] == np.float32(rot)
    if flip and rot == 0:  # L/R labels swapped: the person's (new) left hip is still on the image right
        t = s["target_j2d"]
        assert t[J30_NAMES.index("L_Hip"), 0] > t[J30_NAMES.index("R_Hip"), 0]
        assert t[J30_NAMES.index("L_Wrist"), 0] > t[J30_NAMES.index("R_Wrist"), 0]


@pytest.mark.parametrize("flip,rot", [(False, 0.0), (False, 35.0), (False, -60.0), (True, 20.0), (True, -75.0)])
def test_2d_and_3d_targets_agree(flip, rot):
    """Planar person at constant depth: crop offsets from the pelvis = k · (X, Y) offsets of target_j3d
    for one positive k (weak perspective is exact there). A wrong rotation or flip sign breaks it."""
    j3d = body_j30_camera()
    record = make_record([make_person(j3d)])
    params = AugmentParams(bbox_scale=1.1, scale=1.0, rot_deg=rot, flip=flip, color_scale=(1.0, 1.0, 1.0))
    s = make_training_sample(noise_image(), record, 0, np.random.default_rng(0), NO_NOISE, params=params)
    d2 = (s["target_j2d"][:, :2] - s["target_j2d"][0, :2]).astype(np.float64)
    d3 = s["target_j3d"][:, :2].astype(np.float64)
    k = (d2 * d3).sum() / (d3 * d3).sum()
    assert k > 0
    np.testing.assert_allclose(d2, k * d3, atol=0.01)
    expected_k = 256 / s["box"][2] * FOCAL / Z
    assert abs(k - expected_k) < 1e-3 * expected_k
    assert np.allclose(s["target_j3d"][0], 0) and s["has_j3d"] == 1 and s["j3d_valid"].all()
    np.testing.assert_allclose(np.linalg.norm(s["target_j3d"], axis=1),
                               np.linalg.norm(j3d - j3d[0], axis=1)[J30_MIRROR if flip else np.arange(30)],
                               atol=1e-5)  # a rigid motion of the root-relative skeleton (+ mirror)


# --------------------------------------------------------------------------- SMPL pose flip / rotation


@pytest.fixture(scope="module")
def smpl_body():
    from dpmesh_infer.models.body import SMPLBody
    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays

    return SMPLBody(make_synthetic_smpl_arrays())


def kinematic_joints(body, pose72):
    """(24,3) smplx kinematic joints (betas 0), root-relative, float64."""
    p = torch.from_numpy(np.asarray(pose72, np.float32))[None]
    with torch.no_grad():
        out = body.smpl(global_orient=p[:, :3], body_pose=p[:, 3:], betas=torch.zeros(1, 10))
    j = out.joints[0, :24].double().numpy()
    return j - j[0]


def test_synthetic_smpl_rest_joints_are_mirror_symmetric():
    from dpmesh_infer.stand_ins.smpl import SYNTHETIC_REST_JOINTS as rest

    # The flip test below relies on this: kinematic joints of the synthetic model are exactly symmetric.
    assert np.array_equal((rest * [-1, 1, 1])[SMPL_MIRROR], rest)


def test_smpl_pose_flip_mirrors_the_body(smpl_body):
    rng = np.random.default_rng(3)
    pose = rng.normal(0, 0.5, 72)
    flipped = transform_smpl_pose(pose, flip=True, rot_deg=0.0)
    expected = (kinematic_joints(smpl_body, pose) * [-1, 1, 1])[SMPL_MIRROR]
    # Kinematic joints: the synthetic rest joints are exactly symmetric -> float32 rounding only.
    np.testing.assert_allclose(kinematic_joints(smpl_body, flipped), expected, atol=1e-5)
    # Permuting without negating y/z is far off (the check can fail).
    wrong = pose.reshape(24, 3)[SMPL_MIRROR].reshape(72)
    assert np.abs(kinematic_joints(smpl_body, wrong) - expected).max() > 0.05
    # J30 rows of the skinned mesh: the synthetic mesh is not symmetric (random vertex rings and pose
    # correctives), measured ~5 mm, so 2 cm here; still far below the error of a wrong flip.
    def j30(p72):
        p = torch.from_numpy(np.asarray(p72, np.float32))[None]
        with torch.no_grad():
            j = smpl_body(p[:, :3], p[:, 3:], torch.zeros(1, 10)).joints[0, :24].double().numpy()
        return j - j[0]
    np.testing.assert_allclose(j30(flipped), (j30(pose) * [-1, 1, 1])[SMPL_MIRROR], atol=0.02)


@pytest.mark.parametrize("flip,rot", [(False, 40.0), (True, -25.0)])
def test_sample_smpl_pose_matches_sample_3d_joints(smpl_body, flip, rot):
    """joints_3d = kinematic joints of the GT pose in the camera frame; after augmentation the
    kinematic joints of smpl_pose equal target_j3d (the 3D and SMPL transforms agree)."""
    rng = np.random.default_rng(5)
    pose = rng.normal(0, 0.4, 72)
    pose[:3] = [math.pi, 0, 0]  # upright in the OpenCV camera frame
    j3d = np.zeros((30, 3))
    j3d[:24] = kinematic_joints(smpl_body, pose) + [0, 0.2, Z]
    j3d[24:] = j3d[15] + [0, -0.1, 0]
    smpl = SMPLParams(global_orient=pose[:3].astype(np.float32), body_pose=pose[3:].astype(np.float32),
                      betas=np.zeros(10, np.float32))
    record = make_record([make_person(j3d, smpl=smpl)])
    params = AugmentParams(bbox_scale=1.1, scale=1.0, rot_deg=rot, flip=flip, color_scale=(1.0, 1.0, 1.0))
    s = make_training_sample(noise_image(), record, 0, np.random.default_rng(0), NO_NOISE, params=params)
    assert s["has_smpl"] == 1
    np.testing.assert_allclose(kinematic_joints(smpl_body, s["smpl_pose"]), s["target_j3d"][:24], atol=1e-5)
    ref, _ = transform_joints_3d(j3d.astype(np.float32), np.ones(30), flip=flip, rot_deg=rot)
    np.testing.assert_array_equal(ref, s["target_j3d"])


def test_betas_and_pose_valid():
    smpl = SMPLParams(global_orient=np.zeros(3, np.float32), body_pose=np.zeros(69, np.float32),
                      betas=np.array([0.5, -3.5, 0, 0, 0, 0, 0, 0, 0, 0], np.float32), valid=False)
    record = make_record([make_person(body_j30_camera(), smpl=smpl)])
    s = make_training_sample(noise_image(), record, 0, np.random.default_rng(0), AugmentConfig())
    assert s["has_smpl"] == 0 and not s["smpl_betas"].any()
    assert np.flatnonzero(s["pose_valid"] == 0).tolist() == [7, 8, 10, 11, 20, 21, 22, 23]
    record.persons[0].smpl = dataclasses.replace(smpl, betas=np.full(10, 2.5, np.float32), valid=True)
    record.persons[0].joints_3d = None
    s = make_training_sample(noise_image(), record, 0, np.random.default_rng(0), AugmentConfig())
    assert s["has_smpl"] == 1 and np.all(s["smpl_betas"] == 2.5)
    assert s["has_j3d"] == 0 and not s["j3d_valid"].any()


# --------------------------------------------------------------------------- PoseFix statistics

SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10


def ks_dist(ks, area):
    return np.sqrt(-2 * area * (2 * SIGMAS) ** 2 * np.log(ks))


def spread_kp17(scale=1.0):
    """COCO-17 layout with every joint far from the others (so no sampling is rejected)."""
    xy = np.array([[0, -150], [30, -175], [-30, -175], [70, -160], [-70, -160], [60, -100], [-60, -100],
                   [110, -40], [-110, -40], [150, 20], [-150, 20], [50, 40], [-50, 40], [60, 140],
                   [-60, 140], [65, 240], [-65, 240]], float)  # fmt: skip
    kp = np.ones((17, 3))
    kp[:, :2] = xy * scale + [400, 300]
    return kp


def test_posefix_kind_frequencies_and_positions():
    kp, area = spread_kp17(), 20000.0
    n = 2000
    rng = np.random.default_rng(0)
    draws = [synthesize_detector_errors_labelled(kp, [], area, rng) for _ in range(n)]
    kinds = np.stack([d[1] for d in draws])
    out = np.stack([d[0] for d in draws])
    # PoseFix table for 17 visible joints, no overlapping person: (jitter, miss, inversion); swap 0
    table = {0: (.10, .02, 0), 1: (.15, .02, .01), 5: (.15, .05, .03), 7: (.15, .10, .03),
             11: (.20, .10, .06), 13: (.10, .10, .06), 15: (.10, .05, .06)}  # fmt: skip
    for j, (pj, pm, pi) in table.items():
        freq = np.bincount(kinds[:, j], minlength=5) / n
        expected = [1 - pj - pm - pi, pj, pm, pi, 0.0]
        np.testing.assert_allclose(freq, expected, atol=0.03, err_msg=f"joint {COCO17_NAMES[j]}")
    assert ERROR_KINDS == ("good", "jitter", "miss", "inversion", "swap")
    assert not (kinds == 4).any()
    # confidence 0 exactly for misses
    assert np.array_equal(out[..., 2] == 0, kinds == 2)
    d10, d50, d85 = ks_dist(0.10, area), ks_dist(0.50, area), ks_dist(0.85, area)
    disp = np.linalg.norm(out[..., :2] - kp[None, :, :2], axis=-1)
    tol = 1e-3
    for kind, lo, hi in ((0, 0 * d85, d85), (1, d85, d50), (2, d50, d10)):
        sel = kinds == kind
        jj = np.nonzero(sel)[1]
        assert np.all(disp[sel] >= lo[jj] - tol) and np.all(disp[sel] <= hi[jj] + tol), ERROR_KINDS[kind]
    # inversions sit within d50 of the mirror joint
    mirror = mirror_index(COCO17_NAMES)
    r, c = np.nonzero(kinds == 3)
    assert len(r) > 100
    assert np.all(np.linalg.norm(out[r, c, :2] - kp[mirror[c], :2], axis=-1) <= d50[c] + tol)


def test_posefix_jitter_scales_with_box_size():
    kp = spread_kp17()
    mean = []
    for area in (10000.0, 40000.0):
        rng = np.random.default_rng(1)
        d = []
        for _ in range(600):
            out, kinds = synthesize_detector_errors_labelled(kp, [], area, rng)
            sel = kinds == 1
            d.append(np.linalg.norm(out[sel, :2] - kp[sel, :2], axis=-1) / SIGMAS[sel])
        mean.append(np.concatenate(d).mean())
    assert abs(mean[1] / mean[0] - 2.0) < 0.1  # radii ∝ sqrt(area)


def test_posefix_swap_needs_an_overlapping_person():
    kp = spread_kp17(0.5)
    kp[[0, 1, 2, 3, 4, 15, 16], 2] = 0  # 10 visible joints: PoseFix's "crowded" swap probabilities
    area = 150.0 * 200.0
    near = kp.copy()
    near[:, 0] += 60
    near[:, 2] = 1
    far = near.copy()
    far[:, 0] += 5000
    rng = np.random.default_rng(2)
    kinds_far = np.stack([synthesize_detector_errors_labelled(kp, [far], area, rng)[1] for _ in range(300)])
    assert not (kinds_far == 4).any()
    assert np.all(kinds_far[:, [0, 1, 2, 3, 4, 15, 16]] == -1)  # unannotated joints untouched
    draws = [synthesize_detector_errors_labelled(kp, [near], area, rng) for _ in range(1500)]
    kinds = np.stack([d[1] for d in draws])
    out = np.stack([d[0] for d in draws])
    upper = (kinds[:, 5:11] == 4).mean()
    lower = (kinds[:, 11:15] == 4).mean()
    assert abs(upper - 0.15) < 0.03 and abs(lower - 0.10) < 0.03
    d50 = ks_dist(0.5, area)
    mirror = mirror_index(COCO17_NAMES)
    r, c = np.nonzero(kinds == 4)
    to_j = np.linalg.norm(out[r, c, :2] - near[c, :2], axis=-1)
    to_mirror = np.linalg.norm(out[r, c, :2] - near[mirror[c], :2], axis=-1)
    assert np.all(np.minimum(to_j, to_mirror) <= d50[c] + 1e-3)
    # the plain function returns the same points
    a = synthesize_detector_errors(kp, [near], area, np.random.default_rng(9))
    b = synthesize_detector_errors_labelled(kp, [near], area, np.random.default_rng(9))[0]
    assert np.array_equal(a, b) and a.shape == (17, 3) and a.dtype == np.float32


# --------------------------------------------------------------------------- occlusion / colour / determinism


def test_synthetic_occlusion_rectangle():
    cfg = AugmentConfig()
    crop = np.random.default_rng(0).random((256, 256, 3), dtype=np.float32)
    before = crop.copy()
    box = (40.0, 30.0, 150.0, 180.0)
    drawn = 0
    for seed in range(200):
        out, rect = synthetic_occlusion(crop, np.random.default_rng(seed), cfg, box)
        assert np.array_equal(crop, before)
        if rect is None:
            assert out is crop
            continue
        drawn += 1
        x, y, w, h = rect
        assert x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256 and w > 0 and h > 0
        assert w * h <= 0.3 * box[2] * box[3]
        assert box[0] - 1 <= x <= box[0] + box[2] and box[1] - 1 <= y <= box[1] + box[3]
        changed = (out != crop).any(-1)
        inside = np.zeros((256, 256), bool)
        inside[y:y + h, x:x + w] = True
        assert np.array_equal(changed, inside)
        assert out.min() >= 0 and out.max() < 1
    assert drawn > 150


@pytest.mark.parametrize("scale", [0.8, 1.2])
def test_sample_occlusion_only_on_student(scale):
    record = make_record([make_person(body_j30_camera())])
    cfg = dataclasses.replace(NO_NOISE, occlusion_prob=1.0)
    params = AugmentParams(bbox_scale=1.1, scale=scale, rot_deg=10.0, flip=False, color_scale=(1.0, 1.0, 1.0))
    box_side = 256 / scale  # the square person box (before the extra scale) in crop px
    seen = 0
    for seed in range(8):
        s = make_training_sample(noise_image(), record, 0, np.random.default_rng(seed), cfg, params=params)
        diff = (s["img_student"] != s["img_teacher"]).any(0)
        if not diff.any():
            continue
        seen += 1
        ys, xs = np.nonzero(diff)
        rect = np.zeros_like(diff)
        rect[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
        assert np.array_equal(diff, rect)  # exactly one axis-aligned rectangle, inside the crop
        assert diff.sum() <= 0.3 * box_side**2
        assert s["img_student"].min() >= 0 and s["img_student"].max() <= 1
    assert seen >= 5
    s = make_training_sample(noise_image(), record, 0, np.random.default_rng(0), NO_NOISE, params=params)
    assert np.array_equal(s["img_student"], s["img_teacher"])


def test_color_scale_keeps_unit_range():
    image = np.full((H, W, 3), 250, np.uint8)
    record = make_record([make_person(body_j30_camera())])
    params = AugmentParams(bbox_scale=1.1, scale=1.0, rot_deg=0.0, flip=False, color_scale=(1.2, 0.9, 1.0))
    s = make_training_sample(image, record, 0, np.random.default_rng(0), NO_NOISE, params=params)
    centre = s["img_teacher"][:, 128, 128]
    np.testing.assert_allclose(centre, [1.0, 250 * 0.9 / 255, 250 / 255], rtol=1e-6)
    cfg = dataclasses.replace(AugmentConfig(), color_factor=0.9)
    for seed in range(5):
        s = make_training_sample(image, record, 0, np.random.default_rng(seed), cfg)
        for key in ("img_teacher", "img_student"):
            assert s[key].dtype == np.float32 and s[key].min() >= 0 and s[key].max() <= 1


def test_determinism_shapes_and_student_inputs():
    persons = [make_person(body_j30_camera()), make_person(body_j30_camera(0.25))]
    record, image = make_record(persons), noise_image()
    cfg = AugmentConfig(flip_prob=0.5, rot_prob=1.0, occlusion_prob=1.0)
    a = make_training_sample(image, record, 0, np.random.default_rng(7), cfg)
    b = make_training_sample(image, record, 0, np.random.default_rng(7), cfg)
    c = make_training_sample(image, record, 0, np.random.default_rng(8), cfg)
    assert set(a) == KEYS
    for k in KEYS:
        assert np.array_equal(a[k], b[k]), k
    assert any(not np.array_equal(a[k], c[k]) for k in KEYS)
    shapes = {"img_teacher": (3, 256, 256), "img_student": (3, 256, 256), "joints32_teacher": (30, 2),
              "mask_teacher": (30,), "joints32_student": (30, 2), "mask_student": (30,), "target_j2d": (30, 3),
              "target_j3d": (30, 3), "j3d_valid": (30,), "has_j3d": (), "smpl_pose": (72,), "smpl_betas": (10,),
              "has_smpl": (), "pose_valid": (24,), "focal": (), "box": (3,), "img2crop": (2, 3), "flipped": (),
              "rot_deg": ()}  # fmt: skip
    for k, shape in shapes.items():
        assert isinstance(a[k], np.ndarray) and a[k].shape == shape, k
        assert a[k].dtype == (np.bool_ if k.startswith("mask") else np.float32), k
    # student drop alone (no PoseFix): the student mask is a subset of the teacher's, about half dropped
    cfg = dataclasses.replace(NO_NOISE, student_drop=0.5)
    kept, total = 0, 0
    for seed in range(20):
        s = make_training_sample(image, record, 0, np.random.default_rng(seed), cfg)
        assert np.array_equal(s["joints32_student"], s["joints32_teacher"])
        assert not (s["mask_student"] & ~s["mask_teacher"]).any()
        kept, total = kept + s["mask_student"].sum(), total + s["mask_teacher"].sum()
    assert 0.35 < kept / total < 0.65
    # PoseFix on: student joints differ from the teacher's, teacher joints are exact GT
    cfg = dataclasses.replace(NO_NOISE, posefix=True, posefix_scale=1.4)
    params = AugmentParams(bbox_scale=1.1, scale=1.0, rot_deg=0.0, flip=False, color_scale=(1.0, 1.0, 1.0))
    s = make_training_sample(image, record, 0, np.random.default_rng(3), cfg, params=params)
    assert not np.allclose(s["joints32_student"], s["joints32_teacher"])
    assert s["mask_teacher"].sum() == 19  # 17 COCO joints + Pelvis + Neck


def test_box_includes_the_head_top_when_there_are_no_face_keypoints():
    """CrowdPose-style labels (limbs, neck, head top; no face): the crop must not end at the neck."""
    j3d = body_j30_camera()
    vis = np.zeros(30, np.float32)
    crowdpose = ["L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist", "L_Hip", "R_Hip",
                 "L_Knee", "R_Knee", "L_Ankle", "R_Ankle", "Head_top", "Neck"]
    vis[[J30_NAMES.index(n) for n in crowdpose]] = 1.0
    person = make_person(j3d, vis)
    s = make_training_sample(noise_image(), make_record([person]), 0, np.random.default_rng(0), AugmentConfig(),
                             train=False)
    top = s["target_j2d"][J30_NAMES.index("Head_top")]
    assert top[2] == 1 and top[1] > 5, top  # inside the crop, with a margin
    # the network inputs are unchanged: the head top is not an input joint (COCO detector view)
    assert not s["mask_teacher"][J30_NAMES.index("Head_top")]
    # with face keypoints present the test-time box is kept as is (parity with prepare_persons)
    vis_face = vis.copy()
    vis_face[J30_NAMES.index("Nose")] = 1.0
    s2 = make_training_sample(noise_image(), make_record([make_person(j3d, vis_face)]), 0,
                              np.random.default_rng(0), AugmentConfig(), train=False)
    coco = make_person(j3d, vis_face).keypoints_2d[[J30_NAMES.index(n) for n in COCO17_NAMES]]
    ref = prepare_persons(noise_image(), coco17_to_j30(coco[None]), PCFG)[0][0]
    np.testing.assert_allclose(s2["box"], ref.box, rtol=1e-6)
