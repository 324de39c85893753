"""The one composed network (models.dpmesh.DPMesh) and the Pipeline around it: component injection,
consistency checks, save_pretrained round trip, .to(), options passed (focal choice, max_pixels,
sources), and the results' stacking and exports by value."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from dpmesh_infer import ImageResult, Pipeline, PipelineConfig
from dpmesh_infer.errors import ConfigError, ImageError, WeightsError
from dpmesh_infer.focal import DEFAULT_SOURCE, FocalChoice
from dpmesh_infer.models.dpmesh import DPMesh, DPMeshOutput
from dpmesh_infer.outputs import PERSON_ARRAYS


def _components(pipe):
    return dict(backbone=pipe.backbone, regressor=pipe.regressor, pose_decoder=pipe.pose_decoder, body=pipe.body)


def test_pipeline_from_injected_components_equals_from_pretrained(tiny_pipeline, scene):
    image, kp = scene
    direct = Pipeline(config=tiny_pipeline.config, **_components(tiny_pipeline))
    assert isinstance(direct.model, DPMesh) and direct.model.backbone is tiny_pipeline.backbone
    a, b = direct(image, keypoints=kp)[0], tiny_pipeline(image, keypoints=kp)[0]
    for pa, pb in zip(a.persons, b.persons):
        np.testing.assert_array_equal(pa.vertices, pb.vertices)


def test_dpmesh_output_is_a_dataclass_with_documented_shapes(tiny_pipeline):
    g = torch.Generator().manual_seed(0)
    model = tiny_pipeline.model
    with torch.no_grad():
        out = model(torch.rand(3, 3, 256, 256, generator=g), torch.rand(3, 30, 2, generator=g) * 32,
                    torch.rand(3, 30, generator=g) > 0.2, torch.tensor([800.0, 900.0, 1000.0]))
    assert isinstance(out, DPMeshOutput)
    shapes = {f.name: tuple(getattr(out, f.name).shape) for f in dataclasses.fields(out)}
    assert shapes == {"features": (3, 128, 8, 8), "joint_img": (3, 15, 3), "global_orient": (3, 3),
                      "body_pose": (3, 23, 3), "betas": (3, 10), "cam": (3, 3), "transl": (3, 3),
                      "vertices": (3, 6890, 3), "joints": (3, 30, 3), "joints_proj": (3, 30, 2),
                      "pose_head": (3, 32)}
    torch.testing.assert_close(out.root, out.joints[:, 0])
    torch.testing.assert_close(out.joints_rel[:, 0], torch.zeros(3, 3))
    # the crop projection is the pinhole of the crop camera (principal point 128, upstream eps 1e-4)
    f = torch.tensor([800.0, 900.0, 1000.0])[:, None, None]
    expected = out.joints[..., :2] / (out.joints[..., 2:] + 1e-4) * f + 128.0
    torch.testing.assert_close(out.joints_proj, expected)


def test_model_focal_per_image_or_first_sample(tiny_pipeline):
    sizes = torch.tensor([[640, 480], [300, 400]])
    torch.testing.assert_close(tiny_pipeline.model.model_focal(sizes), torch.tensor([800.0, 500.0]))
    first = DPMesh.from_config(dataclasses.replace(tiny_pipeline.config, focal_per_image=False),
                               **_components(tiny_pipeline))
    torch.testing.assert_close(first.model_focal(sizes), torch.tensor([800.0, 800.0]))


def test_components_that_do_not_fit_are_refused(tiny_pipeline):
    from dpmesh_infer.geometry.crops import PreprocessConfig
    from dpmesh_infer.models.pose_decoders import PoseDecoderConfig, build_pose_decoder

    parts = _components(tiny_pipeline)
    vq = build_pose_decoder(PoseDecoderConfig(type="vqvae", num_tokens=6, codebook_size=16, token_dim=16))
    with pytest.raises(ConfigError, match="predicts for 'vposer' but the pose decoder is 'vqvae'"):
        DPMesh(**{**parts, "pose_decoder": vq})
    with pytest.raises(ConfigError, match="heatmap_size 16 must be input_size 256 / 8"):
        DPMesh(**parts, preprocess=PreprocessConfig(heatmap_size=16))
    with pytest.raises(ConfigError, match="names pose decoder 'vqvae'"):
        DPMesh.from_config(PipelineConfig(pose_decoder="vqvae"), **parts)


def test_mismatched_weights_are_a_weights_error_naming_the_folder(tiny_weights, tmp_path):
    import shutil

    w = tmp_path / "w"
    shutil.copytree(tiny_weights, w)
    cfg = json.loads((w / "pipeline.json").read_text())
    cfg["pose_decoder"] = "vqvae"
    (w / "pipeline.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=f"invalid weights in {w}.*'vqvae'"):
        Pipeline.from_pretrained(w)


def test_save_pretrained_round_trip(tiny_pipeline, scene, tmp_path):
    image, kp = scene
    out_dir = tiny_pipeline.save_pretrained(tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no staging folder left behind
    again = Pipeline.from_pretrained(out_dir)
    assert again.config == tiny_pipeline.config
    for a, b in zip(again(image, keypoints=kp)[0].persons, tiny_pipeline(image, keypoints=kp)[0].persons):
        np.testing.assert_array_equal(a.vertices, b.vertices)
        np.testing.assert_array_equal(a.joints_2d, b.joints_2d)
    # an existing directory is replaced only when asked
    from dpmesh_infer.errors import InputError

    with pytest.raises(InputError, match="not empty"):
        tiny_pipeline.save_pretrained(out_dir, overwrite=False)


def test_to_moves_and_checks_dtype(tiny_weights):
    pipe = Pipeline.from_pretrained(tiny_weights, device="cpu")
    assert pipe.to("cpu") is pipe and pipe.device.type == "cpu" and pipe.dtype == torch.float32
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in pipe.model.parameters())
    from dpmesh_infer.errors import InputError

    with pytest.raises(InputError, match="runs only on CUDA"):
        pipe.to(dtype=torch.float16)
    with pytest.raises(InputError, match="device must be"):
        pipe.to("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            pipe.to("cuda")


def test_focal_choice_max_pixels_and_sources_are_options(tiny_pipeline, scene):
    image, kp = scene
    h, w = image.shape[:2]
    res = tiny_pipeline(image, keypoints=kp, focal=FocalChoice("fov", 90.0), sources=["shot.jpg"])[0]
    assert res.source == "shot.jpg" and res.K[0, 0] == pytest.approx(w / 2.0)
    assert res.focal_source.startswith("--fov 90")
    res = tiny_pipeline(image, keypoints=kp)[0]
    assert res.focal_source == DEFAULT_SOURCE and res.K[0, 0] == pytest.approx(np.hypot(w, h))
    res = tiny_pipeline([image, image], keypoints=[kp, kp], focal=[1000.0, None])
    assert res[0].K[0, 0] == 1000.0 and "given" in res[0].focal_source and res[1].focal_source == DEFAULT_SOURCE
    with pytest.raises(ImageError, match="exceeds the limit of 1000 pixels"):
        tiny_pipeline(image, keypoints=kp, max_pixels=1000)


def test_stacked_with_zero_persons_has_every_field():
    res = ImageResult(persons=[], K=np.eye(3), image_size=(10, 20))
    arrays = res.stacked()
    for name, shape in PERSON_ARRAYS.items():
        assert arrays[name].shape == (0, *shape) and arrays[name].dtype == np.float32, name
    assert arrays["K"].shape == (3, 3) and list(arrays["image_size"]) == [10, 20]


def test_ply_and_glb_exports_by_value(tiny_pipeline, scene, tmp_path):
    import trimesh

    image, kp = scene
    out = tiny_pipeline(image, keypoints=kp)
    res = out[0]
    ply = trimesh.load(out.save(tmp_path / "a.ply"), process=False)
    stacked = np.concatenate([p.vertices for p in res.persons])
    np.testing.assert_allclose(ply.vertices, stacked, atol=1e-6)  # photo camera frame, all persons
    assert len(ply.faces) == 2 * len(out.faces)
    glb = trimesh.load(out.save(tmp_path / "a.glb"), process=False)
    for i, p in enumerate(res.persons):
        mesh = glb.geometry[f"person_{i:02d}"]
        # glTF camera frame: the OpenCV y and z negated, x kept
        np.testing.assert_allclose(mesh.vertices, p.vertices * np.array([1.0, -1.0, -1.0]), atol=1e-6)
