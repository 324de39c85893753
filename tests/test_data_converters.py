"""Dataset converters: hand-written minimal inputs in each public format -> dpmesh dataset -> read back.

Every input file is written here in the public layout (COCO person_keypoints, NeuralAnnot, CrowdPose,
3DCrowdNet's 3DPW JSON, AMASS .npz); the outputs are read with the real ``Dataset`` reader and compared
field by field with the inputs, through the CLI and through the functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dpmesh_infer.data.converters import convert_3dpw, convert_amass, convert_coco, convert_crowdpose
from dpmesh_infer.data.format import Dataset, DatasetError
from dpmesh_infer.geometry.joints import J30_NAMES

runner = CliRunner()

# Independent name tables (public file names -> J30 names), not taken from the code under test.
COCO_TO_J30 = {
    "nose": "Nose", "left_eye": "L_Eye", "right_eye": "R_Eye", "left_ear": "L_Ear", "right_ear": "R_Ear",
    "left_shoulder": "L_Shoulder", "right_shoulder": "R_Shoulder", "left_elbow": "L_Elbow",
    "right_elbow": "R_Elbow", "left_wrist": "L_Wrist", "right_wrist": "R_Wrist", "left_hip": "L_Hip",
    "right_hip": "R_Hip", "left_knee": "L_Knee", "right_knee": "R_Knee", "left_ankle": "L_Ankle",
    "right_ankle": "R_Ankle",
}  # fmt: skip
COCO_FILE_NAMES = list(COCO_TO_J30)
CROWDPOSE_FILE_NAMES = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                        "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"]
CROWDPOSE_TO_J30 = {**{k: v for k, v in COCO_TO_J30.items() if k in CROWDPOSE_FILE_NAMES},
                    "head": "Head_top", "neck": "Neck"}
J = {name: i for i, name in enumerate(J30_NAMES)}


def _app():
    from dpmesh_infer.cli import app

    return app


def _invoke(*args: str):
    return runner.invoke(_app(), [str(a) for a in args])


def _write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def _kp(n: int, seed: int, vis: list[int]) -> np.ndarray:
    """(n,3) [x, y, v] with distinct coordinates; unlabelled joints at (0, 0) as in COCO."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((n, 3))
    kp[:, 0] = np.round(rng.uniform(10, 400, n), 1)
    kp[:, 1] = np.round(rng.uniform(10, 300, n), 1)
    kp[:, 2] = vis
    kp[kp[:, 2] == 0, :2] = 0
    return kp


