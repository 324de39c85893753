"""End-to-end Pipeline behaviour on tiny random-init weights loaded from the real on-disk format."""

import shutil

import numpy as np
import pytest
import torch

from dpmesh_infer import Pipeline
from dpmesh_infer.errors import InputError, WeightsError
from dpmesh_infer.geometry.joints import coco17_to_j30


def test_outputs_shapes_and_camera(tiny_pipeline, scene):
    image, kp = scene
    out = tiny_pipeline(image, keypoints=kp)
    assert len(out) == 1 and out.num_persons == 2
    res = out[0]
    assert res.image_size == (640, 480)
    f = np.sqrt(640**2 + 480**2)
    np.testing.assert_allclose(res.K, [[f, 0, 320], [0, f, 240], [0, 0, 1]], rtol=1e-6)
    for p, k in zip(res.persons, kp):
        assert p.vertices.shape == (6890, 3) and p.joints.shape == (30, 3)
        assert p.global_orient.shape == (3,) and p.body_pose.shape == (23, 3) and p.betas.shape == (10,)
        assert p.transl.shape == (3,) and p.joints_2d.shape == (30, 2) and p.bbox.shape == (4,)
        np.testing.assert_allclose(p.keypoints_2d, coco17_to_j30(k[None])[0], rtol=1e-6)
        # joints_2d is the pinhole projection of joints through K
        proj = (res.K @ p.joints.T).T
        np.testing.assert_allclose(p.joints_2d, proj[:, :2] / proj[:, 2:], rtol=1e-4, atol=1e-2)
        assert np.all(p.vertices[:, 2] > 0)  # in front of the camera
    assert out.faces.shape == (13776, 3)


def test_root_lands_where_the_crop_camera_put_it(tiny_pipeline, scene):
    """The pelvis reprojects through K exactly onto its crop-camera projection mapped by the crop affine."""
    from dpmesh_infer.geometry.crops import PreprocessConfig, prepare_persons

    image, kp = scene
    persons, _ = prepare_persons(image, coco17_to_j30(kp), PreprocessConfig())
    w, h = 640, 480
    f = np.sqrt(w * w + h * h)
    raw = tiny_pipeline.forward_persons(persons, focal=torch.full((2,), f),
                                        principal=torch.tensor([[320.0, 240.0]] * 2))
    res = tiny_pipeline(image, keypoints=kp)[0]
    for j, p in enumerate(res.persons):
        offset = raw["transl"][j] - raw["transl_crop"][j]  # host arrays (one device-to-host copy per batch)
        root_crop = p.joints[0] - offset
        uv_crop = root_crop[:2] / (root_crop[2] + 1e-4) * f + 128.0
        uv_img = persons[j].crop2img.astype(np.float64) @ np.array([uv_crop[0], uv_crop[1], 1.0])
        np.testing.assert_allclose(p.joints_2d[0], uv_img, atol=0.05)


def test_transl_reproduces_vertices_with_smpl(tiny_pipeline, scene):
    image, kp = scene
    p = tiny_pipeline(image, keypoints=kp)[0].persons[1]
    t = lambda a: torch.as_tensor(a)[None].float()  # noqa: E731
    body = tiny_pipeline.body(t(p.global_orient), t(p.body_pose), t(p.betas), t(p.transl))
    np.testing.assert_allclose(body.vertices[0].numpy(), p.vertices, atol=2e-5)


def test_batching_across_images_does_not_change_results(tiny_pipeline, scene):
    image, kp = scene
    image2 = np.ascontiguousarray(image[:, ::-1])
    kp2 = kp.copy()
    kp2[..., 0] = 639 - kp2[..., 0]
    together = tiny_pipeline([image, image2], keypoints=[kp, kp2], batch_size=8)
    one_by_one = tiny_pipeline([image, image2], keypoints=[kp, kp2], batch_size=1)
    assert together.num_persons == 4
    for a, b in zip(together, one_by_one):
        for pa, pb in zip(a.persons, b.persons):
            np.testing.assert_allclose(pa.vertices, pb.vertices, atol=1e-4)


