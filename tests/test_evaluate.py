"""`dpmesh evaluate`: report numbers against an independent computation, per-tag rows, accounting, CLI.

The dataset is generated here: 3 small PNG photos in two splits, GT SMPL from small random poses with
the synthetic body of each person's gender, GT keypoints_2d = projections of the GT J30 joints.
Persons (split/record/person):
  test/0/0 A neutral, COCO-17 detector keypoints          (image tag 3dpw-oc)
  test/0/1 B male, no detector keypoints, tag 3dpw-pc     (image tag 3dpw-oc)
  test/1/0 C female, COCO-17 detector keypoints, 3dpw-pc
  test/1/1 D no GT SMPL                                     -> excluded
  test/1/2 G GT SMPL marked invalid, tag 3dpw-pc            -> excluded
  val/0/0  E neutral, detector keypoints all at conf 0    (image tag 3dpw-crowd) -> skipped = failed
  val/0/1  F neutral, no detector keypoints                (image tag 3dpw-crowd)
"""

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.data.format import DatasetWriter, ImageAnnotation, PersonAnnotation, SMPLParams, open_dataset
from dpmesh_infer.errors import InputError, WeightsError

W, H = 320, 240
COCO_TO_J30 = [24, 25, 26, 27, 28, 16, 17, 18, 19, 20, 21, 1, 2, 4, 5, 7, 8]  # COCO-17 order -> J30 index
runner = CliRunner()


# --------------------------------------------------------------------------- fixtures


def _smpl_params(rng, x: float, gender: str, valid: bool = True) -> SMPLParams:
    r6 = lambda a: np.round(np.asarray(a, np.float64), 6).astype(np.float32)  # noqa: E731 (as stored)
    return SMPLParams(global_orient=r6([math.pi + rng.normal(0, 0.1), rng.normal(0, 0.2), rng.normal(0, 0.1)]),
                      body_pose=r6(rng.normal(0, 0.15, 69)), betas=r6(rng.normal(0, 0.5, 10)),
                      transl=r6([x, 0.3, 6.0]), gender=gender, valid=valid)


@pytest.fixture(scope="module")
def world(tiny_weights, tmp_path_factory):
    """Dataset dir, the GT bodies by gender, their SMPL files, the H36M regressor file, and per-person inputs."""
    from dpmesh_infer.stand_ins.smpl import write_synthetic_smpl_npz
    from dpmesh_infer.weights.smpl import load_smpl

    root = tmp_path_factory.mktemp("eval")
    files = {"neutral": tiny_weights / "smpl" / "SMPL_NEUTRAL.npz",
             "male": write_synthetic_smpl_npz(root / "male", seed=1),
             "female": write_synthetic_smpl_npz(root / "female", seed=2)}
    bodies = {g: load_smpl(p) for g, p in files.items()}
    rng = np.random.default_rng(0)
    reg = np.zeros((17, 6890))
    for j in range(17):
        idx = rng.choice(6890, 20, replace=False)
        reg[j, idx] = rng.random(20) + 0.1
    reg /= reg.sum(axis=1, keepdims=True)
    np.save(root / "h36m.npy", reg)

    f = math.hypot(W, H)
    inputs = {}  # (split, record, person) -> keypoints the pipeline must see (J, 3)

    def person(key, x, gender, *, detected=None, tags=(), smpl=True, valid=True):
        s = _smpl_params(rng, x, gender, valid)
        with torch.no_grad():
            j = bodies[gender](*(torch.from_numpy(a)[None] for a in (s.global_orient, s.body_pose, s.betas,
                                                                     s.transl))).joints[0].double().numpy()
        uv = np.stack([f * j[:, 0] / j[:, 2] + W / 2, f * j[:, 1] / j[:, 2] + H / 2], axis=1)
        kp = np.round(np.concatenate([uv, np.ones((30, 1))], axis=1), 3).astype(np.float32)
        fmt = inp = None
        if detected == "coco17":
            fmt, inp = "coco17", np.concatenate([uv[COCO_TO_J30] + rng.normal(0, 2, (17, 2)), np.full((17, 1), .9)], 1)
        elif detected == "empty":  # a detection whose joints are all below threshold: no usable box
            fmt, inp = "openpose18", np.concatenate([rng.uniform(0, 200, (18, 2)), np.zeros((18, 1))], 1)
        if inp is not None:
            inp = np.round(inp, 3).astype(np.float32)
        inputs[key] = inp if inp is not None else kp
        return PersonAnnotation(keypoints_2d=kp, input_keypoints=inp, input_format=fmt, smpl=s if smpl else None,
                                tags=list(tags))

    (root / "data" / "images").mkdir(parents=True)
    recs = {
        ("test", "img0.png", ("3dpw-oc",)): [person(("test", 0, 0), -0.7, "neutral", detected="coco17"),
                                             person(("test", 0, 1), 0.7, "male", tags=["3dpw-pc"])],
        ("test", "img1.png", ()): [person(("test", 1, 0), 0.0, "female", detected="coco17", tags=["3dpw-pc"]),
                                   person(("test", 1, 1), 0.8, "neutral", smpl=False),
                                   person(("test", 1, 2), -0.8, "neutral", valid=False, tags=["3dpw-pc"])],
        ("val", "img2.png", ("3dpw-crowd",)): [person(("val", 0, 0), -0.6, "neutral", detected="empty"),
                                               person(("val", 0, 1), 0.6, "neutral")],
    }
    with DatasetWriter(root / "data", name="tiny eval") as w:
        for (split, name, tags), persons in recs.items():
            Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "data" / "images" / name)
            w.add(split, ImageAnnotation(image=name, width=W, height=H, persons=persons, tags=list(tags)))
    return {"root": root, "data": root / "data", "files": files, "bodies": bodies, "reg": reg,
            "reg_path": root / "h36m.npy", "inputs": inputs}


