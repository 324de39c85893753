"""Preprocessing: joint mapping, boxes, crop affine, crop, joint grid, mask, heatmaps, batching."""

import numpy as np
import pytest
import torch

from dpmesh_infer.errors import ConfigError
from dpmesh_infer.geometry.crops import (
    PreprocessConfig,
    Skip,
    SquareBox,
    box_from_keypoints,
    collate,
    crop_affines,
    crop_image,
    crop_to_image_points,
    joint_inputs,
    make_heatmaps,
    prepare_persons,
)
from dpmesh_infer.geometry.joints import GRAPH_JOINTS, J30_NAMES, coco17_to_j30, openpose18_to_j30, openpose25_to_j30

CFG = PreprocessConfig()
UNFILLED = [3, 6, 9, 10, 11, 13, 14, 15, 22, 23, 29]


def test_config_defaults_round_trip_and_validation():
    assert CFG.to_dict() == {"input_size": 256, "heatmap_size": 32, "conf_thr": 0.05, "heatmap_sigma": 2.5,
                             "bbox_expand": 1.2, "bbox_square_scale": 1.1}
    assert PreprocessConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ConfigError, match="multiple of heatmap_size"):
        PreprocessConfig(input_size=250)
    with pytest.raises(ConfigError, match="unknown keys"):
        PreprocessConfig.from_dict({"sigma": 2})


def test_graph_joints_names():
    assert [J30_NAMES[i] for i in GRAPH_JOINTS] == [
        "Pelvis", "L_Hip", "R_Hip", "L_Knee", "R_Knee", "L_Ankle", "R_Ankle", "Neck", "Head_top",
        "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist"]  # fmt: skip


def _random_kp(n, j, dtype, seed=0):
    rng = np.random.default_rng(seed)
    kp = rng.uniform(0, 500, (n, j, 3)).astype(dtype)
    kp[..., 2] = rng.uniform(0, 1, (n, j))
    return kp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_coco17_mapping(dtype):
    kp = _random_kp(2, 17, dtype)
    out = coco17_to_j30(kp)
    assert out.shape == (2, 30, 3) and out.dtype == dtype
    expected = {0: 24, 1: 25, 2: 26, 3: 27, 4: 28, 5: 16, 6: 17, 7: 18, 8: 19, 9: 20, 10: 21,
                11: 1, 12: 2, 13: 4, 14: 5, 15: 7, 16: 8}  # fmt: skip
    for src, dst in expected.items():
        np.testing.assert_array_equal(out[:, dst], kp[:, src])
    np.testing.assert_allclose(out[:, 0, :2], (kp[:, 11, :2] + kp[:, 12, :2]) / 2, rtol=1e-6)  # pelvis
    np.testing.assert_allclose(out[:, 0, 2], kp[:, 11, 2] * kp[:, 12, 2], rtol=1e-6)
    np.testing.assert_allclose(out[:, 12, :2], (kp[:, 5, :2] + kp[:, 6, :2]) / 2, rtol=1e-6)  # neck
    np.testing.assert_allclose(out[:, 12, 2], kp[:, 5, 2] * kp[:, 6, 2], rtol=1e-6)
    assert (out[:, UNFILLED] == 0).all()


def test_openpose18_mapping():
    kp = _random_kp(3, 18, np.float64)
    out = openpose18_to_j30(kp)
    expected = {0: 24, 1: 12, 2: 17, 3: 19, 4: 21, 5: 16, 6: 18, 7: 20, 8: 2, 9: 5, 10: 8, 11: 1, 12: 4,
                13: 7, 14: 26, 15: 25, 16: 28, 17: 27}  # fmt: skip
    for src, dst in expected.items():
        np.testing.assert_array_equal(out[:, dst], kp[:, src])
    np.testing.assert_allclose(out[:, 0, :2], (kp[:, 8, :2] + kp[:, 11, :2]) / 2)
    np.testing.assert_allclose(out[:, 0, 2], kp[:, 8, 2] * kp[:, 11, 2])
    assert (out[:, UNFILLED] == 0).all()


