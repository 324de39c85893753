"""Keypoint refinement (dpmesh_infer.refine): synthetic people with exact labels, the pipeline hook, the CLI."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.data.synthetic import sample_global_orient
from dpmesh_infer.errors import ConfigError, InputError
from dpmesh_infer.geometry.camera import project
from dpmesh_infer.refine import RefineConfig
from dpmesh_infer.refine import losses as L
from dpmesh_infer.refine.apply import overlapping_pairs
from dpmesh_infer.refine.fit import FitInputs, fit_bodies

F, PP = 800.0, (320.0, 240.0)
LEFT_ARM = [16, 18, 20, 22]
NO_PAIRS = torch.zeros(0, 2, dtype=torch.int64)


def _people(pipe, n, seed, noise, *, latent=True):
    """GT bodies from the tiny VPoser decoder, their exact keypoints (all 30 joints, confidence 1) and a
    perturbed start (what a network would predict): (FitInputs, GT SMPLOutput)."""
    body, dec = pipe.body, pipe.pose_decoder
    rng = np.random.default_rng(seed)

    def t(a):
        return torch.tensor(np.asarray(a), dtype=torch.float32)

    z = t(rng.normal(0, 1, (n, 32)))
    go = t(np.stack([sample_global_orient(rng) for _ in range(n)]))
    betas = t(rng.normal(0, 0.5, (n, 10)))
    with torch.no_grad():
        pose = dec(z)
        transl = t([[0.4 * i - 0.4, 0.2, 4.0 + i] for i in range(n)]) - body(go, pose, betas).joints[:, 0]
        gt = body(go, pose, betas, transl)
    focal, principal = torch.full((n,), F), torch.tensor([PP]).expand(n, 2)
    kp2 = project(gt.joints, focal, principal, eps=0.0)
    keypoints = torch.cat([kp2, torch.ones(n, 30, 1)], -1)
    side = (kp2.amax(1) - kp2.amin(1)).amax(-1) * 1.32
    z0 = z + noise * t(rng.normal(0, 1, (n, 32)))
    go0 = go + noise / 3 * t(rng.normal(0, 1, (n, 3)))
    b0 = betas + noise * t(rng.normal(0, 1, (n, 10)))
    t0 = transl + t([0.05, -0.05, 0.3])
    with torch.no_grad():
        p0 = dec(z0)
    return FitInputs(go0, p0, b0, t0, z0 if latent else None, keypoints, focal, principal, side, NO_PAIRS), gt


def _rel(v, j):
    return v - j[:, :1]


def _start(pipe, x):
    with torch.no_grad():
        return pipe.body(x.global_orient, x.body_pose, x.betas, x.transl)


@pytest.fixture(scope="module")
def clean(tiny_pipeline):
    x, gt = _people(tiny_pipeline, 3, seed=0, noise=0.3)
    return x, gt, fit_bodies(tiny_pipeline.body, tiny_pipeline.pose_decoder, x, RefineConfig(iterations=40))


def test_clean_keypoints_error_falls_5x_and_vertices_approach_gt(tiny_pipeline, clean):
    x, gt, r = clean
    start = _start(tiny_pipeline, x)
    assert bool(r.refined.all()) and r.keypoints_used.tolist() == [30, 30, 30]
    assert (r.error_before_px > 5.0).all()  # a real perturbation
    assert (r.error_before_px >= 5.0 * r.error_after_px).all(), (r.error_before_px, r.error_after_px)
    # the reported errors are what they say: mean pixel distance of the projected joints
    proj = project(r.joints, x.focal, x.principal, eps=0.0)
    torch.testing.assert_close(r.error_after_px, (proj - x.keypoints[..., :2]).norm(dim=-1).mean(-1))
    torch.testing.assert_close(r.joints_2d, proj)
    pve_rel = lambda v, j: (_rel(v, j) - _rel(gt.vertices, gt.joints)).norm(dim=-1).mean(-1)  # noqa: E731
    assert (pve_rel(r.vertices, r.joints) < 0.5 * pve_rel(start.vertices, start.joints)).all()
    pve = lambda v: (v - gt.vertices).norm(dim=-1).mean(-1)  # noqa: E731
    assert (pve(r.vertices) < pve(start.vertices)).all()  # in the camera too (depth is ambiguous)
    # the fitted parameters reproduce the fitted body
    with torch.no_grad():
        again = tiny_pipeline.body(r.global_orient, r.body_pose, r.betas, r.transl)
    torch.testing.assert_close(again.vertices, r.vertices)
    torch.testing.assert_close(tiny_pipeline.pose_decoder(r.pose_latent), r.body_pose)
    assert (r.loss_after < r.loss_before).all()


def test_rerun_is_identical_and_a_person_does_not_depend_on_its_batch(tiny_pipeline, clean):
    x, cfg = clean[0], RefineConfig(iterations=10)
    r = fit_bodies(tiny_pipeline.body, tiny_pipeline.pose_decoder, x, cfg)
    again = fit_bodies(tiny_pipeline.body, tiny_pipeline.pose_decoder, x, cfg)
    for name in ("vertices", "global_orient", "body_pose", "betas", "transl", "pose_latent", "iterations"):
        assert torch.equal(getattr(again, name), getattr(r, name)), name
    one = FitInputs(*(v[1:2] if v.ndim and v.shape[0] == 3 else v for v in
                      (x.global_orient, x.body_pose, x.betas, x.transl, x.pose_latent, x.keypoints, x.focal,
                       x.principal, x.box_side)), pairs=NO_PAIRS)
    alone = fit_bodies(tiny_pipeline.body, tiny_pipeline.pose_decoder, one, cfg)
    torch.testing.assert_close(alone.vertices[0], r.vertices[1], atol=2e-4, rtol=0)


def test_occluded_joints_stay_near_the_prediction(tiny_pipeline):
    x, gt = _people(tiny_pipeline, 2, seed=1, noise=0.3)
    x.keypoints[:, LEFT_ARM, 2] = 0.0  # the left arm is hidden: no keypoints
    start = _start(tiny_pipeline, x)
    held = fit_bodies(tiny_pipeline.body, tiny_pipeline.pose_decoder, x, RefineConfig(iterations=40))
    free = fit_bodies(tiny_pipeline.body, tiny_pipeline.pose_decoder, x, RefineConfig(iterations=40,
                                                                                      occluded_weight=0.0))
    assert held.keypoints_used.tolist() == [26, 26]

    def drift(r):  # cm, root-relative, mean over the hidden joints
        return (_rel(r.joints, r.joints) - _rel(start.joints, start.joints))[:, LEFT_ARM].norm(dim=-1).mean(-1) * 100

    assert (drift(held) < 5.0).all() and (drift(held) < 0.5 * drift(free)).all(), (drift(held), drift(free))
    assert (held.error_before_px >= 3.0 * held.error_after_px).all()  # the visible joints are still fitted


def test_interpenetration_term_separates_two_overlapping_bodies(tiny_pipeline):
    body, dec = tiny_pipeline.body, tiny_pipeline.pose_decoder
    go = torch.tensor(np.stack([sample_global_orient(np.random.default_rng(1))] * 2), dtype=torch.float32)
    z, betas = torch.zeros(2, 32), torch.zeros(2, 10)
    with torch.no_grad():
        pose = dec(z)
        transl = torch.tensor([[0.0, 0.2, 5.0], [0.15, 0.2, 5.05]]) - body(go, pose, betas).joints[:, 0]
        joints = body(go, pose, betas, transl).joints
    focal, principal = torch.full((2,), F), torch.tensor([PP]).expand(2, 2)
    kp = torch.cat([project(joints, focal, principal, eps=0.0), torch.ones(2, 30, 1)], -1)
    pairs = torch.tensor([[0, 1]])
    x = FitInputs(go, pose, betas, transl, z, kp, focal, principal, torch.full((2,), 300.0), pairs)
    before = L.interpenetration(joints, pairs)
    apart = fit_bodies(body, dec, x, RefineConfig(iterations=40))
    through = fit_bodies(body, dec, x, RefineConfig(iterations=40, interpenetration_weight=0.0))
    after, kept = L.interpenetration(apart.joints, pairs), L.interpenetration(through.joints, pairs)
    assert before[0] > 1000 and kept[0] > 0.3 * before[0]  # without the term they stay inside each other
    assert after[0] < 0.01 * before[0], (before, after)
    assert (apart.error_after_px < 5.0).all()  # ... and the term separates them in depth, keeping the image fit
    assert apart.joints[1, 0, 2] - apart.joints[0, 0, 2] > through.joints[1, 0, 2] - through.joints[0, 0, 2]


def test_vq_head_optimises_the_body_pose_directly(tiny_pipeline):
    x, _ = _people(tiny_pipeline, 1, seed=2, noise=0.2, latent=False)
    r = fit_bodies(tiny_pipeline.body, None, x, RefineConfig(iterations=40))
    assert r.pose_latent is None and not torch.equal(r.body_pose, x.body_pose)
    assert (r.error_before_px >= 5.0 * r.error_after_px).all(), (r.error_before_px, r.error_after_px)


def test_too_few_keypoints_leave_the_body_unchanged(tiny_pipeline):
    x, _ = _people(tiny_pipeline, 2, seed=3, noise=0.3)
    x.keypoints[1, 3:, 2] = 0.0
    weights = (1.0,) * 25 + (0.0,) * 5  # face keypoints 25..29 never fitted: not counted as used
    r = fit_bodies(tiny_pipeline.body, tiny_pipeline.pose_decoder, x, RefineConfig(iterations=3,
                                                                                   keypoint_weights=weights))
    assert r.refined.tolist() == [True, False] and r.iterations.tolist() == [3, 0]
    assert r.keypoints_used.tolist() == [25, 3]
    assert torch.equal(r.pose_latent[1], x.pose_latent[1]) and torch.equal(r.transl[1], x.transl[1])
    torch.testing.assert_close(r.error_after_px[1], r.error_before_px[1])


def test_loss_terms():
    torch.testing.assert_close(L.geman_mcclure(torch.tensor([0.0, 1.0, 1e8]), 10.0),
                               torch.tensor([0.0, 100.0 / 101.0, 100.0]), rtol=1e-6, atol=1e-6)
    # SMPLify's bending prior: bending the elbows / knees the natural way costs less than hyper-extension
    natural, hyper = torch.zeros(1, 23, 3), torch.zeros(1, 23, 3)
    natural[0, 17, 1], natural[0, 18, 1], natural[0, 3, 0], natural[0, 4, 0] = -1.0, 1.0, 1.0, 1.0
    hyper[0] = -natural[0]
    assert L.bending(natural) < L.bending(torch.zeros(1, 23, 3)) < L.bending(hyper)
    joints = torch.zeros(2, 30, 3)
    joints[1, :, 0] = 2.0  # 2 m apart: no sphere meets another
    assert L.interpenetration(joints, torch.tensor([[0, 1]])).tolist() == [0.0, 0.0]
    joints[1, :, 0] = 0.1
    pen = L.interpenetration(joints, torch.tensor([[0, 1]]))
    assert pen[0] > 0 and pen[0] == pen[1]
    ref, now = torch.tensor([4.0, 5.0]), torch.tensor([5.2, 5.0])  # the farther one came in front
    assert L.depth_order(now, ref, torch.tensor([[0, 1]]), 0.1)[0] > 0
    assert L.depth_order(ref, ref, torch.tensor([[0, 1]]), 0.1).tolist() == [0.0, 0.0]
    pairs = overlapping_pairs(np.array([0, 0, 1, 0]), np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 0, 10, 10],
                                                                 [20, 20, 30, 30]]))
    assert pairs.tolist() == [[0, 1]]  # same image and overlapping only


def test_config_validation_and_json(tmp_path):
    for bad in ({"iterations": -1}, {"lr": 0.0}, {"min_confidence": 1.5}, {"shape_weight": -1.0},
                {"keypoint_weights": (1.0, 2.0)}):
        with pytest.raises(ConfigError):
            RefineConfig(**bad)
    cfg = RefineConfig(iterations=7, interpenetration_weight=0.0)
    cfg.save_json(tmp_path / "r.json")
    assert RefineConfig.load_json(tmp_path / "r.json") == cfg
    (tmp_path / "bad.json").write_text(json.dumps({"iterationz": 3}))
    with pytest.raises(ConfigError, match="unknown keys"):
        RefineConfig.load_json(tmp_path / "bad.json")


def test_pipeline_refine_hook_keeps_the_network_body(tiny_pipeline, scene, tmp_path):
    from dpmesh_infer.outputs import Refinement

    image, kp = scene
    kp = kp.copy()
    kp[1, 2:, 2] = 0.0  # person 1: 2 confident keypoints, too few to refine (still reconstructed)
    plain = tiny_pipeline(image, keypoints=kp)[0]
    out = tiny_pipeline(image, keypoints=kp, refine=RefineConfig(iterations=5))
    res = out[0]
    assert [p.refinement.status for p in res.persons] == ["refined", "skipped"]
    assert isinstance(res.persons[0].refinement, Refinement) and "at least 4" in res.persons[1].refinement.reason
    for p, q in zip(res.persons, plain.persons):
        np.testing.assert_allclose(p.refinement.unrefined.vertices, q.vertices, atol=1e-6)
        np.testing.assert_allclose(p.refinement.unrefined.body_pose, q.body_pose, atol=1e-6)
        assert q.refinement is None
    r0 = res.persons[0].refinement
    assert r0.iterations == 5 and r0.keypoints_used == 19 and r0.error_after_px < r0.error_before_px
    assert not np.allclose(res.persons[0].vertices, plain.persons[0].vertices)
    np.testing.assert_array_equal(res.persons[1].vertices, plain.persons[1].vertices)
    # the exporters write the refined body, people.json / npz keep the unrefined one and the errors
    d = json.loads(out.save(tmp_path / "r.json").read_text())["persons"]
    assert d[0]["smpl"]["betas"] == pytest.approx(res.persons[0].betas.tolist())
    assert d[0]["refinement"]["reprojection_error_px"]["after"] == pytest.approx(r0.error_after_px, abs=1e-3)
    assert d[0]["refinement"]["unrefined"]["smpl"]["betas"] == pytest.approx(plain.persons[0].betas.tolist())
    assert d[1]["refinement"]["status"] == "skipped"
    assert d[1]["visibility"]["confident_keypoints"] == pytest.approx(2 / 17, abs=1e-4)  # 2 of the 17 body joints
    with np.load(out.save(tmp_path / "r.npz"), allow_pickle=False) as z:
        np.testing.assert_allclose(z["unrefined_vertices"][0], plain.persons[0].vertices, atol=1e-6)
        assert z["reprojection_error_after_px"][0] == pytest.approx(r0.error_after_px)
    # a pipeline-wide setting, overridden per call
    tiny_pipeline.refine = RefineConfig(iterations=1)
    try:
        assert tiny_pipeline(image, keypoints=kp)[0].persons[0].refinement.iterations == 1
        assert tiny_pipeline(image, keypoints=kp, refine=False)[0].persons[0].refinement is None
        with torch.inference_mode():  # the refinement steps out of inference mode on its own
            assert tiny_pipeline(image, keypoints=kp)[0].persons[0].refinement.status == "refined"
    finally:
        tiny_pipeline.refine = None
    with pytest.raises(InputError, match="RefineConfig"):
        tiny_pipeline(image, keypoints=kp, refine="yes")


def test_cli_predict_refine(tiny_weights, scene, tmp_path):
    from PIL import Image

    image, kp = scene
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "kp.json").write_text(json.dumps([{"keypoints": k.reshape(-1).tolist()} for k in kp]))
    RefineConfig(iterations=2).save_json(tmp_path / "refine.json")
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "a.png"), "-k", str(tmp_path / "kp.json"), "-w",
                                 str(tiny_weights), "-o", str(tmp_path / "a.json"), "--refine-config",
                                 str(tmp_path / "refine.json")])
    assert r.exit_code == 0, r.output
    persons = json.loads((tmp_path / "a.json").read_text())["persons"]
    assert [p["refinement"]["iterations"] for p in persons] == [2, 2]
    assert set(persons[0]["refinement"]["unrefined"]) == {"smpl", "joints_3d", "joints_2d"}
    r = CliRunner().invoke(app, ["predict", str(tmp_path / "a.png"), "-k", str(tmp_path / "kp.json"), "-w",
                                 str(tiny_weights), "-o", str(tmp_path / "b.json"), "--refine-config",
                                 str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "no such file" in r.output


def test_cli_evaluate_refine_records_the_config(tiny_weights, tmp_path):
    """`dpmesh evaluate --refine-config`: the refined bodies are evaluated and the config is in the report."""
    from dpmesh_infer.data.synthetic import generate_synthetic_dataset
    from dpmesh_infer.stand_ins.smpl import write_synthetic_h36m_regressor

    data = generate_synthetic_dataset(tmp_path / "data", splits={"test": 1}, persons_per_image=(1, 1), seed=3)
    reg = write_synthetic_h36m_regressor(tmp_path / "reg")
    cfg = RefineConfig(iterations=3)
    cfg.save_json(tmp_path / "refine.json")
    base = ["evaluate", "-w", str(tiny_weights), "--data", str(data), "--h36m-regressor", str(reg), "--inputs",
            "gt", "--device", "cpu", "-q", "--per-person"]
    reports = {}
    for name, extra in (("plain", []), ("refined", ["--refine-config", str(tmp_path / "refine.json")])):
        r = CliRunner().invoke(app, base + ["--out", str(tmp_path / f"{name}.json")] + extra)
        assert r.exit_code == 0, r.output
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert reports["plain"]["settings"]["refine"] is None
    assert reports["refined"]["settings"]["refine"] == cfg.to_dict()
    (plain,), (refined,) = reports["plain"]["persons"], reports["refined"]["persons"]
    assert plain["status"] == refined["status"] == "evaluated" and plain["mpve"] != refined["mpve"]