# --------------------------------------------------------------------------- independent numbers


def _procrustes(p, g):
    """Umeyama similarity of p (N,3) onto g (N,3), written independently of dpmesh_infer.metrics."""
    mp, mg = p.mean(0), g.mean(0)
    pc, gc = p - mp, g - mg
    u, d, vt = np.linalg.svd(gc.T @ pc / len(p))
    s = np.eye(3)
    s[2, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    r = u @ s @ vt
    scale = np.trace(np.diag(d) @ s) / (pc ** 2).sum(1).mean()
    return scale * pc @ r.T + mg


def _metrics(pred_v, gt_v, reg, pelvis_pred, pelvis_gt):
    """(MPJPE, PA-MPJPE, MPVE) mm for one person, plain numpy."""
    keep = [1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16]
    jp, jg = reg @ pred_v, reg @ gt_v
    jp, jg = (jp - jp[0])[keep], (jg - jg[0])[keep]
    e = lambda a, b: 1000 * np.sqrt(((a - b) ** 2).sum(1)).mean()  # noqa: E731
    mpve = e(pred_v - pelvis_pred @ pred_v, gt_v - pelvis_gt @ gt_v)
    return e(jp, jg), e(_procrustes(jp, jg), jg), mpve


def _expected(world, pipe, gt_gender_override=None):
    """{(split, record, person): (mpjpe, pa_mpjpe, mpve)} with the pipeline run person by person."""
    ds = open_dataset(world["data"])
    pel = {g: np.load(p, allow_pickle=False)["J_regressor"][0].astype(np.float64) for g, p in world["files"].items()}
    out = {}
    for key in [("test", 0, 0), ("test", 0, 1), ("test", 1, 0), ("val", 0, 1)]:
        rec = ds.records(key[0])[key[1]]
        smpl = rec.persons[key[2]].smpl
        res = pipe(str(ds.image_path(rec)), keypoints=world["inputs"][key][None])[0]
        assert len(res.persons) == 1
        gender = (gt_gender_override or {}).get(smpl.gender, smpl.gender)
        with torch.no_grad():
            gt_v = world["bodies"][gender](*(torch.from_numpy(a)[None] for a in (
                smpl.global_orient, smpl.body_pose, smpl.betas, smpl.transl))).vertices[0].double().numpy()
        out[key] = _metrics(res.persons[0].vertices.astype(np.float64), gt_v, world["reg"], pel["neutral"], pel[gender])
    return out


def _mean(exp, keys):
    return np.mean([exp[k] for k in keys], axis=0)


EXPECTED_ROWS = {  # (split, subset): (evaluated persons, failed, excluded)
    ("test", None): ([("test", 0, 0), ("test", 0, 1), ("test", 1, 0)], 0, 2),
    ("test", "3dpw-oc"): ([("test", 0, 0), ("test", 0, 1)], 0, 0),
    ("test", "3dpw-pc"): ([("test", 0, 1), ("test", 1, 0)], 0, 1),
    ("val", None): ([("val", 0, 1)], 1, 0),
    ("val", "3dpw-crowd"): ([("val", 0, 1)], 1, 0),
}


@pytest.fixture(scope="module")
def report(world, tiny_pipeline):
    from dpmesh_infer.evaluate import evaluate_dataset

    ds = open_dataset(world["data"])
    calls = []
    rep = evaluate_dataset(tiny_pipeline, ds, inputs="auto", h36m_regressor=world["reg"], batch_size=2, chunk=2,
                           gt_bodies=world["bodies"], progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 3), (3, 3)]  # 3 images with GT persons, 2 per pipeline call
    return rep