def test_openpose25_mapping_ignores_midhip_and_feet():
    kp = _random_kp(2, 25, np.float32)
    out = openpose25_to_j30(kp)
    assert out.dtype == np.float32
    expected = {0: 24, 1: 12, 2: 17, 3: 19, 4: 21, 5: 16, 6: 18, 7: 20, 9: 2, 10: 5, 11: 8, 12: 1, 13: 4,
                14: 7, 15: 26, 16: 25, 17: 28, 18: 27}  # fmt: skip
    for src, dst in expected.items():
        np.testing.assert_array_equal(out[:, dst], kp[:, src])
    np.testing.assert_allclose(out[:, 0, :2], (kp[:, 9, :2] + kp[:, 12, :2]) / 2, rtol=1e-6)  # not MidHip
    assert (out[:, UNFILLED] == 0).all()
    subset18 = kp[:, [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]]
    np.testing.assert_array_equal(out, openpose18_to_j30(subset18))


def test_pelvis_with_one_missing_hip_is_midpoint_to_origin_with_zero_conf():
    kp = np.zeros((1, 17, 3))
    kp[0, 11] = [100, 200, 0.9]  # L_Hip only
    out = coco17_to_j30(kp)
    np.testing.assert_array_equal(out[0, 0], [50, 100, 0])


def test_mapping_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(N, 17, 3\)"):
        coco17_to_j30(np.zeros((2, 18, 3)))


def _kp30(points, conf=0.9):
    kp = np.zeros((30, 3))
    for j, (x, y) in enumerate(points):
        kp[j] = [x, y, conf]
    return kp


def test_box_hand_computed_example():
    # valid joints span x 100..200, y 50..250; a joint at conf == thr is not valid
    kp = _kp30([(100, 50), (200, 250), (150, 100)])
    kp[5] = [1000, 1000, 0.05]
    box = box_from_keypoints(kp, 640, 480, CFG)
    # tight x1.2: (90, 30, 120, 240); clip: x2 = 90+119, y2 = 30+239 -> (90, 30, 119, 239)
    # square: centre (149.5, 149.5), side 239 -> x1.1 = 262.9, top-left 149.5 - 131.45 = 18.05
    assert isinstance(box, SquareBox) and box.source == "keypoints"
    assert box.size == pytest.approx(262.9, abs=1e-4) and box.x == pytest.approx(18.05, abs=1e-4)
    assert box.y == pytest.approx(18.05, abs=1e-4)
    assert box.center == pytest.approx((149.5, 149.5), abs=1e-4)
    np.testing.assert_allclose(box.xywh(), [18.05, 18.05, 262.9, 262.9], atol=1e-4)


def test_box_clipping_at_image_borders():
    # x 100..199 -> (90.1, w 118.8) -> x2 = min(199, 90.1+117.8) = 199 -> w 108.9
    # y 0..50 -> (-5, h 60) -> y1 = 0, y2 = 59 -> h 59; square 108.9 about (144.55, 29.5), x1.1 = 119.79
    kp = _kp30([(100, 0), (199, 50)])
    box = box_from_keypoints(kp, 200, 200, CFG)
    assert box.size == pytest.approx(119.79, abs=1e-3)
    assert box.center == pytest.approx((144.55, 29.5), abs=1e-3)
    assert (box.x, box.y) == pytest.approx((84.655, -30.395), abs=1e-3)


def test_box_fallback_and_skip_reasons():
    none_valid = np.zeros((30, 3))
    skip = box_from_keypoints(none_valid, 100, 100, CFG)
    assert isinstance(skip, Skip)
    assert skip.reason == "no keypoint above confidence threshold 0.05 and no person box was given"
    # fallback (10, 20, 30, 60): clip -> (10, 20, 29, 59); centre (24.5, 49.5); side 59 x 1.1 = 64.9
    box = box_from_keypoints(none_valid, 100, 100, CFG, fallback_box_xywh=np.array([10, 20, 30, 60]))
    assert box.source == "fallback"
    assert (box.x, box.y, box.size) == pytest.approx((-7.95, 17.05, 64.9), abs=1e-4)
    single = _kp30([(40, 40)])  # one valid joint: zero-size box
    skip = box_from_keypoints(single, 100, 100, CFG)
    assert "keypoint box is degenerate" in skip.reason and "no person box" in skip.reason
    assert box_from_keypoints(single, 100, 100, CFG, np.array([10, 20, 30, 60])).source == "fallback"
    outside = _kp30([(300, 10), (350, 60)])
    assert "outside the 100x100 image" in box_from_keypoints(outside, 100, 100, CFG).reason
    skip = box_from_keypoints(none_valid, 100, 100, CFG, fallback_box_xywh=np.array([10, 20, 0.5, 0.5]))
    assert "person box is unusable: box is degenerate" in skip.reason


