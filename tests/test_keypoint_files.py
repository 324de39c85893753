"""Keypoint files: every accepted format, round trips, lookup, error messages, image-bounds check."""

import json
import logging

import numpy as np
import pytest

from dpmesh_infer.errors import InputError, KeypointFileError
from dpmesh_infer.geometry.joints import coco17_to_j30
from dpmesh_infer.keypoint_files import (
    KeypointPerson,
    person_boxes,
    read_keypoints,
    read_openpose_json,
    stack_kp30,
    validate_against_image,
    write_keypoints_json,
)


def _coco_kp(seed, n=17):
    rng = np.random.default_rng(seed)
    kp = np.column_stack([rng.uniform(0, 600, n), rng.uniform(0, 400, n), rng.uniform(0, 1, n)])
    return kp.round(3)


def _write(tmp_path, data, name="kp.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_coco_results_single_image(tmp_path):
    a, b = _coco_kp(0), _coco_kp(1)
    path = _write(tmp_path, [
        {"image_id": 1, "category_id": 1, "keypoints": a.ravel().tolist(), "score": 0.9, "bbox": [1, 2, 30, 40]},
        {"image_id": 1, "category_id": 1, "keypoints": b.ravel().tolist(), "score": 1.7},  # score > 1 accepted
    ])  # fmt: skip
    # image_id given: matched by numeric stem
    kps = read_keypoints(path)
    assert kps.file_format == "coco-results" and not kps.single_image
    persons = kps.lookup("some/dir/000000000001.jpg")
    assert len(persons) == 2 and persons[0].joint_format == "coco17"
    np.testing.assert_array_equal(persons[0].keypoints, a)
    np.testing.assert_array_equal(persons[0].bbox, [1, 2, 30, 40])
    assert persons[1].bbox is None and persons[1].score == 1.7
    assert kps.lookup("000000000002.jpg") is None

    path = _write(tmp_path, [{"keypoints": a.ravel().tolist(), "score": 0.9}], "single.json")
    kps = read_keypoints(path)
    assert kps.single_image and len(kps.lookup("anything.png")) == 1
    kp30 = kps.lookup("x.jpg")[0].kp30()
    np.testing.assert_array_equal(kp30, coco17_to_j30(a[None])[0])
    np.testing.assert_array_equal(kp30[24], a[0])  # Nose -> slot 24


def test_coco_results_with_file_names_lookup(tmp_path):
    entries = [{"file_name": "seq1/a.jpg", "keypoints": _coco_kp(0).ravel().tolist(), "score": 0.5},
               {"file_name": "seq1/b.jpg", "keypoints": _coco_kp(1).ravel().tolist(), "score": 0.5},
               {"file_name": "seq1/b.jpg", "keypoints": _coco_kp(2).ravel().tolist(), "score": 0.5},
               {"file_name": "seq2/a.jpg", "keypoints": _coco_kp(3).ravel().tolist(), "score": 0.5,
                "category_id": 2}]  # not a person: skipped
    kps = read_keypoints(_write(tmp_path, entries))
    assert set(kps.per_image) == {"seq1/a.jpg", "seq1/b.jpg"}
    assert len(kps.lookup("seq1/b.jpg")) == 2
    assert len(kps.lookup("/data/frames/seq1/b.jpg", root="/data/frames")) == 2
    assert len(kps.lookup("elsewhere/b.jpg")) == 2  # basename fallback
    assert kps.lookup("c.jpg") is None

    entries[3].pop("category_id")
    kps = read_keypoints(_write(tmp_path, entries))
    assert len(kps.lookup("seq2/a.jpg")) == 1
    assert len(kps.lookup("/abs/seq2/a.jpg")) == 1  # path suffix disambiguates before the basename
    with pytest.raises(KeypointFileError, match=r"several entries by file name \(seq1/a.jpg, seq2/a.jpg\)"):
        kps.lookup("other/a.jpg")


def test_coco_table_format(tmp_path):
    gt = _coco_kp(0)
    gt[:, 2] = 2  # ground-truth visibility flags: labelled (1, 2) -> confidence 1.0
    data = {"info": {}, "categories": [{"id": 1, "name": "person"}],
            "images": [{"id": 7, "file_name": "img7.jpg"}, {"id": 8, "file_name": "img8.jpg"}],
            "annotations": [{"image_id": 7, "keypoints": gt.ravel().tolist(), "num_keypoints": 17, "iscrowd": 0}]}
    kps = read_keypoints(_write(tmp_path, data))
    assert kps.file_format == "coco-table" and kps.lookup("img8.jpg") == []
    p = kps.lookup("img7.jpg")[0]
    assert p.score is None and p.kp30()[1, 2] == 1.0 and p.skip_reason is None
    data["results"] = data.pop("annotations")
    assert len(read_keypoints(_write(tmp_path, data)).lookup("img7.jpg")) == 1
    data["results"][0]["image_id"] = 9
    with pytest.raises(KeypointFileError, match=r"results\[0\]: 'image_id' 9 is not an id listed in 'images'"):
        read_keypoints(_write(tmp_path, data))


@pytest.mark.parametrize("n", [18, 25])
def test_openpose(tmp_path, n):
    kp = _coco_kp(4, n)
    kp[3] = 0  # OpenPose writes missing joints as zeros
    data = {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": kp.ravel().tolist(),
                                        "face_keypoints_2d": []}]}
    path = _write(tmp_path, data, "frame_keypoints.json")
    kps = read_keypoints(path)
    assert kps.file_format == "openpose" and kps.single_image
    (p,) = kps.lookup("frame.jpg")
    assert p.joint_format == f"openpose{n}" and p.keypoints.shape == (n, 3)
    assert p.kp30()[24].tolist() == kp[0].tolist()  # Nose
    assert read_openpose_json(path)[0].joint_format == p.joint_format
    old = _write(tmp_path, {"people": [{"pose_keypoints": kp.ravel().tolist()}]}, "old.json")
    assert read_openpose_json(old)[0].keypoints.shape == (n, 3)


