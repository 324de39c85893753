"""The field's keypoint files: mmpose (inferencer and demo output), AlphaPose (COCO-17, Halpe-26/136, its
OpenPose form), cocoapi results with COCO 2014/2017 names, COCO annotation tables (visibility flags,
unlabelled people), folders of per-image files; and `dpmesh predict --keypoints` on each.

Sample files (tests/data/keypoint_samples/, README.md there): the mmpose files are written by mmpose's
own ``split_instances`` and its inferencer's ``mmengine.dump`` (``make_samples.py``; the test
``test_mmpose_samples_are_what_mmpose_writes`` regenerates them with the installed mmpose);
``mmpose_test_coco.json`` is mmpose's test annotation file (open-mmlab/mmpose tests/data/coco/test_coco.json,
Apache-2.0; COCO val2017 annotations, CC BY 4.0; segmentation polygons removed).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.errors import KeypointFileError
from dpmesh_infer.geometry.joints import COCO17_NAMES, J30_NAMES, coco17_to_j30, to_j30
from dpmesh_infer.keypoint_files import BOX_ONLY_REASON, CROWD_REASON, KeypointPerson, read_keypoints

SAMPLES = Path(__file__).resolve().parent / "data" / "keypoint_samples"
J = {name: i for i, name in enumerate(J30_NAMES)}
runner = CliRunner()


def sample(name):
    return SAMPLES / name


def _json(name):
    return json.loads(sample(name).read_text())


# ------------------------------------------------------------------------------------------- mmpose

def test_mmpose_inferencer_image():
    """MMPoseInferencer pred_out_dir file: mmpose/apis/inferencers/base_mmpose_inferencer.py postprocess dumps
    ``split_instances(pred.pred_instances)`` (mmpose/structures/utils.py): per instance ``keypoints`` J x [x, y],
    ``keypoint_scores`` J, ``bbox`` = ``(bboxes[i].tolist(),)`` -> [[x1, y1, x2, y2]], ``bbox_score``."""
    raw = _json("mmpose_inferencer_scene.json")
    kps = read_keypoints(sample("mmpose_inferencer_scene.json"))
    assert kps.file_format == "mmpose-inferencer" and kps.single_image
    persons = kps.lookup("any/photo.png")
    assert len(persons) == 2
    for p, inst in zip(persons, raw):
        assert p.joint_format == "coco17" and p.keypoints.shape == (17, 3)
        np.testing.assert_array_equal(p.keypoints[:, :2], inst["keypoints"])
        np.testing.assert_array_equal(p.keypoints[:, 2], np.maximum(inst["keypoint_scores"], 0))
        (x1, y1, x2, y2), = inst["bbox"]
        np.testing.assert_allclose(p.bbox, [x1, y1, x2 - x1, y2 - y1])
        assert p.score == inst["bbox_score"] and p.skip_reason is None
    # person 1's ankles were not found: location -1, score <= 0 (mmpose codecs) -> confidence 0 (missing)
    assert raw[1]["keypoint_scores"][15] < 0
    assert persons[1].keypoints[15:, 2].tolist() == [0.0, 0.0]
    kp30 = persons[0].kp30()
    np.testing.assert_array_equal(kp30, coco17_to_j30(persons[0].keypoints[None])[0])


def test_mmpose_inferencer_video_frames():
    """A video's pred_out_dir file: ``[dict(frame_id=i, instances=pred) for i, pred in enumerate(...)]``
    (base_mmpose_inferencer.py _finalize_video_processing): frames from 0, matched by the stem's number."""
    kps = read_keypoints(sample("mmpose_inferencer_clip.json"))
    assert kps.file_format == "mmpose-inferencer" and kps.id_kind == "frame_id" and set(kps.per_image) == {0, 1}
    f0, f1 = kps.lookup("frames/frame_000000.jpg"), kps.lookup("000001.png")
    assert len(f0) == len(f1) == 2
    np.testing.assert_allclose(f1[0].keypoints[:, 0] - f0[0].keypoints[:, 0], 3.0, atol=1e-3)
    assert kps.lookup("frame_000002.jpg") is None and kps.lookup("cover.jpg") is None
    assert kps.unmatched(["frame_000001.jpg"]) == [(0, 2)]
    assert "2 frame numbers: 0, 1" in kps.missing_message("frame_000002.jpg")