def test_crop_affines():
    box = SquareBox(x=18.05, y=-7.5, size=262.9, source="keypoints")
    img2crop, crop2img = crop_affines(box, CFG)
    assert img2crop.dtype == np.float32 and crop2img.dtype == np.float32
    k = 256 / 262.9
    cx, cy = box.center
    expected = np.array([[k, 0, 128 - k * cx], [0, k, 128 - k * cy]])
    np.testing.assert_allclose(img2crop, expected, atol=1e-4)
    np.testing.assert_allclose(crop2img @ np.array([128, 128, 1.0]), [cx, cy], atol=1e-3)
    corner = np.array([box.x + box.size, box.y + box.size, 1.0])
    np.testing.assert_allclose(img2crop @ corner, [256, 256], atol=1e-3)
    full = np.vstack([img2crop, [0, 0, 1]]) @ np.vstack([crop2img, [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-5)


def _bilinear_reference(image, img2crop, size):
    """Independent warp: each crop pixel (integer coords) is mapped back with the inverse affine and
    sampled bilinearly, neighbours outside the image count as 0."""
    inv = np.linalg.inv(np.vstack([img2crop.astype(np.float64), [0, 0, 1]]))
    h, w = image.shape[:2]
    out = np.zeros((size, size, 3))
    for r in range(size):
        for c in range(size):
            sx, sy = inv[0] @ [c, r, 1], inv[1] @ [c, r, 1]
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            fx, fy = sx - x0, sy - y0
            for yy, wy in ((y0, 1 - fy), (y0 + 1, fy)):
                for xx, wx in ((x0, 1 - fx), (x0 + 1, fx)):
                    if 0 <= xx < w and 0 <= yy < h:
                        out[r, c] += wx * wy * image[yy, xx]
    return out.transpose(2, 0, 1) / 255.0


def test_crop_matches_independent_bilinear():
    # OpenCV 4.x quantizes sub-pixel positions to 1/32 px (INTER_BITS=5): position error <= 1/64 px per
    # axis, so a bilinear value can differ by at most (1/64 + 1/64) * (max neighbour difference <= 1) =
    # 1/32 on [0,1] images; the mean error stays far below 1/128. A half-pixel shift would give ~0.1 mean.
    cfg = PreprocessConfig(input_size=48, heatmap_size=6)  # small crop keeps the python reference fast
    rng = np.random.default_rng(3)
    for trial in range(6):
        h, w = (int(v) for v in rng.integers(20, 90, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        side = rng.uniform(5, 1.5 * max(h, w))
        box = SquareBox(x=rng.uniform(-side / 2, w - side / 2), y=rng.uniform(-side / 2, h - side / 2),
                        size=side, source="keypoints")
        img2crop, _ = crop_affines(box, cfg)
        got = crop_image(image, img2crop, cfg)
        assert got.shape == (3, 48, 48) and got.dtype == np.float32
        assert 0 <= got.min() and got.max() <= 1
        err = np.abs(got - _bilinear_reference(image.astype(np.float64), img2crop, 48))
        assert err.max() <= 1 / 32 + 1e-4, (trial, err.max())
        assert err.mean() <= 1 / 128, (trial, err.mean())


def test_joint_inputs_values_and_missing_joints_at_image_origin():
    rng = np.random.default_rng(5)
    kp = np.zeros((2, 30, 3))
    kp[:, :10, :2] = rng.uniform(0, 300, (2, 10, 2))
    kp[:, :10, 2] = 0.9
    affines = np.stack([crop_affines(SquareBox(10.0, 20.0, 280.0, "keypoints"), CFG)[0],
                        crop_affines(SquareBox(-50.0, 5.0, 400.0, "keypoints"), CFG)[0]])
    joints32, mask = joint_inputs(kp, affines, CFG)
    assert joints32.shape == (2, 30, 2) and joints32.dtype == np.float32 and mask.dtype == bool
    for b in range(2):
        a = affines[b].astype(np.float64)
        for j in range(30):
            expected = (a[:, :2] @ kp[b, j, :2] + a[:, 2]) / 8
            np.testing.assert_allclose(joints32[b, j], expected, atol=1e-4)
        origin = a[:, 2] / 8  # where image (0, 0) lands in the grid
        np.testing.assert_allclose(joints32[b, 10:], np.broadcast_to(origin, (20, 2)), atol=1e-5)
    assert not mask[:, 10:].any()


def test_mask_border_cases():
    identity8 = np.array([[[8.0, 0, 0], [0, 8.0, 0]]], dtype=np.float32)  # grid u == image x
    cases = [((31.99, 5), 0.9, True), ((32.0, 5), 0.9, False), ((-0.01, 5), 0.9, False), ((0.0, 0.0), 0.9, True),
             ((5, 31.99), 0.9, True), ((5, 32.0), 0.9, False), ((5, -0.01), 0.9, False),
             ((5, 5), 0.05, False), ((5, 5), 0.0501, True)]  # fmt: skip
    kp = np.zeros((1, 30, 3))
    for j, ((x, y), conf, _) in enumerate(cases):
        kp[0, j] = [x, y, conf]
    joints32, mask = joint_inputs(kp, identity8, CFG)
    assert mask[0, : len(cases)].tolist() == [c[2] for c in cases]
    np.testing.assert_allclose(joints32[0, 0], [31.99, 5], atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_heatmaps_match_direct_loop(dtype):
    rng = np.random.default_rng(7)
    joints = rng.uniform(-3, 35, (2, 30, 2))
    joints[0, 0] = [4, 9]  # integer position: peak exactly 1 at (row 9, col 4)
    mask = rng.uniform(size=(2, 30)) > 0.3
    mask[0, 0] = True
    hm = make_heatmaps(torch.tensor(joints, dtype=dtype), torch.tensor(mask), size=32, sigma=2.5)
    assert hm.shape == (2, 30, 32, 32) and hm.dtype == dtype
    expected = np.zeros((2, 30, 32, 32))
    for b in range(2):
        for j in range(30):
            u, v = joints[b, j]
            for r in range(32):
                for c in range(32):
                    expected[b, j, r, c] = np.exp(-((c - u) ** 2 + (r - v) ** 2) / (2 * 2.5**2)) * mask[b, j]
    np.testing.assert_allclose(hm.double().numpy(), expected, atol=1e-6)
    assert hm[0, 0, 9, 4] == 1 and hm[0, 0].argmax() == 9 * 32 + 4


def test_prepare_persons_collate_and_back_to_image():
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    kp = np.zeros((3, 30, 3))
    kp[0, [0, 1, 2, 16, 17, 24], :2] = rng.uniform(100, 250, (6, 2))
    kp[0, [0, 1, 2, 16, 17, 24], 2] = 0.8
    boxes = [None, None, np.array([50.0, 60.0, 80.0, 160.0])]  # person 1: nothing; person 2: box only
    persons, skipped = prepare_persons(image, kp, CFG, fallback_boxes=boxes, image_index=4)
    assert [p.person_index for p in persons] == [0, 2]
    assert [p.box_source for p in persons] == ["keypoints", "fallback"]
    assert skipped == [(1, "no keypoint above confidence threshold 0.05 and no person box was given")]
    p = persons[0]
    assert p.image.shape == (3, 256, 256) and p.image_size == (400, 300) and p.image_index == 4
    np.testing.assert_array_equal(p.image, crop_image(image, p.img2crop, CFG))
    np.testing.assert_allclose(p.crop2img @ [128, 128, 1], p.box[:2], atol=1e-3)
    batch = collate(persons).to("cpu")
    assert len(batch) == 2 and batch.images.shape == (2, 3, 256, 256) and batch.images.dtype == torch.float32
    assert batch.mask.dtype == torch.bool and batch.joints32.shape == (2, 30, 2) and batch.box.shape == (2, 3)
    assert batch.image_size.tolist() == [[400, 300], [400, 300]] and batch.person_index.tolist() == [0, 2]
    # valid joints: grid -> crop px -> image px gives the input keypoints back (numpy and torch)
    back_np = crop_to_image_points(p.joints32[None].astype(np.float64) * 8, p.crop2img[None])
    back_t = crop_to_image_points(batch.joints32 * 8, batch.crop2img)
    valid = p.mask
    np.testing.assert_allclose(back_np[0][valid], kp[0][valid, :2], atol=2e-3)
    np.testing.assert_allclose(back_t[0].numpy()[valid], kp[0][valid, :2], atol=2e-3)
    with pytest.raises(ValueError, match="uint8 RGB"):
        prepare_persons(image.astype(np.float32), kp, CFG)