def test_own_format_round_trip(tmp_path):
    per_image = {
        "a.jpg": [KeypointPerson(_coco_kp(0), "coco17", 0.8, np.array([1.5, 2.0, 30.0, 40.0])),
                  KeypointPerson(_coco_kp(1, 25), "openpose25", None, None)],
        "sub/b.jpg": [],
        "c.jpg": [KeypointPerson(_coco_kp(2, 18), "openpose18", 1.2, None)],
    }
    path = tmp_path / "out.json"
    write_keypoints_json(path, per_image)
    doc = json.loads(path.read_text())
    assert doc["format"] == "dpmesh-keypoints" and doc["version"] == 1 and len(doc["people"]) == 3
    kps = read_keypoints(path)
    assert kps.file_format == "dpmesh-keypoints" and list(kps.per_image) == list(per_image)
    for name, persons in per_image.items():
        got = kps.per_image[name]
        assert len(got) == len(persons)
        for g, p in zip(got, persons):
            np.testing.assert_array_equal(g.keypoints, p.keypoints)
            assert (g.joint_format, g.score) == (p.joint_format, p.score)
            assert (g.bbox is None and p.bbox is None) or np.array_equal(g.bbox, p.bbox)
    for single in ([], [KeypointPerson(_coco_kp(0), "coco17", 0.8, None)]):
        write_keypoints_json(path, {None: single})
        back = read_keypoints(path)
        assert back.single_image and len(back.lookup("z.jpg")) == len(single)
    with pytest.raises(ValueError, match="mixes a None key"):
        write_keypoints_json(path, {None: [], "a.jpg": []})


def test_stack_helpers():
    persons = [KeypointPerson(_coco_kp(0), "coco17", 0.8, np.array([1.0, 2, 3, 4])),
               KeypointPerson(_coco_kp(1, 18), "openpose18")]
    kp30 = stack_kp30(persons)
    assert kp30.shape == (2, 30, 3) and kp30[1, 12].tolist() == persons[1].keypoints[1].tolist()  # OP Neck
    assert stack_kp30([]).shape == (0, 30, 3)
    assert person_boxes(persons)[0].tolist() == [1, 2, 3, 4] and person_boxes(persons)[1] is None


GOOD = _coco_kp(0).ravel().tolist()


