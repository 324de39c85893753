"""Occlusion-sensitivity maps (dpmesh_infer.analysis.occlusion, `dpmesh occlusion-map`)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.analysis.occlusion import (
    JOINT_GROUPS,
    OcclusionConfig,
    OcclusionMap,
    grid_positions,
    grid_shape,
    occlusion_map,
)
from dpmesh_infer.analysis.occlusion_run import prepare
from dpmesh_infer.cli import app
from dpmesh_infer.errors import ConfigError, InputError
from dpmesh_infer.geometry.camera import default_focal
from dpmesh_infer.geometry.crops import PreprocessConfig

#: The stand-in's known dependence: joint -> crop region (rows y0:y1, cols x0:x1) whose mean moves it.
REGIONS = {15: (20, 60, 100, 150), 20: (150, 190, 30, 70)}
KNEE = 5  # moves by 0.1 m when its keypoint is masked out


class RegionNet(torch.nn.Module):
    """A DPMesh stand-in whose joint j depends only on the mean of crop region REGIONS[j] (x += mean, in
    metres) and the right knee only on its own keypoint mask; every other joint (and the root) is fixed."""

    preprocess = PreprocessConfig()

    def __init__(self):
        super().__init__()
        self.register_buffer("base", torch.linspace(-0.5, 0.5, 90).reshape(1, 30, 3))
        self.calls = []

    def model_focal(self, image_size):
        return default_focal(image_size[:, 0], image_size[:, 1])

    def forward(self, images, joints32, mask, model_focal):
        self.calls.append(images.shape[0])
        joints = self.base.expand(images.shape[0], 30, 3).clone()
        for j, (y0, y1, x0, x1) in REGIONS.items():
            joints[:, j, 0] += images[:, :, y0:y1, x0:x1].mean((1, 2, 3))
        joints[:, KNEE, 1] += 0.1 * (~mask[:, KNEE]).to(joints.dtype)
        return SimpleNamespace(joints=joints)


@pytest.fixture(scope="module")
def person(tiny_pipeline, scene):
    image, kp = scene
    return prepare(tiny_pipeline, image, kp)[0][0]


def expected_region_errors(crop, region, ys, xs, patch, fill):
    """Independent numpy: |mean of the region with the square filled − mean without| in mm, per position."""
    y0, y1, x0, x1 = region
    out = np.zeros((len(ys), len(xs)))
    ref = crop[:, y0:y1, x0:x1].mean()
    for i, y in enumerate(ys):
        for k, x in enumerate(xs):
            c = crop.copy()
            c[:, y:y + patch, x:x + patch] = fill
            out[i, k] = abs(c[:, y0:y1, x0:x1].mean() - ref) * 1000.0
    return out


def test_map_lights_up_exactly_where_the_network_looks(person):
    net = RegionNet()
    cfg = OcclusionConfig(patch=40, stride=10, batch_size=100)
    m = occlusion_map(net, person, cfg)
    assert m.errors_mm.shape == (22, 22, 30) and m.shape == grid_shape(256, 40, 10) == (22, 22)
    assert net.calls == [1, 100, 100, 100, 100, 84]  # the reference, then 484 crops in batches
    ys = grid_positions(256, 40, 10)
    crop = np.asarray(person.image, np.float64)
    for j, region in REGIONS.items():
        want = expected_region_errors(crop, region, ys, ys, 40, 0.5)
        np.testing.assert_allclose(m.errors_mm[..., j], want, atol=2e-3)
        y0, y1, x0, x1 = region
        overlap = ((ys[:, None] + 40 > y0) & (ys[:, None] < y1)) & ((ys[None, :] + 40 > x0) & (ys[None, :] < x1))
        assert (m.errors_mm[..., j][~overlap] < 1e-3).all() and (m.errors_mm[..., j][overlap] > 0.05).all()
    others = [j for j in range(30) if j not in REGIONS]
    assert np.abs(m.errors_mm[..., others]).max() < 1e-4  # the knee too: its keypoint is never dropped here
    groups = m.group_errors()
    assert set(groups) == set(JOINT_GROUPS) and groups["left_leg"].max() < 1e-4 and groups["head"].max() > 1.0
    np.testing.assert_allclose(groups["head"], m.errors_mm[..., list(JOINT_GROUPS["head"])].mean(-1))


def test_dropping_occluded_keypoints_is_what_a_detector_would_lose(person):
    cfg = OcclusionConfig(patch=64, stride=16, drop_occluded_keypoints=True)
    m = occlusion_map(RegionNet(), person, cfg)
    ys = grid_positions(256, 64, 16)
    uv = np.asarray(person.joints32, np.float64) * 8.0  # keypoints in crop pixels
    inside = ((uv[None, None, :, 0] >= ys[None, :, None]) & (uv[None, None, :, 0] < ys[None, :, None] + 64)
              & (uv[None, None, :, 1] >= ys[:, None, None]) & (uv[None, None, :, 1] < ys[:, None, None] + 64))
    inside &= np.asarray(person.mask)[None, None]
    np.testing.assert_array_equal(m.dropped_keypoints, inside.sum(-1))
    assert m.dropped_keypoints.max() > 0
    np.testing.assert_allclose(m.errors_mm[..., KNEE], np.where(inside[..., KNEE], 100.0, 0.0), atol=1e-3)


def test_batching_equals_one_by_one_with_the_real_network(tiny_pipeline, person):
    batched = occlusion_map(tiny_pipeline.model, person, OcclusionConfig(patch=128, stride=128, batch_size=4))
    single = occlusion_map(tiny_pipeline.model, person, OcclusionConfig(patch=128, stride=128, batch_size=1))
    assert batched.errors_mm.shape == (2, 2, 30)
    np.testing.assert_allclose(batched.errors_mm, single.errors_mm, atol=1e-3, rtol=1e-4)
    assert batched.errors_mm[..., 0].max() == 0.0 and batched.errors_mm.max() > 0.01  # root-relative; it reacts


def test_injected_backbone_through_the_composed_network(tiny_pipeline, person):
    """A Pipeline built from a backbone whose features see only one crop region: the whole body changes
    exactly where the occluder meets that region."""
    from dpmesh_infer import Pipeline

    class RegionBackbone(torch.nn.Module):
        latent_factor, feature_stride = 8, 4

        def __init__(self, config):
            super().__init__()
            self.config = config
            g = torch.Generator().manual_seed(0)
            self.register_buffer("a", torch.randn(1, config.merge_channels, 8, 8, generator=g))
            self.register_buffer("b", torch.randn(1, config.merge_channels, 8, 8, generator=g))

        def forward(self, images, joints32, heatmaps):
            return self.a + 5.0 * images[:, :, 96:160, 96:160].mean((1, 2, 3))[:, None, None, None] * self.b

    pipe = Pipeline(config=tiny_pipeline.config, backbone=RegionBackbone(tiny_pipeline.backbone.config),
                    regressor=tiny_pipeline.regressor, pose_decoder=tiny_pipeline.pose_decoder, body=tiny_pipeline.body)
    m = occlusion_map(pipe.model, person, OcclusionConfig(patch=32, stride=32))
    ys = grid_positions(256, 32, 32)
    hits = ((ys + 32 > 96) & (ys < 160))
    overlap = hits[:, None] & hits[None, :]
    err = m.group_errors()["all"]
    assert (err[~overlap] < 1e-3).all() and (err[overlap] > 0.1).all(), err


def test_upsampling_to_the_crop_and_the_photo(person):
    g = grid_positions(256, 40, 20)
    grid = np.zeros((len(g), len(g)))
    grid[3, 5] = 10.0
    m = OcclusionMap(np.zeros((len(g), len(g), 30), np.float32), g, g, 40, 20, 256, np.zeros((30, 3), np.float32),
                     np.zeros((len(g), len(g)), np.int32), person.box, person.crop2img, person.image_size, 0)
    crop = m.to_crop(grid)
    assert crop.shape == (256, 256)
    r, c = np.unravel_index(np.argmax(crop), crop.shape)
    centre = np.array([g[5], g[3]]) + 19.5  # (x, y) of the occluder's centre
    assert abs(c - centre[0]) <= 0.5 and abs(r - centre[1]) <= 0.5
    assert crop.max() == pytest.approx(10 * (1 - 0.5 / 20) ** 2)  # bilinear, half a pixel from the centre
    photo, inside = m.to_image(grid)
    assert photo.shape == (person.image_size[1], person.image_size[0]) and inside.any() and not inside.all()
    r, c = np.unravel_index(np.argmax(photo), photo.shape)
    a = np.asarray(person.crop2img, np.float64)
    want = a[:, :2] @ centre + a[:, 2]
    assert np.hypot(c - want[0], r - want[1]) <= 0.02 * person.box[2] + 1.0


def test_grid_shapes_and_settings():
    assert grid_shape(256, 40, 10) == (22, 22) and grid_shape(256, 40, 20) == (11, 11)
    assert grid_shape(256, 256, 7) == (1, 1) and grid_positions(256, 40, 10)[-1] == 210
    with pytest.raises(InputError, match="larger than"):
        grid_positions(256, 300, 10)
    for bad in ({"patch": 0}, {"stride": 0}, {"fill": 2.0}, {"batch_size": 0}):
        with pytest.raises(ConfigError):
            OcclusionConfig(**bad)


def test_cli_writes_maps_pictures_and_summary(tiny_weights, scene, tmp_path):
    image, kp = scene
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "kp.json").write_text(json.dumps([{"keypoints": k.reshape(-1).tolist()} for k in kp]))
    out = tmp_path / "maps"
    args = ["occlusion-map", str(tmp_path / "a.png"), "-k", str(tmp_path / "kp.json"), "-w", str(tiny_weights),
            "--out", str(out)]
    r = CliRunner().invoke(app, args + ["--person", "1", "--patch", "128", "--stride", "128",
                                        "--drop-occluded-keypoints", "-q"])
    assert r.exit_code == 0, r.output
    assert "2 x 2 = 4 network forwards" in r.output and "about" in r.output  # the time estimate
    doc = json.loads((out / "occlusion.json").read_text())
    assert doc["schema_version"] == 1 and doc["grid"]["rows"] == 2 and doc["settings"]["drop_occluded_keypoints"]
    (p,) = doc["persons"]
    assert p["index"] == 1 and p["crops"] == 4 and set(p["groups"]) == set(JOINT_GROUPS)
    folder = out / "person_01"
    assert sorted(p["files"]) == sorted(str(f.relative_to(out)) for f in folder.iterdir())
    with np.load(folder / "occlusion.npz", allow_pickle=False) as z:
        assert z["errors_mm"].shape == (2, 2, 30) and z["group_errors_mm"].shape == (2, 2, len(JOINT_GROUPS))
        assert list(z["group_names"]) == list(JOINT_GROUPS) and z["patch"] == 128
        assert p["groups"]["all"]["max_mm"] == pytest.approx(float(z["group_errors_mm"][..., -1].max()), abs=1e-3)
    for group in JOINT_GROUPS:
        for kind in ("crop", "photo"):
            with Image.open(folder / f"{kind}_{group}.png") as im:
                assert im.format == "PNG" and im.size[0] > 200
    assert not (out / "person_00").exists()
    # usage errors: exit 2; unusable image: exit 4
    assert CliRunner().invoke(app, args + ["--person", "5"]).exit_code == 2
    assert CliRunner().invoke(app, args + ["--patch", "300"]).exit_code == 2
    (out / "occlusion.json").write_text((tmp_path / "kp.json").read_text())  # an input where an output goes
    clash = CliRunner().invoke(app, args[:3] + [str(out / "occlusion.json")] + args[4:])
    assert clash.exit_code == 2 and "where the output goes" in clash.output
    bad = CliRunner().invoke(app, ["occlusion-map", str(tmp_path / "none.png"), "-k", str(tmp_path / "kp.json"),
                                   "-w", str(tiny_weights), "--out", str(out)])
    assert bad.exit_code == 4 and "not found" in bad.output