def test_keypoint_formats_and_bad_inputs(tiny_pipeline, scene):
    image, kp = scene
    j30 = coco17_to_j30(kp)
    a = tiny_pipeline(image, keypoints=kp)[0].persons[0]
    b = tiny_pipeline(image, keypoints=j30)[0].persons[0]
    np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-5)
    with pytest.raises(InputError, match="J = 17"):
        tiny_pipeline(image, keypoints=np.zeros((1, 16, 3)))
    bad = kp.copy()
    bad[0, 3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        tiny_pipeline(image, keypoints=bad)
    with pytest.raises(InputError, match="2 images but keypoints for 1"):
        tiny_pipeline([image, image], keypoints=[kp])


def test_person_without_keypoints_is_skipped_with_reason(tiny_pipeline, scene):
    image, kp = scene
    kp = kp.copy()
    kp[1, :, 2] = 0.0  # nobody confident, no fallback box
    res = tiny_pipeline(image, keypoints=kp)[0]
    assert len(res.persons) == 1
    assert res.skipped and res.skipped[0][0] == 1 and "confidence" in res.skipped[0][1]


def test_focal_override_keeps_root_consistent(tiny_pipeline, scene):
    image, kp = scene
    base = tiny_pipeline(image, keypoints=kp)[0]
    wide = tiny_pipeline(image, keypoints=kp, focal=500.0)[0]
    assert wide.K[0, 0] == 500.0
    # the pelvis projects to the same pixel whatever the output focal
    np.testing.assert_allclose(wide.persons[0].joints_2d[0], base.persons[0].joints_2d[0], atol=0.05)
    assert wide.persons[0].joints[0, 2] < base.persons[0].joints[0, 2]


def test_missing_weights_message_lists_files_and_fixes(tiny_weights, tmp_path):
    with pytest.raises(WeightsError) as e:
        Pipeline.from_pretrained(tmp_path / "nope")
    assert "does not exist" in str(e.value) and "convert-official" in str(e.value)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_weights, partial)
    (partial / "smpl" / "SMPL_NEUTRAL.npz").unlink()
    (partial / "regressor" / "model.safetensors").unlink()
    with pytest.raises(WeightsError) as e:
        Pipeline.from_pretrained(partial)
    msg = str(e.value)
    assert "smpl/SMPL_NEUTRAL.npz" in msg and "regressor/model.safetensors" in msg
    assert "dpmesh weights import-smpl" in msg and "dpmesh weights convert-official" in msg


def test_weights_found_through_environment(tiny_weights, monkeypatch, scene):
    monkeypatch.setenv("DPMESH_WEIGHTS", str(tiny_weights))
    pipe = Pipeline.from_pretrained()
    assert pipe.config.untrained


def test_fp16_rejected_on_cpu(tiny_weights):
    with pytest.raises(InputError, match="CUDA"):
        Pipeline.from_pretrained(tiny_weights, device="cpu", dtype="fp16")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_matches_cpu_fp32(tiny_weights, scene):
    image, kp = scene
    ref = Pipeline.from_pretrained(tiny_weights, device="cpu")(image, keypoints=kp)[0]
    gpu = Pipeline.from_pretrained(tiny_weights, device="cuda", dtype="fp16")
    assert next(gpu.backbone.parameters()).dtype == torch.float16
    res = gpu(image, keypoints=kp)[0]
    for a, b in zip(ref.persons, res.persons):
        scale = np.abs(a.vertices).max()
        assert np.abs(a.vertices - b.vertices).max() / scale < 5e-2


def test_keypoints_far_outside_the_image_count_as_missing(tiny_pipeline, scene, caplog):
    image, kp = scene
    kp = kp.copy()
    kp[0, 9] = [5000.0, 100.0, 0.9]  # left wrist far right of a 640-px photo
    caplog.set_level("WARNING")  # another test of this worker may have set the root logger to ERROR (--quiet)
    res = tiny_pipeline(image, keypoints=kp)[0]
    assert np.all(res.persons[0].keypoints_2d[20] == 0)  # 30-set L_Wrist slot
    assert "outside" in caplog.text