def test_mmpose_demo_image_and_halpe26_video():
    """Demo scripts (demo/topdown_demo_with_mmdet.py, bottomup_demo.py --save-predictions):
    ``json.dump(dict(meta_info=model.dataset_meta, instance_info=pred_instances_list))``; for a video
    ``instance_info`` holds ``dict(frame_id=frame_idx, instances=...)`` with frame_idx counted from 1."""
    img = read_keypoints(sample("mmpose_demo_scene.json"))
    assert img.file_format == "mmpose-demo" and img.single_image
    same = read_keypoints(sample("mmpose_inferencer_scene.json")).per_image[None]
    for a, b in zip(img.per_image[None], same):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.bbox, b.bbox)
    raw = _json("mmpose_demo_halpe26_clip.json")
    assert raw["meta_info"]["dataset_name"] == "halpe26"
    vid = read_keypoints(sample("mmpose_demo_halpe26_clip.json"))
    assert vid.id_kind == "frame_id" and set(vid.per_image) == {1, 2}
    p = vid.lookup("clip_0001.jpg")[0]
    kp = np.asarray(raw["instance_info"][0]["instances"][0]["keypoints"])
    assert p.joint_format == "halpe26" and p.keypoints.shape == (26, 3)
    kp30 = p.kp30()
    names = [raw["meta_info"]["keypoint_id2name"][str(i)] for i in range(26)]
    np.testing.assert_array_equal(kp30[J["Head_top"], :2], kp[names.index("head")])
    np.testing.assert_array_equal(kp30[J["Neck"], :2], kp[names.index("neck")])  # Halpe's own neck
    np.testing.assert_allclose(kp30[J["Pelvis"], :2], (kp[11] + kp[12]) / 2)  # hip mean, not Halpe's "hip"
    for name in COCO17_NAMES:
        np.testing.assert_array_equal(kp30[J[name], :2], kp[COCO17_NAMES.index(name)])
    assert kp30[J["L_Toe"], 2] == 0  # toes and heels have no slot the checkpoints saw: dropped


def test_mmpose_errors(tmp_path):
    def write(data):
        path = tmp_path / "kp.json"
        path.write_text(json.dumps(data))
        return path

    inst = _json("mmpose_inferencer_scene.json")[0]
    cases = [
        ([{**inst, "keypoints": sum(inst["keypoints"], [])}], r"kp.json\[0\]: 'keypoints' must be a list of \[x, y\]"),
        ([{**inst, "keypoints": [p + [1.0] for p in inst["keypoints"]]}], r"3D keypoints of a lifter"),
        ([{**inst, "keypoint_scores": inst["keypoint_scores"][:-1]}], r"'keypoint_scores' has 16 values for 17"),
        ([{"keypoints": inst["keypoints"][:14], "keypoint_scores": [1] * 14}],
         r"\[0\]: 14 keypoints per person; this reads mmpose models with 17 \(coco\), 26 \(halpe26\)"),
        ([{**inst, "bbox": [[5, 5, 1, 1]]}], r"'bbox' must be \[\[x1, y1, x2, y2\]\] with x2 >= x1"),
        ([{"frame_id": 0, "instances": [inst]}, {"frame_id": 0, "instances": []}], r"\[1\]: frame_id 0 appears twice"),
        ({"meta_info": {"dataset_name": "posetrack18", "keypoint_id2name": {
            str(i): n for i, n in enumerate(["nose", "head_bottom", "head_top"] + ["x"] * 14)}},
          "instance_info": [inst]},
         r"instance_info\[0\]: meta_info names the keypoints of mmpose dataset 'posetrack18'"),
        ({"meta_info": {}, "instance_info": {"a": 1}}, r"instance_info: expected a list of instances or of frames"),
    ]
    for data, message in cases:
        with pytest.raises(KeypointFileError, match=message):
            read_keypoints(write(data))


def test_mmpose_samples_are_what_mmpose_writes(tmp_path):
    """The committed mmpose samples are exactly what the installed mmpose's own code writes."""
    pytest.importorskip("mmpose", reason="mmpose (the detector stack, bash install.sh) is not installed")
    import importlib.util

    from dpmesh_infer.detect.mmpose_compat import import_mmpose

    import_mmpose()
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    for path in make.write_mmpose(tmp_path) + make.write_alphapose(tmp_path) + make.write_cocoapi(tmp_path):
        assert path.read_bytes() == (SAMPLES / path.name).read_bytes(), path.name


# ------------------------------------------------------------------------------------------- AlphaPose

@pytest.mark.parametrize("name, fmt, joints", [("alphapose_results.json", "coco17", 17),
                                               ("alphapose_halpe26.json", "halpe26", 26),
                                               ("alphapose_halpe136.json", "halpe136", 136)])