def _smpl_param(seed: int, big_beta: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    shape = np.round(rng.normal(0, 1, 10), 4)
    if big_beta:
        shape[3] = 3.5  # upstream training zeroes such betas; the converter must keep them
    return {"pose": np.round(rng.normal(0, 0.3, 72), 5).tolist(), "shape": shape.tolist(),
            "trans": np.round(rng.normal(0, 1, 3), 4).tolist()}


# --------------------------------------------------------------------------- COCO


@pytest.fixture
def coco_files(tmp_path):
    vis10 = [2, 2, 1, 0, 2, 2, 2, 1, 2, 2, 2, 2, 2, 1, 2, 2, 0]
    vis11 = [0, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0]  # right hip missing
    vis12 = [2, 0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0]  # 5 labelled
    kps = {10: _kp(17, 10, vis10), 11: _kp(17, 11, vis11), 12: _kp(17, 12, vis12), 13: _kp(17, 13, [0] * 17),
           14: _kp(17, 14, [0] * 17)}
    anns = [
        {"id": 10, "image_id": 1, "iscrowd": 0, "bbox": [12.5, 20.0, 300.25, 280.0], "num_keypoints": 14},
        {"id": 11, "image_id": 1, "iscrowd": 0, "bbox": [50.0, 60.0, 100.0, 200.0], "num_keypoints": 4},
        {"id": 12, "image_id": 2, "iscrowd": 0, "bbox": [5.0, 6.0, 70.0, 80.0], "num_keypoints": 5},
        {"id": 13, "image_id": 3, "iscrowd": 1, "bbox": [0.0, 0.0, 100.0, 100.0], "num_keypoints": 0},
        {"id": 14, "image_id": 3, "iscrowd": 0, "bbox": [10.0, 10.0, 20.0, 20.0], "num_keypoints": 0},
    ]
    for a in anns:
        a["keypoints"] = kps[a["id"]].reshape(-1).tolist()
        a["category_id"] = 1
    coco = {"images": [{"id": 1, "file_name": "000000000001.jpg", "width": 640, "height": 480},
                       {"id": 2, "file_name": "000000000002.jpg", "width": 500, "height": 400},
                       {"id": 3, "file_name": "000000000003.jpg", "width": 300, "height": 200}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": COCO_FILE_NAMES}]}
    smpl = {"10": {"smpl_param": _smpl_param(1), "cam_param": {"focal": [5000, 5000], "princpt": [320, 240]},
                   "fit_err": 1.0},
            "12": {"smpl_param": _smpl_param(2, big_beta=True), "cam_param": {"focal": [5000, 5000],
                                                                             "princpt": [250, 200]},
                   "fit_err": 9.0},
            "13": {"smpl_param": _smpl_param(3), "cam_param": {"focal": [5000, 5000], "princpt": [1, 1]}},
            "999": {"smpl_param": {"pose": [0.0]}, "cam_param": {}}}  # orphan (and broken): never read
    images = tmp_path / "coco" / "train2017"
    images.mkdir(parents=True)
    return {"ann": _write(tmp_path / "coco" / "person_keypoints_train2017.json", coco),
            "smpl": _write(tmp_path / "coco" / "MSCOCO_train_SMPL_NeuralAnnot.json", smpl),
            "images": images, "kps": kps, "coco": coco, "neural": smpl}


def _check_coco_person(p, kp: np.ndarray, bbox: list[float]) -> None:
    for src, name in enumerate(COCO_FILE_NAMES):
        j = J[COCO_TO_J30[name]]
        np.testing.assert_allclose(p.keypoints_2d[j, :2], kp[src, :2], atol=1e-3)
        assert p.keypoints_2d[j, 2] == (1.0 if kp[src, 2] > 0 else 0.0)
    lh, rh = kp[COCO_FILE_NAMES.index("left_hip")], kp[COCO_FILE_NAMES.index("right_hip")]
    np.testing.assert_allclose(p.keypoints_2d[J["Pelvis"], :2], (lh[:2] + rh[:2]) / 2, atol=1e-3)
    assert p.keypoints_2d[J["Pelvis"], 2] == float(lh[2] > 0 and rh[2] > 0)
    ls, rs = kp[COCO_FILE_NAMES.index("left_shoulder")], kp[COCO_FILE_NAMES.index("right_shoulder")]
    np.testing.assert_allclose(p.keypoints_2d[J["Neck"], :2], (ls[:2] + rs[:2]) / 2, atol=1e-3)
    for name in ("Torso", "Spine", "Chest", "L_Toe", "Head", "L_Hand", "Head_top"):
        assert np.all(p.keypoints_2d[J[name]] == 0), name
    np.testing.assert_allclose(p.bbox, bbox, atol=1e-3)
    assert p.input_keypoints is None and p.joints_3d is None


def test_coco_cli_round_trip(coco_files, tmp_path):
    out = tmp_path / "out"
    r = _invoke("data", "convert", "coco", coco_files["ann"], "--images", coco_files["images"], "--out", out,
                "--neuralannot", coco_files["smpl"])
    assert r.exit_code == 0, r.output
    assert "2 images, 3 persons (2 with SMPL" in r.output
    assert "1 iscrowd regions" in r.output and "1 persons with < 1 labelled keypoints" in r.output

    ds = Dataset(out)
    assert ds.image_root == coco_files["images"].resolve()
    recs = ds.records("train")  # split from the file name
    assert [r.image for r in recs] == ["000000000001.jpg", "000000000002.jpg"]
    assert [(r.width, r.height) for r in recs] == [(640, 480), (500, 400)]
    assert all(r.focal is None and r.tags == ["coco"] for r in recs)
    anns = {a["id"]: a for a in coco_files["coco"]["annotations"]}
    p10, p11 = recs[0].persons
    (p12,) = recs[1].persons
    for p, aid in ((p10, 10), (p11, 11), (p12, 12)):
        _check_coco_person(p, coco_files["kps"][aid], anns[aid]["bbox"])
    assert p11.keypoints_2d[J["Pelvis"], 2] == 0  # one hip unlabelled -> product 0
    assert p11.smpl is None
    for p, key in ((p10, "10"), (p12, "12")):
        sp = coco_files["neural"][key]["smpl_param"]
        np.testing.assert_allclose(p.smpl.global_orient, sp["pose"][:3], atol=1e-5)
        np.testing.assert_allclose(p.smpl.body_pose, sp["pose"][3:], atol=1e-5)
        np.testing.assert_allclose(p.smpl.betas, sp["shape"], atol=1e-5)
        assert p.smpl.transl is None and p.smpl.gender == "neutral" and p.smpl.valid
    assert p12.smpl.betas[3] == pytest.approx(3.5)  # raw, not zeroed


def test_coco_function_options(coco_files, tmp_path):
    res = convert_coco(coco_files["ann"], tmp_path / "o", images=coco_files["images"],
                       neuralannot=coco_files["smpl"], split="mine", min_keypoints=6, max_fit_err=5.0)
    assert (res.images, res.persons, res.with_smpl) == (1, 1, 1)
    assert res.skipped["persons with < 6 labelled keypoints"] == 3  # 11 (4), 12 (5), 14 (0)
    assert res.skipped["iscrowd regions"] == 1
    (rec,) = Dataset(tmp_path / "o").records("mine")
    assert rec.persons[0].smpl.valid  # fit_err 1.0 <= 5
    res = convert_coco(coco_files["ann"], tmp_path / "o2", images=coco_files["images"],
                       neuralannot=coco_files["smpl"], max_fit_err=5.0)
    assert [p.smpl.valid for r in Dataset(tmp_path / "o2").records("train") for p in r.persons if p.smpl] == \
        [True, False]  # fit_err 9.0 > 5: kept, marked invalid
    assert "1 with fit_err > 5 marked invalid" in res.summary()


def test_coco_errors(coco_files, tmp_path):
    base = ["data", "convert", "coco"]
    common = ["--images", coco_files["images"]]
    r = _invoke(*base, tmp_path / "nope_train.json", *common, "--out", tmp_path / "a")
    assert r.exit_code == 2 and "nope_train.json" in r.output and "not found" in r.output

    bad = tmp_path / "bad_train.json"
    bad.write_text('{"images": [], "annotations": [')
    r = _invoke(*base, bad, *common, "--out", tmp_path / "b")
    assert r.exit_code == 2 and "bad_train.json" in r.output and "not valid JSON" in r.output
    assert "Traceback" not in r.output

    coco = json.loads(coco_files["ann"].read_text())
    coco["annotations"][1]["keypoints"] = coco["annotations"][1]["keypoints"][:48]  # 16 joints
    wrong = _write(tmp_path / "wrong_train.json", coco)
    r = _invoke(*base, wrong, *common, "--out", tmp_path / "c")
    assert r.exit_code == 2 and "wrong_train.json: annotation id 11" in r.output and "48 numbers" in r.output

    neural = json.loads(coco_files["smpl"].read_text())
    neural["10"]["smpl_param"]["pose"] = neural["10"]["smpl_param"]["pose"][:70]
    badsmpl = _write(tmp_path / "na.json", neural)
    r = _invoke(*base, coco_files["ann"], *common, "--out", tmp_path / "d", "--neuralannot", badsmpl)
    assert r.exit_code == 2 and "na.json: entry '10'" in r.output and "smpl_param.pose" in r.output

    r = _invoke(*base, coco_files["ann"], "--images", tmp_path / "missing", "--out", tmp_path / "e")
    assert r.exit_code == 2 and "image directory not found" in r.output

    r = _invoke(*base, coco_files["ann"], *common, "--out", tmp_path / "f", "--check-images")
    assert r.exit_code == 2 and "2 of 2 referenced images are missing" in r.output

    odd = _write(tmp_path / "keypoints.json", coco)
    r = _invoke(*base, odd, *common, "--out", tmp_path / "g")
    assert r.exit_code == 2 and "--split" in r.output

    out = tmp_path / "h"
    assert _invoke(*base, coco_files["ann"], *common, "--out", out).exit_code == 0
    r = _invoke(*base, coco_files["ann"], *common, "--out", out)
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert _invoke(*base, coco_files["ann"], *common, "--out", out, "--overwrite").exit_code == 0


# --------------------------------------------------------------------------- CrowdPose


def _crowdpose(tmp_path: Path, fname: str, swap_sizes: bool) -> dict:
    vis = {1: [2] * 14, 2: [1, 1, 2, 2, 0, 0, 2, 0, 2, 2, 2, 2, 2, 2], 3: [0] * 14}  # 2: right hip missing
    kps = {aid: _kp(14, 100 + aid, v) for aid, v in vis.items()}
    kps[1][0, 0] = 600.0  # a shoulder at x = 600: only fits a 640-wide image
    images = [{"id": 7, "file_name": "100007.jpg", "width": 640, "height": 480, "crowdIndex": 0.4},
              {"id": 8, "file_name": "100008.jpg", "width": 640, "height": 480, "crowdIndex": 0.1}]
    if swap_sizes:  # the known bug of some crowdpose_train/test.json releases
        for im in images:
            im["width"], im["height"] = im["height"], im["width"]
    anns = [{"id": 1, "image_id": 7, "iscrowd": 0, "bbox": [1, 2, 3, 4]},
            {"id": 2, "image_id": 7, "iscrowd": 0, "bbox": [5, 6, 7, 8]},
            {"id": 3, "image_id": 8, "iscrowd": 0, "bbox": [9, 9, 9, 9]}]
    for a in anns:
        a["keypoints"] = kps[a["id"]].reshape(-1).tolist()
        a["num_keypoints"] = int((kps[a["id"]][:, 2] > 0).sum())
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": CROWDPOSE_FILE_NAMES}]}
    smpl = {"1": {"smpl_param": _smpl_param(5), "cam_param": {"focal": [5000, 5000], "princpt": [1, 2]},
                  "fit_err": 2.0},
            "2": {"smpl_param": _smpl_param(6), "cam_param": {"focal": [5000, 5000], "princpt": [1, 2]},
                  "fit_err": 8.0}}
    (tmp_path / "cp_images").mkdir(exist_ok=True)
    return {"ann": _write(tmp_path / fname, data), "smpl": _write(tmp_path / "CrowdPose_SMPL_NeuralAnnot.json", smpl),
            "images": tmp_path / "cp_images", "kps": kps, "neural": smpl}


def test_crowdpose_cli_round_trip_and_size_fix(tmp_path):
    f = _crowdpose(tmp_path, "crowdpose_train.json", swap_sizes=True)
    out = tmp_path / "out"
    r = _invoke("data", "convert", "crowdpose", f["ann"], "--images", f["images"], "--out", out,
                "--neuralannot", f["smpl"], "--max-fit-err", "5")
    assert r.exit_code == 0, r.output
    assert "1 images, 2 persons (2 with SMPL" in r.output and "width/height swapped" in r.output
    (rec,) = Dataset(out).records("train")
    assert (rec.width, rec.height) == (640, 480) and rec.tags == ["crowdpose"] and rec.focal is None
    for p, aid in zip(rec.persons, (1, 2)):
        kp = f["kps"][aid]
        for src, name in enumerate(CROWDPOSE_FILE_NAMES):
            j = J[CROWDPOSE_TO_J30[name]]
            np.testing.assert_allclose(p.keypoints_2d[j, :2], kp[src, :2], atol=1e-3)
            assert p.keypoints_2d[j, 2] == float(kp[src, 2] > 0)
        lh, rh = kp[6], kp[7]
        np.testing.assert_allclose(p.keypoints_2d[J["Pelvis"], :2], (lh[:2] + rh[:2]) / 2, atol=1e-3)
        assert p.keypoints_2d[J["Pelvis"], 2] == float(lh[2] > 0 and rh[2] > 0)
        for name in ("Nose", "L_Eye", "L_Ear", "Torso", "Head"):
            assert np.all(p.keypoints_2d[J[name]] == 0), name
        sp = f["neural"][str(aid)]["smpl_param"]
        np.testing.assert_allclose(p.smpl.betas, sp["shape"], atol=1e-5)
        assert p.smpl.transl is None
    assert [p.keypoints_2d[J["Pelvis"], 2] for p in rec.persons] == [1.0, 0.0]
    assert [p.smpl.valid for p in rec.persons] == [True, False]  # fit_err 2 and 8 vs --max-fit-err 5


def test_crowdpose_size_modes(tmp_path):
    from PIL import Image

    f = _crowdpose(tmp_path, "crowdpose_val.json", swap_sizes=False)
    res = convert_crowdpose(f["ann"], tmp_path / "o1", images=f["images"])
    assert res.split == "val" and not any("swapped" in n for n in res.notes)
    assert (Dataset(tmp_path / "o1").records("val")[0].width) == 640
    convert_crowdpose(f["ann"], tmp_path / "o2", images=f["images"], size="swap")
    assert Dataset(tmp_path / "o2").records("val")[0].width == 480

    Image.new("RGB", (64, 48)).save(f["images"] / "100007.jpg")
    r = _invoke("data", "convert", "crowdpose", f["ann"], "--images", f["images"], "--out", tmp_path / "o3",
                "--size", "image", "--check-images")
    assert r.exit_code == 0, r.output
    rec = Dataset(tmp_path / "o3").records("val")[0]
    assert (rec.width, rec.height) == (64, 48)
    r = _invoke("data", "convert", "crowdpose", f["ann"], "--images", f["images"], "--out", tmp_path / "o4",
                "--size", "sideways")
    assert r.exit_code == 2 and "size must be one of" in r.output


def test_crowdpose_wrong_file_is_named(tmp_path, coco_files):
    r = _invoke("data", "convert", "crowdpose", coco_files["ann"], "--images", coco_files["images"],
                "--out", tmp_path / "x")
    assert r.exit_code == 2
    assert "person_keypoints_train2017.json" in r.output and "14 keypoints" in r.output


# --------------------------------------------------------------------------- 3DPW


@pytest.fixture
def pw3d_files(tmp_path):
    rng = np.random.default_rng(7)
    joint_img = {aid: np.round(rng.uniform(0, 1000, (24, 2)), 2) for aid in (100, 101, 102)}
    openpose18 = np.round(np.c_[rng.uniform(0, 1000, (18, 2)), rng.uniform(0, 1, 18)], 3)
    openpose25 = np.round(np.c_[rng.uniform(0, 1000, (25, 2)), rng.uniform(0, 1, 25)], 3)
    smpl = {100: {**_smpl_param(100), "gender": "male"}, 101: {**_smpl_param(101), "gender": "female"},
            102: {**_smpl_param(102), "gender": "female"}}
    images = [{"id": 1, "file_name": "image_00000.jpg", "sequence": "courtyard_hug_00", "width": 1080,
               "height": 1920, "cam_param": {"focal": [1961.7, 1969.2], "princpt": [540.5, 960.25]}},
              {"id": 2, "file_name": "image_00010.jpg", "sequence": "downtown_walking_00", "width": 1080,
               "height": 1920, "cam_param": {"focal": [1500.0, 1500.0], "princpt": [541.0, 959.0]}}]
    anns = [{"id": 100, "image_id": 1, "bbox": [10, 20, 300, 900], "smpl_param": smpl[100],
             "joint_img": joint_img[100].reshape(-1).tolist(), "openpose_result": openpose18.reshape(-1).tolist()},
            {"id": 101, "image_id": 1, "bbox": [400, 20, 300, 900], "smpl_param": smpl[101],
             "joint_img": joint_img[101].tolist()},
            {"id": 102, "image_id": 2, "bbox": [1, 2, 3, 4], "smpl_param": smpl[102],
             "joint_img": joint_img[102].tolist(), "openpose_result": openpose25.tolist()}]
    d = tmp_path / "3dpw"
    main = _write(d / "3DPW_latest_validation.json", {"images": images, "annotations": anns})
    # OC subset: same frame and SMPL as annotation 102 under another id, plus a person of another split
    oc = _write(d / "3DPW_oc.json", {
        "images": [{"id": 50, "file_name": "image_00010.jpg", "sequence": "downtown_walking_00"},
                   {"id": 51, "file_name": "image_00003.jpg", "sequence": "outdoors_fencing_01"}],
        "annotations": [{"id": 7, "image_id": 50, "smpl_param": smpl[102]},
                        {"id": 8, "image_id": 51, "smpl_param": _smpl_param(9)}]})
    # PC subset without SMPL: matched by annotation id
    pc = _write(d / "3DPW_pc.json", {
        "images": [{"id": 1, "file_name": "image_00000.jpg", "sequence": "courtyard_hug_00"}],
        "annotations": [{"id": 100, "image_id": 1}]})
    hhrnet = np.round(np.c_[rng.uniform(0, 1000, (17, 2)), rng.uniform(0, 1, 17)], 3)
    dets = _write(d / "3DPW_validation_crowd_hhrnet_result.json",
                  {"101": {"coco_joints": hhrnet.tolist(), "img_id": 1}})
    (d / "imageFiles").mkdir()
    return {"main": main, "oc": oc, "pc": pc, "dets": dets, "images": d / "imageFiles", "joint_img": joint_img,
            "op18": openpose18, "op25": openpose25, "smpl": smpl, "hhrnet": hhrnet, "img": images}


def test_3dpw_cli_round_trip(pw3d_files, tmp_path):
    f = pw3d_files
    out = tmp_path / "out"
    r = _invoke("data", "convert", "3dpw", f["main"], "--images", f["images"], "--out", out, "--oc", f["oc"],
                "--pc", f["pc"], "--detections", f["dets"])
    assert r.exit_code == 0, r.output
    assert "2 images, 3 persons (3 with SMPL, 3 with input keypoints)" in r.output
    assert "3dpw-oc: 1 of 2 subset persons are not in this file" in r.output

    recs = Dataset(out).records("validation")
    assert [r.image for r in recs] == ["courtyard_hug_00/image_00000.jpg", "downtown_walking_00/image_00010.jpg"]
    assert recs[0].tags == ["3dpw", "3dpw-crowd", "3dpw-pc"] and recs[1].tags == ["3dpw", "3dpw-oc"]
    for rec, img in zip(recs, f["img"]):
        np.testing.assert_allclose(rec.focal, img["cam_param"]["focal"], atol=1e-3)
        np.testing.assert_allclose(rec.principal, img["cam_param"]["princpt"], atol=1e-3)
        assert (rec.width, rec.height) == (1080, 1920)
    p100, p101 = recs[0].persons
    (p102,) = recs[1].persons
    assert p100.tags == ["3dpw-crowd", "3dpw-pc"] and p101.tags == ["3dpw-crowd"] and p102.tags == ["3dpw-oc"]
    for p, aid in ((p100, 100), (p101, 101), (p102, 102)):
        sp = f["smpl"][aid]
        np.testing.assert_allclose(p.smpl.global_orient, sp["pose"][:3], atol=1e-5)
        np.testing.assert_allclose(p.smpl.body_pose, sp["pose"][3:], atol=1e-5)
        np.testing.assert_allclose(p.smpl.betas, sp["shape"], atol=1e-5)
        np.testing.assert_allclose(p.smpl.transl, sp["trans"], atol=1e-5)
        assert p.smpl.gender == sp["gender"] and p.smpl.valid
        np.testing.assert_allclose(p.keypoints_2d[:24, :2], f["joint_img"][aid], atol=1e-3)
        assert np.all(p.keypoints_2d[:24, 2] == 1) and np.all(p.keypoints_2d[24:] == 0)
    assert p100.input_format == "openpose18"
    np.testing.assert_allclose(p100.input_keypoints, f["op18"], atol=1e-3)
    assert p101.input_format == "coco17"  # from the detections file
    np.testing.assert_allclose(p101.input_keypoints, f["hhrnet"], atol=1e-3)
    assert p102.input_format == "openpose25"
    np.testing.assert_allclose(p102.input_keypoints, f["op25"], atol=1e-3)


def test_3dpw_function_without_extras(pw3d_files, tmp_path):
    f = pw3d_files
    res = convert_3dpw(f["main"], tmp_path / "o", images=f["images"], split="crowd", tags=["mine"])
    assert (res.images, res.persons, res.with_input_keypoints) == (2, 3, 2)  # 101 has no OpenPose
    recs = Dataset(tmp_path / "o").records("crowd")
    assert recs[1].tags == ["3dpw", "mine"] and recs[1].persons[0].tags == ["mine"]
    assert recs[0].persons[1].input_keypoints is None


def test_3dpw_errors(pw3d_files, tmp_path):
    f = pw3d_files
    data = json.loads(f["main"].read_text())
    del data["images"][1]["cam_param"]
    bad = _write(tmp_path / "3DPW_latest_test.json", data)
    r = _invoke("data", "convert", "3dpw", bad, "--images", f["images"], "--out", tmp_path / "a")
    assert r.exit_code == 2 and "3DPW_latest_test.json: image id 2" in r.output and "cam_param" in r.output

    data = json.loads(f["main"].read_text())
    data["annotations"][0]["smpl_param"]["gender"] = "x"
    data["annotations"][2]["openpose_result"] = [1.0] * 20
    bad = _write(tmp_path / "3DPW_latest_test.json", data)
    r = _invoke("data", "convert", "3dpw", bad, "--images", f["images"], "--out", tmp_path / "b")
    assert r.exit_code == 2 and "annotation id 100" in r.output and "gender" in r.output

    data["annotations"][0]["smpl_param"]["gender"] = "m"
    bad = _write(tmp_path / "3DPW_latest_test.json", data)
    r = _invoke("data", "convert", "3dpw", bad, "--images", f["images"], "--out", tmp_path / "c")
    assert r.exit_code == 2 and "annotation id 102" in r.output and "openpose_result has 20 numbers" in r.output

    r = _invoke("data", "convert", "3dpw", f["oc"], "--images", f["images"], "--out", tmp_path / "d")
    assert r.exit_code == 2 and "3DPW_oc.json" in r.output and "--split" in r.output


# --------------------------------------------------------------------------- AMASS


@pytest.fixture
def amass_dir(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "amass"
    (src / "CMU" / "01").mkdir(parents=True)
    (src / "KIT" / "3").mkdir(parents=True)
    smplh = rng.normal(0, 0.5, (240, 156))
    np.savez(src / "CMU" / "01" / "01_01_poses.npz", poses=smplh, mocap_framerate=np.array(120.0),
             betas=rng.normal(0, 1, 16), trans=rng.normal(0, 1, (240, 3)), gender=np.array("male"))
    body66 = rng.normal(0, 0.5, (50, 66))
    np.savez(src / "KIT" / "3" / "walk_poses.npz", poses=body66, mocap_framerate=np.array(60.0))
    np.savez(src / "CMU" / "01" / "shape.npz", betas=rng.normal(0, 1, 16))  # AMASS per-subject shape file
    (src / "KIT" / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    np.savez(src / "KIT" / "pickled.npz", poses=np.array([rng.normal(0, 1, 72)], dtype=object))
    return {"src": src, "smplh": smplh, "body66": body66}


def test_amass_cli_and_vqvae_loader(amass_dir, tmp_path):
    from dpmesh_infer.train.vqvae import load_amass_body_poses

    out = tmp_path / "poses"
    r = _invoke("data", "convert", "amass", amass_dir["src"], "--out", out)
    assert r.exit_code == 0, r.output
    assert "2 files, 85 frames" in r.output and "skipped 3 files" in r.output

    with np.load(out / "CMU" / "01" / "01_01_poses.npz", allow_pickle=False) as d:
        np.testing.assert_allclose(d["poses"], amass_dir["smplh"][::4, :72].astype(np.float32))
        assert d["poses"].dtype == np.float32 and float(d["mocap_framerate"]) == 30.0
        assert str(d["gender"]) == "male" and d["trans"].shape == (60, 3) and d["betas"].shape == (16,)
    with np.load(out / "KIT" / "3" / "walk_poses.npz", allow_pickle=False) as d:
        assert d["poses"].shape == (25, 72)
        np.testing.assert_allclose(d["poses"][:, :66], amass_dir["body66"][::2].astype(np.float32))
        assert np.all(d["poses"][:, 66:] == 0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 85 and [f["stride"] for f in summary["files"]] == [4, 2]
    assert sorted(s["path"] for s in summary["skipped"]) == ["CMU/01/shape.npz", "KIT/corrupt.npz",
                                                             "KIT/pickled.npz"]

    body = load_amass_body_poses(out).numpy()
    expected = np.concatenate([amass_dir["smplh"][::4, 3:72].reshape(-1, 23, 3),
                               np.c_[amass_dir["body66"][::2, 3:66], np.zeros((25, 6))].reshape(-1, 23, 3)])
    np.testing.assert_allclose(body, expected.astype(np.float32), atol=1e-6)


def test_amass_function_options_and_errors(amass_dir, tmp_path):
    res = convert_amass(amass_dir["src"], tmp_path / "p", target_fps=60, zero_hands=True)
    assert (res.files, res.frames) == (2, 120 + 50)
    with np.load(tmp_path / "p" / "CMU" / "01" / "01_01_poses.npz") as d:
        assert np.all(d["poses"][:, 66:] == 0)
        np.testing.assert_allclose(d["poses"][:, :66], amass_dir["smplh"][::2, :66].astype(np.float32))
    with pytest.raises(DatasetError, match="--overwrite"):
        convert_amass(amass_dir["src"], tmp_path / "p")

    empty = tmp_path / "empty"
    empty.mkdir()
    r = _invoke("data", "convert", "amass", empty, "--out", tmp_path / "q")
    assert r.exit_code == 2 and "no .npz files" in r.output and str(empty) in r.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.npz").write_bytes(b"garbage")
    r = _invoke("data", "convert", "amass", bad, "--out", tmp_path / "q")
    assert r.exit_code == 2 and "x.npz" in r.output