@pytest.fixture(scope="module")
def expected(world, tiny_pipeline):
    return _expected(world, tiny_pipeline)


# --------------------------------------------------------------------------- library


def test_numbers_match_an_independent_computation(report, expected):
    by_key = {(p.split, p.record, p.person): p for p in report.persons}
    assert len(by_key) == 7
    for key, (mpjpe, pa, mpve) in expected.items():
        p = by_key[key]
        assert p.status == "evaluated"
        np.testing.assert_allclose([p.mpjpe, p.pa_mpjpe, p.mpve], [mpjpe, pa, mpve], rtol=1e-5, atol=1e-3)
        assert p.pa_mpjpe < p.mpjpe  # Procrustes alignment can only help
    assert by_key[("test", 0, 0)].input_source == "detected" and by_key[("test", 0, 1)].input_source == "gt"
    assert by_key[("test", 0, 1)].gt_body == "male" and by_key[("test", 1, 0)].gt_body == "female"


def test_rows_aggregate_exactly_the_tagged_persons(report, expected):
    from dpmesh_infer.metrics import weighted_mean

    assert {(r.split, r.subset) for r in report.rows} == set(EXPECTED_ROWS)
    for (split, subset), (keys, failed, excluded) in EXPECTED_ROWS.items():
        row = report.row(split, subset)
        assert (row.count, row.evaluated, row.failed, row.excluded) == (len(keys) + failed, len(keys), failed,
                                                                        excluded), (split, subset)
        np.testing.assert_allclose([row.mpjpe, row.pa_mpjpe, row.mpve], _mean(expected, keys), rtol=1e-5, atol=1e-3)
    # the split row is the person-weighted mean of a partition of it (oc-tagged image + the other image)
    oc, c = report.row("test", "3dpw-oc"), expected[("test", 1, 0)]
    assert report.row("test").mpjpe == pytest.approx(weighted_mean([oc.mpjpe, c[0]], [2, 1]), abs=1e-9)
    assert report.row("test").inputs_detected == 2 and report.row("test").inputs_gt == 1


def test_skipped_and_excluded_persons_are_accounted(report):
    (f,) = report.failures
    assert (f.split, f.image, f.record, f.person) == ("val", "img2.png", 0, 0)
    assert "no keypoint above confidence" in f.reason
    excl = [(p.record, p.person, p.reason) for p in report.persons if p.status == "excluded"]
    assert excl == [(1, 1, "no GT SMPL"), (1, 2, "GT SMPL marked invalid")]
    assert any("could not be reconstructed" in w for w in report.warnings)
    assert any("UNTRAINED" in w for w in report.warnings)
    d = json.loads(json.dumps(report.to_dict(per_person=True), allow_nan=False))
    assert d["failures"][0]["reason"] == f.reason and len(d["persons"]) == 7
    text = report.format_table()
    assert "3dpw-crowd" in text and "PA-MPJPE" in text


def test_detected_inputs_require_detections(world, tiny_pipeline):
    from dpmesh_infer.evaluate import evaluate_dataset

    with pytest.raises(InputError) as e:
        evaluate_dataset(tiny_pipeline, open_dataset(world["data"]), inputs="detected", h36m_regressor=world["reg"],
                         gt_bodies=world["bodies"])
    msg = str(e.value)
    assert "2 person(s)" in msg and "record 0 (img0.png) person 1" in msg and "split 'val' record 0" in msg


def test_missing_gendered_body_is_an_error_unless_allowed(world, tiny_pipeline, expected):
    from dpmesh_infer.evaluate import evaluate_dataset

    ds = open_dataset(world["data"])
    neutral = {"neutral": world["bodies"]["neutral"]}
    kw = dict(h36m_regressor=world["reg"], gt_bodies=neutral, splits=["test"])
    with pytest.raises(WeightsError) as e:
        evaluate_dataset(tiny_pipeline, ds, **kw)
    assert "--smpl-male" in str(e.value) and "--smpl-female" in str(e.value)
    assert "record 0 (img0.png) person 1" in str(e.value)
    rep = evaluate_dataset(tiny_pipeline, ds, allow_neutral_gt=True, **kw)
    assert any("NEUTRAL" in w and "1 male" in w and "1 female" in w for w in rep.warnings)
    assert [r.split for r in rep.rows] == ["test"] * 3
    p = {(q.record, q.person): q for q in rep.persons}
    assert p[(0, 1)].gt_body == "neutral" and p[(0, 1)].gender == "male"
    assert p[(0, 0)].mpjpe == pytest.approx(expected[("test", 0, 0)][0], abs=1e-3)  # neutral GT: unchanged
    assert abs(p[(0, 1)].mpve - expected[("test", 0, 1)][2]) > 1.0  # another GT body: another number