def test_alphapose_results(name, fmt, joints):
    """AlphaPose's default output (alphapose/utils/pPose_nms.py write_json): per person ``image_id`` =
    the image's file name, ``category_id`` 1, ``keypoints`` 3 x J, ``score`` (proposal score, above 1),
    ``box`` [x, y, w, h], ``idx``; J = 17 (COCO), 26 (Halpe-26) or 136 (Halpe-136)."""
    raw = _json(name)
    kps = read_keypoints(sample(name))
    assert kps.file_format == "alphapose-results" and set(kps.per_image) == {"scene.jpg"}
    persons = kps.lookup("photos/scene.jpg")
    assert len(persons) == 2 and kps.lookup("other.jpg") is None
    coco = read_keypoints(sample("alphapose_results.json")).per_image["scene.jpg"]
    for p, entry, c in zip(persons, raw, coco):
        assert p.joint_format == fmt and p.keypoints.shape == (joints, 3) and p.score == entry["score"] > 1
        np.testing.assert_array_equal(p.bbox, entry["box"])
        kp30 = p.kp30()
        body = [J[n] for n in COCO17_NAMES] + [J["Pelvis"]]
        np.testing.assert_array_equal(kp30[body, :2], c.kp30()[body, :2])  # the same COCO body joints
        if fmt != "coco17":  # Halpe's head top and neck are used as they are
            np.testing.assert_array_equal(kp30[[J["Head_top"], J["Neck"]]], p.keypoints[[17, 18]])


def test_alphapose_openpose_form():
    """``--format open``: {image name: {"version": "AlphaPose v0.3", "people": [{"pose_keypoints_2d": 54}]}}
    (write_json: neck appended as the shoulder mean, then indexarr into COCO-17 + neck = OpenPose-18 order)."""
    kps = read_keypoints(sample("alphapose_openpose.json"))
    assert kps.file_format == "alphapose-openpose"
    op = kps.lookup("scene.jpg")
    coco = read_keypoints(sample("alphapose_results.json")).lookup("scene.jpg")
    for a, b in zip(op, coco):
        assert a.joint_format == "openpose18"
        np.testing.assert_allclose(a.kp30()[:, :2], b.kp30()[:, :2])  # same joints, Neck = shoulder mean


def test_alphapose_cmu_form(tmp_path):
    """``--format cmu``: the same with {"bodies": [{"joints": 54 numbers}]} (CMU-Pose's layout)."""
    people = _json("alphapose_openpose.json")["scene.jpg"]["people"]
    path = tmp_path / "cmu.json"
    path.write_text(json.dumps({"scene.jpg": {"version": "AlphaPose v0.3",
                                              "bodies": [{"joints": p["pose_keypoints_2d"]} for p in people]}}))
    kps = read_keypoints(path)
    assert kps.file_format == "alphapose-cmu"
    for a, b in zip(kps.lookup("scene.jpg"), read_keypoints(sample("alphapose_openpose.json")).lookup("scene.jpg")):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


# ------------------------------------------------------------------------------------------- COCO

def test_cocoapi_results_coco_2014_and_2017_names():
    """cocoapi keypoint results (the list ``COCO.loadRes`` takes: image_id, category_id, keypoints, score)
    with numeric ids match COCO 2017 names (000000000136.jpg) and COCO 2014 names
    (COCO_val2014_000000000136.jpg); entries no image matched are listed."""
    kps = read_keypoints(sample("cocoapi_results.json"))
    assert kps.file_format == "coco-results" and set(kps.per_image) == {136, 137}
    assert len(kps.lookup("val2014/COCO_val2014_000000000136.jpg")) == 2
    assert len(kps.lookup("000000000136.jpg")) == 2 and len(kps.lookup("136.png")) == 2
    assert kps.lookup("COCO_val2014_000000000138.jpg") is None and kps.lookup("photo136.jpg") is None
    assert kps.unmatched(["COCO_val2014_000000000136.jpg"]) == [(137, 1)]
    assert kps.unmatched(["COCO_train2014_000000000137.jpg", "000000000136.jpg"]) == []
    msg = kps.missing_message("COCO_val2014_000000000138.jpg")
    assert "has no keypoints for image COCO_val2014_000000000138.jpg (its entries name 2 image ids: 136, 137" in msg
    assert "COCO_val2014_000000000136.jpg" in msg