def _bad(keypoints=GOOD, **extra):
    return [{"keypoints": GOOD, "score": 0.9}, {"keypoints": keypoints, "score": 0.9, **extra}]


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not valid JSON \(line 1, column 2: .*expected one of: \(1\) COCO keypoint results"),
    ({"foo": 1}, r"unrecognised keypoint file; expected one of: .*pose_keypoints_2d.*dpmesh-keypoints"),
    (_bad(GOOD[:50]),
     r"entry\[1\]: 'keypoints' has 50 numbers, expected 51 \(coco17: 17 joints x \[x, y, score\]\)"),
    (_bad(GOOD[:48] + [1, 2, -0.2] + GOOD[51:]), r"entry\[1\]: joint 16 \(R_Ankle\) has negative confidence -0.2; "
                                                 r"scores must be >= 0 \(values above 1 are accepted\)"),
    ('[{"keypoints": [NaN' + ", 1" * 50 + "]}]", r"entry\[0\]: 'keypoints' contains a non-finite value \(NaN or "
                                                 r"infinity\) at position 0"),
    ('[{"keypoints": [1, Infinity' + ", 1" * 49 + "]}]", r"non-finite value .* at position 1"),
    (_bad(["a"] * 51), r"entry\[1\]: 'keypoints' must be a list of numbers"),
    ([GOOD], r"entry\[0\]: expected an object with 'keypoints', got list"),
    ([{"score": 1}], r"entry\[0\]: missing 'keypoints'"),
    (_bad(bbox=[1, 2, 3]), r"entry\[1\]: 'bbox' must be \[x, y, width, height\] with width, height >= 0"),
    (_bad(bbox=[1, 2, -3, 4]), r"'bbox' must be \[x, y, width, height\]"),
    (_bad(score="high"), r"entry\[1\]: 'score' must be a finite number, got 'high'"),
    (_bad(file_name="a.jpg"), r"entry\[1\]: entries mix 'file_name', 'image_id' and neither"),
    (_bad(image_id=7.5), r"'image_id' must be an integer \(COCO id\) or a file name \(AlphaPose\), got 7.5"),
    (_bad(image_id="7"), r"entry\[1\]: entries mix 'file_name', 'image_id' and neither"),
    ({"people": [{"pose_keypoints_2d": [1] * 60}]},
     r"people\[0\]: 'pose_keypoints_2d' has 60 numbers, expected 54 \(openpose18: .*\) or 75 \(openpose25: 25 joints"),
    ({"people": [{"pose_keypoints_2d": GOOD}]}, r"has 51 numbers, expected 54"),
    ({"people": {}}, r"'people' must be a list"),
    ({"format": "dpmesh-keypoints", "version": 2, "people": []},
     r"unsupported format 'dpmesh-keypoints' version 2"),
    ({"format": "dpmesh-keypoints", "version": 1, "people": [], "extra": 1}, r"unknown keys: \['extra'\]"),
    ({"format": "dpmesh-keypoints", "version": 1, "people": [{"keypoints": GOOD, "joint_format": "h36m"}]},
     r"people\[0\]: 'joint_format' 'h36m' is not one of \['coco17', 'coco_wholebody', 'halpe136', 'halpe26', "
     r"'openpose18', 'openpose25'\]"),
    ({"format": "dpmesh-keypoints", "version": 1, "people": [{"keypoints": GOOD, "joint_format": "openpose18"}]},
     r"'keypoints' has 51 numbers, expected 54 \(openpose18"),
    ({"images": [{"id": "1", "file_name": "a.jpg"}], "annotations": []},
     r"images\[0\]: expected \{\"id\": integer"),
])  # fmt: skip
def test_error_messages(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(KeypointFileError, match=message) as info:
        read_keypoints(path)
    assert str(info.value).startswith(str(path))
    assert isinstance(info.value, InputError) and info.value.exit_code == 2


def test_missing_file_and_openpose_reader_errors(tmp_path):
    with pytest.raises(KeypointFileError, match=r"keypoint file .*nope.json not found"):
        read_keypoints(tmp_path / "nope.json")
    with pytest.raises(KeypointFileError, match=r"not an OpenPose file \(no 'people' list\)"):
        read_openpose_json(_write(tmp_path, [{"keypoints": GOOD}]))


def test_validate_against_image(caplog):
    kp = np.array([[-49.0, 10, 0.9], [-51.0, 10, 0.9], [10, 129.0, 0.8], [10, 129.5, 0.8], [0, 0, 0]])
    with caplog.at_level(logging.WARNING):
        clean, dropped = validate_against_image(kp, 100, 80, where="a.jpg person 0")  # margin 50 px
    assert dropped.tolist() == [False, True, False, True, False]
    np.testing.assert_array_equal(clean[[1, 3]], 0)
    np.testing.assert_array_equal(clean[[0, 2, 4]], kp[[0, 2, 4]])
    assert kp[1, 0] == -51  # input untouched
    expected = "a.jpg person 0: 2 keypoint(s) more than 50 px outside the 100x80 image were treated as missing"
    assert expected in caplog.text
    _, dropped = validate_against_image(kp[None], 100, 80, margin_frac=1.0)
    assert dropped.shape == (1, 5) and not dropped.any()