# --------------------------------------------------------------------------- CLI


def _run(*args):
    return runner.invoke(app, ["evaluate", *map(str, args)])


def test_cli_writes_table_and_json(world, tiny_weights, expected, tmp_path):
    out = tmp_path / "r.json"
    r = _run("--weights", tiny_weights, "--data", world["data"], "--h36m-regressor", world["reg_path"],
             "--smpl-male", world["files"]["male"], "--smpl-female", world["files"]["female"].parent.parent,
             "--out", out, "--per-person", "--device", "cpu", "--batch-size", "3", "-q")
    assert r.exit_code == 0, r.output
    assert "PA-MPJPE" in r.output and "3dpw-pc" in r.output and str(out) in r.output
    assert "not reconstructed: val img2.png person 0" in r.output
    d = json.loads(out.read_text())
    assert d["format"] == "dpmesh-evaluation" and d["schema_version"] == 1 and d["units"] == "mm"
    s = d["settings"]
    assert s["inputs"] == "auto" and s["splits"] == ["test", "val"] and "--h36m-regressor" in s["h36m_regressor"]
    assert s["weights"] == str(tiny_weights.resolve()) and len(s["h36m_regressor_sha256"]) == 64
    for row in d["rows"]:
        keys, failed, excluded = EXPECTED_ROWS[(row["split"], row["subset"])]
        assert (row["count"], row["failed"], row["excluded"]) == (len(keys) + failed, failed, excluded)
        np.testing.assert_allclose([row["mpjpe"], row["pa_mpjpe"], row["mpve"]], _mean(expected, keys), rtol=1e-5,
                                   atol=1e-3)
    assert len(d["persons"]) == 7 and d["failures"][0]["person"] == 0


def test_cli_missing_regressor_names_both_places(world, tiny_weights):
    r = _run("--weights", tiny_weights, "--data", world["data"], "--allow-neutral-gt")
    assert r.exit_code == 3, r.output
    assert "--h36m-regressor (not given)" in r.output
    assert str(tiny_weights / "smpl" / "J_regressor_h36m.npy") in r.output
    assert "J_regressor_h36m_correct.npy" in r.output and "Traceback" not in r.output
    r = _run("--weights", tiny_weights, "--data", world["data"], "--h36m-regressor", world["root"] / "nope.npy")
    assert r.exit_code == 3 and "nope.npy (not found)" in r.output


def test_cli_gendered_gt(world, tiny_weights, tmp_path, monkeypatch):
    # exit 3 (WeightsError): the data are fine; a model file the evaluation needs is missing, as for the
    # regressor. The check runs before the pipeline is loaded.
    r = _run("--weights", tiny_weights, "--data", world["data"], "--h36m-regressor", world["reg_path"])
    assert r.exit_code == 3, r.output
    assert "male (1 person(s); pass --smpl-male PATH" in r.output and "--allow-neutral-gt" in r.output
    assert "female (1 person(s); pass --smpl-female PATH" in r.output
    r = _run("--weights", tiny_weights, "--data", world["data"], "--h36m-regressor", world["reg_path"],
             "--smpl-male", tmp_path / "missing.npz")
    assert r.exit_code == 3 and "--smpl-male" in r.output and "not found" in r.output
    # allowed: the neutral body; regressor from the weights' default place; JSON in the working directory
    w = tmp_path / "w"
    w.mkdir()
    for entry in tiny_weights.iterdir():
        if entry.name != "smpl":
            os.symlink(entry, w / entry.name)
    (w / "smpl").mkdir()
    os.symlink(world["files"]["neutral"], w / "smpl" / "SMPL_NEUTRAL.npz")
    np.save(w / "smpl" / "J_regressor_h36m.npy", world["reg"])
    monkeypatch.chdir(tmp_path)
    r = _run("--weights", w, "--data", world["data"], "--allow-neutral-gt", "--split", "val", "--device", "cpu")
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "tiny_eval-eval.json").read_text())
    assert "weights default" in d["settings"]["h36m_regressor"] and d["settings"]["splits"] == ["val"]
    assert [(x["subset"], x["count"]) for x in d["rows"]] == [(None, 2), ("3dpw-crowd", 2)]


def test_cli_detected_without_detections_is_exit_2(world, tiny_weights):
    r = _run("--weights", tiny_weights, "--data", world["data"], "--h36m-regressor", world["reg_path"],
             "--inputs", "detected", "--allow-neutral-gt")
    assert r.exit_code == 2, r.output
    assert "no input_keypoints" in r.output and "img0.png" in r.output
    r = _run("--weights", tiny_weights, "--data", world["data"], "--inputs", "bogus")
    assert r.exit_code == 2 and "--inputs must be one of" in r.output