def test_cocoapi_accepts_our_sample():
    """The sample is a results file the real cocoapi loads (pycocotools COCO.loadRes)."""
    coco_mod = pytest.importorskip("pycocotools.coco", reason="pycocotools is not installed")
    gt = coco_mod.COCO()
    gt.dataset = {"images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 640, "height": 480}
                             for i in (136, 137)],
                  "annotations": [], "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17_NAMES)}]}
    gt.createIndex()
    res = gt.loadRes(str(sample("cocoapi_results.json")))
    assert len(res.getAnnIds(imgIds=[136])) == 2


def test_coco_annotations_flags_and_unlabelled_people():
    """mmpose's test_coco.json (COCO val2017 annotations): visibility flags 0/1/2 -> confidences 0/1/1;
    people with num_keypoints 0 (every flag 0) carry the box-only skip reason unless keep_box_only."""
    raw = _json("mmpose_test_coco.json")
    kps = read_keypoints(sample("mmpose_test_coco.json"))
    assert kps.file_format == "coco-table" and len(kps) == 4
    persons = kps.lookup("val2017/000000040083.jpg")
    anns = [a for a in raw["annotations"] if a["image_id"] == 40083]
    assert len(persons) == len(anns) == 3
    for p, a in zip(persons, anns):
        flags = np.asarray(a["keypoints"]).reshape(17, 3)[:, 2]
        assert set(flags) <= {0, 1, 2}
        np.testing.assert_array_equal(p.keypoints[:, 2], (flags > 0).astype(float))
        np.testing.assert_array_equal(p.bbox, a["bbox"])
        assert (p.skip_reason == BOX_ONLY_REASON) == (a["num_keypoints"] == 0)
    assert 1 in np.asarray(anns[0]["keypoints"])[2::3]  # a v=1 (labelled, occluded) joint -> 1.0 above
    kept = read_keypoints(sample("mmpose_test_coco.json"), keep_box_only=True)
    assert all(p.skip_reason is None for ps in kept.per_image.values() for p in ps)


def test_crowd_regions_and_detection_scores_untouched(tmp_path):
    gt = _json("mmpose_test_coco.json")
    gt["annotations"][0]["iscrowd"] = 1
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    kps = read_keypoints(path, keep_box_only=True)
    assert kps.lookup("000000000785.jpg")[0].skip_reason == CROWD_REASON
    # a results table holds detection scores, never flags: a score of 2 stays 2
    res = {"images": gt["images"], "results": [{**gt["annotations"][1], "iscrowd": 0}]}
    path.write_text(json.dumps(res))
    p = read_keypoints(path).lookup("000000040083.jpg")[0]
    assert p.keypoints[0, 2] == 2.0


def test_unlabelled_people_are_skipped_with_the_reason(tiny_pipeline, scene):
    """The pipeline does not reconstruct a person from the box alone when the file says not to."""
    image, kp = scene
    box = np.array([100.0, 60.0, 180.0, 360.0])
    empty = np.zeros((17, 3))
    persons = [KeypointPerson(kp[0], "coco17", 0.9), KeypointPerson(empty, "coco17", None, box, BOX_ONLY_REASON),
               KeypointPerson(kp[1], "coco17", 0.8)]
    res = tiny_pipeline(image, keypoints=persons)[0]
    assert len(res.persons) == 2 and res.skipped == [(1, BOX_ONLY_REASON)]
    persons[1].skip_reason = None  # --keep-box-only: reconstructed from the box
    res = tiny_pipeline(image, keypoints=persons)[0]
    assert len(res.persons) == 3 and res.skipped == []


# ------------------------------------------------------------------------------------------- joint sets

def test_halpe_and_wholebody_body_joints_by_name():
    rng = np.random.default_rng(0)
    coco = rng.uniform(0, 100, (1, 17, 3))
    whole = np.concatenate([coco, rng.uniform(0, 100, (1, 116, 3))], axis=1)
    np.testing.assert_array_equal(to_j30(whole, "coco_wholebody"), coco17_to_j30(coco))
    h136 = rng.uniform(0, 100, (1, 136, 3))
    np.testing.assert_array_equal(to_j30(h136, "halpe136"), to_j30(h136[:, :26], "halpe26"))
    with pytest.raises(ValueError, match="unknown joint format 'h36m'"):
        to_j30(coco, "h36m")


# ------------------------------------------------------------------------------------------- folders

def test_folder_of_per_image_files(tmp_path):
    """mmpose's pred_out_dir (<image stem>.json) and OpenPose's --write_json (<stem>_keypoints.json)."""
    d = tmp_path / "pred"
    (d / "sub").mkdir(parents=True)
    shutil.copy(sample("mmpose_inferencer_scene.json"), d / "a.json")
    shutil.copy(sample("mmpose_demo_scene.json"), d / "sub" / "b.json")
    op = _json("alphapose_openpose.json")["scene.jpg"]
    (d / "c_keypoints.json").write_text(json.dumps(op))
    kps = read_keypoints(d)
    assert kps.by_stem and set(kps.per_image) == {"a", "sub/b", "c"}
    assert kps.file_format == "folder (mmpose-demo, mmpose-inferencer, openpose)"
    assert len(kps.lookup("photos/a.jpg")) == 2 and len(kps.lookup("/x/sub/b.png")) == 2
    assert kps.lookup("c.jpg")[0].joint_format == "openpose18"
    assert kps.lookup("d.jpg") is None and kps.unmatched(["a.jpg", "b.jpg"]) == [("c", 2)]
    shutil.copy(sample("cocoapi_results.json"), d / "several.json")
    with pytest.raises(KeypointFileError, match=r"several.json: holds 2 image ids: 136, 137: a keypoint folder"):
        read_keypoints(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KeypointFileError, match="found none"):
        read_keypoints(empty)


# ------------------------------------------------------------------------------------------- CLI

def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def scene_jpg(tmp_path_factory):
    from dpmesh_infer.stand_ins.scene import synthetic_scene

    image, _ = synthetic_scene()
    path = tmp_path_factory.mktemp("scene") / "scene.jpg"
    Image.fromarray(image).save(path, quality=95)
    return path


def test_predict_accepts_single_image_files(scene_jpg, tiny_weights, tmp_path):
    for name in ("mmpose_inferencer_scene.json", "mmpose_demo_scene.json", "alphapose_halpe26.json"):
        out = tmp_path / f"{name}.out.json"
        r = _run("predict", scene_jpg, "--keypoints", sample(name), "--weights", tiny_weights, "--out", out)
        assert r.exit_code == 0, r.output
        assert len(json.loads(out.read_text())["persons"]) == 2


def test_predict_folder_runs_cocoapi_frames_and_coco_table(scene_jpg, tiny_weights, tmp_path):
    """Folder runs: cocoapi ids against COCO 2014 names (the unmatched id is reported), mmpose video frames
    against extracted frame images, mmpose's COCO annotations with num_keypoints-0 people skipped."""
    coco = tmp_path / "val2014"
    coco.mkdir()
    shutil.copy(scene_jpg, coco / "COCO_val2014_000000000136.jpg")
    r = _run("predict", coco, "-k", sample("cocoapi_results.json"), "-w", tiny_weights, "-o", tmp_path / "o1", "-q")
    assert r.exit_code == 0, r.output
    assert "1 person under 1 image id matched no input image: 137" in " ".join(r.output.split())
    assert len(json.loads((tmp_path / "o1/COCO_val2014_000000000136/people.json").read_text())["persons"]) == 2

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (0, 1):
        shutil.copy(scene_jpg, frames / f"{i:06d}.jpg")
    r = _run("predict", frames, "-k", sample("mmpose_inferencer_clip.json"), "-w", tiny_weights, "-o",
             tmp_path / "o2", "-q")
    assert r.exit_code == 0, r.output
    assert all(len(json.loads((tmp_path / f"o2/{i:06d}/people.json").read_text())["persons"]) == 2 for i in (0, 1))

    val = tmp_path / "val2017"
    val.mkdir()
    Image.new("RGB", (500, 333), (90, 120, 150)).save(val / "000000040083.jpg")
    r = _run("predict", val, "-k", sample("mmpose_test_coco.json"), "-w", tiny_weights, "-o", tmp_path / "o3", "-q")
    assert r.exit_code == 0, r.output
    line = json.loads((tmp_path / "o3/manifest.jsonl").read_text().splitlines()[-1])
    assert line["status"] == "done" and line["persons"] == 2
    assert line["skipped_persons"] == [{"index": 2, "reason": BOX_ONLY_REASON}]
    r = _run("predict", val, "-k", sample("mmpose_test_coco.json"), "-w", tiny_weights, "-o", tmp_path / "o4", "-q",
             "--keep-box-only")
    assert r.exit_code == 0, r.output
    line = json.loads((tmp_path / "o4/manifest.jsonl").read_text().splitlines()[-1])
    assert line["persons"] == 3 and line["skipped_persons"] == []
