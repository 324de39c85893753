"""The mmpose keypoint detector: random-init networks built from mmpose's shipped configs, saved as
state-dict checkpoints, loaded through the real loading path and run on generated images.

Detections of random networks are meaningless; these tests check the plumbing: shapes and types,
agreement with mmpose's own inference function, thresholds, batching, the weights cache, the
offline error, strict loading, the keypoint JSON and the CLI, and the compatibility module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import sys
import urllib.error
import warnings

import numpy as np
import pytest

pytest.importorskip("mmpose")
torch = pytest.importorskip("torch")

from dpmesh_infer.detect import detectors as D  # noqa: E402
from dpmesh_infer.detect import mmpose_compat  # noqa: E402
from dpmesh_infer.errors import WeightsError  # noqa: E402

RTMO = "rtmo-s"
TOPDOWN = "rtmdet-m+rtmpose-m"
# Random RTMO-s after the config's init: every person score is ~0.0104 and every keypoint score ~0.5.
ALL = dict(det_thr=0.0, kpt_thr=0.0, min_keypoints=0, max_candidates=8)


def _quiet_mmengine():
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance().setLevel(logging.ERROR)


def _images(seed: int = 0):
    """Noise with a few filled shapes, two sizes (neither is the 640x640 network input)."""
    rng = np.random.RandomState(seed)
    a = (rng.rand(240, 320, 3) * 255).astype(np.uint8)
    a[40:200, 100:160] = (200, 30, 30)
    b = (rng.rand(300, 180, 3) * 255).astype(np.uint8)
    b[100:280, 50:120] = (30, 200, 60)
    return [a, b]


@pytest.fixture(scope="module")
def rtmo(tmp_path_factory):
    """(in-memory random RTMO-s, its checkpoint path, config path)."""
    from dpmesh_infer.stand_ins.detector import write_random_rtmo_checkpoint

    return write_random_rtmo_checkpoint(tmp_path_factory.mktemp("rtmo") / "rtmo-s-random.pth", name=RTMO)


@pytest.fixture(scope="module")
def detector(rtmo):
    from dpmesh_infer.detect.mmpose_detector import KeypointDetector, Thresholds

    _, path, cfg = rtmo
    return KeypointDetector.from_files(cfg, path, "cpu", thresholds=Thresholds(**ALL), batch_size=2)


@pytest.fixture(scope="module")
def batch_result(detector):
    """One batched run over both images with everything kept (the most expensive call, done once)."""
    from dpmesh_infer.detect.mmpose_detector import Thresholds

    detector.thresholds = Thresholds(**ALL)
    return detector.detect(_images())


# --------------------------------------------------------------------------- outputs


def test_outputs_shapes_types_and_order(batch_result):
    people = batch_result.people
    assert len(people) == 2
    for image, persons in zip(_images(), people):
        h, w = image.shape[:2]
        assert 1 <= len(persons) <= ALL["max_candidates"]
        scores = [p.score for p in persons]
        assert scores == sorted(scores, reverse=True)
        for p in persons:
            assert p.keypoints.shape == (17, 3) and p.keypoints.dtype == np.float64
            assert p.bbox.shape == (4,) and p.bbox.dtype == np.float64
            assert isinstance(p.score, float) and 0.0 <= p.score <= 1.0
            assert np.isfinite(p.keypoints).all()
            x, y, bw, bh = p.bbox  # clipped to the image
            assert bw >= 0 and bh >= 0 and x >= 0 and y >= 0 and x + bw <= w and y + bh <= h


def test_batched_matches_mmpose_one_image_at_a_time(rtmo, batch_result):
    """The batched run equals mmpose's own single-image API on the in-memory network, image by image
    (checks the batching, the weights round trip, the RGB->BGR order and the coordinate mapping)."""
    from mmpose.apis import inference_bottomup

    model, _, _ = rtmo
    model.test_cfg.update(score_thr=0.0, nms_pre=ALL["max_candidates"])
    for image, persons in zip(_images(), batch_result.people):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = inference_bottomup(model, np.ascontiguousarray(image[..., ::-1]))[0].pred_instances
        order = np.argsort(-ref.bbox_scores, kind="stable")
        assert len(order) == len(persons)
        for n, p in zip(order, persons):
            np.testing.assert_allclose(p.keypoints[:, :2], ref.keypoints[n], atol=1e-2)
            np.testing.assert_allclose(p.keypoints[:, 2], ref.keypoint_scores[n], atol=1e-4)
            np.testing.assert_allclose(p.score, ref.bbox_scores[n], atol=1e-5)


def test_det_thr_above_every_score_finds_nobody(detector):
    from dpmesh_infer.detect.mmpose_detector import Thresholds

    detector.thresholds = Thresholds(**{**ALL, "det_thr": 1.01})
    result = detector.detect(_images()[:1])
    assert result.people == [[]]


def test_kpt_thr_and_max_people_drop_with_reasons(batch_result):
    """select_people on the raw detections of the batched run (no second forward pass)."""
    from dpmesh_infer.detect.mmpose_detector import Thresholds, select_people

    persons = batch_result.people[0]
    kp = np.stack([p.keypoints[:, :2] for p in persons])
    ks = np.stack([p.keypoints[:, 2] for p in persons])
    boxes = np.stack([np.r_[p.bbox[:2], p.bbox[:2] + p.bbox[2:]] for p in persons])
    scores = np.array([p.score for p in persons])
    n = len(persons)
    assert n >= 3

    kept, dropped = select_people(0, kp, ks, boxes, scores, Thresholds(**{**ALL, "max_people": 2}))
    assert [p.score for p in kept] == [p.score for p in persons[:2]]
    assert len(dropped) == n - 2 and all("max_people 2" in d.reason for d in dropped)

    kept, dropped = select_people(0, kp, ks, boxes, scores, Thresholds(det_thr=0.0, kpt_thr=0.9, min_keypoints=1))
    assert kept == [] and len(dropped) == n
    assert all("0 of 17 keypoints with score >= kpt_thr 0.9" in d.reason for d in dropped)

    kept, dropped = select_people(0, kp, ks, boxes, scores, Thresholds(det_thr=0.5))
    assert kept == [] and all("< det_thr 0.5" in d.reason for d in dropped)

    bad = kp.copy()
    bad[0, 3, 0] = np.nan
    kept, dropped = select_people(0, bad, ks, boxes, scores, Thresholds(**ALL))
    assert len(kept) == n - 1 and "non-finite" in dropped[0].reason


def test_input_validation(detector):
    from dpmesh_infer.detect.mmpose_detector import Thresholds
    from dpmesh_infer.errors import InputError

    with pytest.raises(InputError, match="RGB uint8"):
        detector.detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(InputError, match="max_people"):
        Thresholds(max_people=-1)


# --------------------------------------------------------------------------- loading


def test_strict_loading_names_missing_keys(rtmo, tmp_path):
    from dpmesh_infer.detect.mmpose_detector import load_weights_strict

    model, path, _ = rtmo
    state = torch.load(path, weights_only=True)["state_dict"]
    state.pop("head.dcc.x_fc.weight")  # a parameter: must be reported
    state.pop("head.dcc.x_bins")  # a config-derived buffer: may be absent, as in published files
    state["head.unexpected.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(WeightsError) as e:
        load_weights_strict(model, bad)
    assert "head.dcc.x_fc.weight" in str(e.value) and "head.unexpected.weight" in str(e.value)
    assert "x_bins" not in str(e.value)


class _Boom:
    """A foreign global in a checkpoint's meta; unpickling must never run it."""

    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Boom.ran = True
    return {}


def _published_like(rtmo, path):
    """A checkpoint shaped like OpenMMLab's: numpy arrays and a foreign object in ``meta``."""
    model, _, _ = rtmo
    meta = {"dataset_meta": {"sigmas": np.arange(17, dtype=np.float32) / 10, "flip_indices": list(range(17))},
            "mmengine_version": "0.10.7", "foreign": _Boom()}  # fmt: skip
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def rtmo_spec_for(monkeypatch):
    """Point the rtmo-s table entry at a given url / sha256 (the real file cannot be downloaded here)."""

    def patch(url: str, sha256: str) -> D.ModelFiles:
        spec = D.DETECTORS[RTMO]
        files = dataclasses.replace(spec.pose, url=url, sha256=sha256)
        monkeypatch.setitem(D.DETECTORS, RTMO, dataclasses.replace(spec, pose=files))
        return files

    return patch


def test_cache_placed_file_is_verified_converted_and_loaded(rtmo, tmp_path, rtmo_spec_for):
    from dpmesh_infer.detect.mmpose_detector import KeypointDetector, Thresholds

    real = D.DETECTORS[RTMO].pose
    det_dir = tmp_path / "w" / "detectors"
    det_dir.mkdir(parents=True)
    placed = det_dir / real.file_name
    digest = _published_like(rtmo, placed)
    with pytest.raises(Exception):  # the published-like file does not load with plain weights_only=True
        torch.load(placed, weights_only=True)
    rtmo_spec_for(real.url, digest[:8])

    det = KeypointDetector.from_name(RTMO, tmp_path / "w", "cpu", thresholds=Thresholds(**ALL))  # no download
    converted = det_dir / real.converted_name
    assert converted.is_file() and placed.is_file() and not _Boom.ran
    assert set(torch.load(converted, weights_only=True)) == {"state_dict", "meta"}
    loaded, original = det.pose_model.state_dict(), rtmo[0].state_dict()
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)


def test_checksum_mismatch(rtmo, tmp_path, rtmo_spec_for):
    real = D.DETECTORS[RTMO].pose
    (tmp_path / "detectors").mkdir()
    _published_like(rtmo, tmp_path / "detectors" / real.file_name)
    rtmo_spec_for(real.url, "00000000")
    with pytest.raises(D.DetectorWeightsError, match="checksum mismatch"):
        D.fetch_detector(RTMO, tmp_path, progress=False)


def test_download_via_url_is_converted_and_temp_removed(rtmo, tmp_path, rtmo_spec_for, monkeypatch):
    src = tmp_path / "server" / "rtmo-s-published-1234abcd_20240101.pth"
    src.parent.mkdir()
    digest = _published_like(rtmo, src)
    files = rtmo_spec_for(src.as_uri(), digest[:8])
    monkeypatch.delenv(D.NO_DOWNLOAD_ENV, raising=False)
    (path,) = D.fetch_detector(RTMO, tmp_path / "w", progress=False)
    assert path == tmp_path / "w" / "detectors" / files.converted_name
    assert sorted(p.name for p in path.parent.iterdir()) == [files.converted_name]  # no temp, no original
    assert torch.load(path, weights_only=True)["state_dict"].keys() == rtmo[0].state_dict().keys()
    assert D.fetch_detector(RTMO, tmp_path / "w", progress=False) == [path]  # cached: no second download


def test_offline_error_names_file_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv(D.NO_DOWNLOAD_ENV, "1")
    spec = D.DETECTORS[TOPDOWN]
    with pytest.raises(D.DetectorWeightsError) as e:
        D.fetch_detector(TOPDOWN, tmp_path)
    msg = str(e.value)
    for files in spec.files():  # both networks are named in one message
        assert files.url in msg and str(tmp_path / "detectors" / files.file_name) in msg
    assert "DPMESH_NO_DOWNLOAD" in msg and not (tmp_path / "detectors").exists()

    def fail(url, dest, progress):
        raise urllib.error.URLError("no route to host")

    monkeypatch.delenv(D.NO_DOWNLOAD_ENV)
    monkeypatch.setattr(D, "_download", fail)
    with pytest.raises(D.DetectorWeightsError, match="no route to host") as e:
        D.fetch_detector(RTMO, tmp_path)
    assert D.DETECTORS[RTMO].pose.url in str(e.value)
    assert list((tmp_path / "detectors").iterdir()) == []  # the partial file is removed


def test_table_entries_are_consistent():
    for name, spec in D.DETECTORS.items():
        assert spec.name == name
        for f in spec.files():
            assert f.url.startswith("https://download.openmmlab.com/") and f.url.endswith(".pth")
            assert len(f.sha256) in (8, 64) and f.sha256 in f.file_name
            assert D.config_path(f.config).is_file()
    assert D.DEFAULT_DETECTOR == "rtmo-l"
    with pytest.raises(D.UnknownDetectorError, match="rtmo-l"):
        D.get_spec("nope")


# --------------------------------------------------------------------------- top-down pair


def test_topdown_rtmdet_rtmpose(tmp_path):
    mmpose_compat.import_mmpose()
    _quiet_mmengine()
    from mmdet.apis import init_detector
    from mmpose.apis import init_model

    from dpmesh_infer.detect.mmpose_detector import KeypointDetector, Thresholds

    spec = D.DETECTORS[TOPDOWN]
    person_cfg = tmp_path / "person.py"  # the shipped config, at most 3 boxes per image to keep this fast
    person_cfg.write_text(f"_base_ = {str(D.config_path(spec.person.config))!r}\n"
                          "model = dict(test_cfg=dict(max_per_img=3))\n")  # fmt: skip
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = init_detector(str(person_cfg), None, device="cpu")
        det.init_weights()
        for conv in det.bbox_head.rtm_cls:  # every anchor a confident person (score 0.88)
            torch.nn.init.constant_(conv.bias, 2.0)
        pose = init_model(str(D.config_path(spec.pose.config)), None, device="cpu")
        pose.init_weights()
    torch.save({"state_dict": det.state_dict()}, tmp_path / "det.pth")
    torch.save({"state_dict": pose.state_dict()}, tmp_path / "pose.pth")

    kd = KeypointDetector.from_files(D.config_path(spec.pose.config), tmp_path / "pose.pth", "cpu",
                                     person_config=person_cfg, person_checkpoint=tmp_path / "det.pth",
                                     thresholds=Thresholds(det_thr=0.5, kpt_thr=0.0, min_keypoints=0))  # fmt: skip
    assert kd.kind == "topdown"
    image = _images()[0]
    result = kd.detect([image])
    (persons,) = result.people
    assert len(persons) == 3 and result.dropped == []
    for p in persons:
        assert p.keypoints.shape == (17, 3) and abs(p.score - 0.8808) < 1e-3
        x, y, w, h = p.bbox
        inside = ((p.keypoints[:, 0] >= x - 0.75 * w) & (p.keypoints[:, 0] <= x + 1.75 * w)).all()
        assert inside  # keypoints are decoded within (about) their person box

    kd.thresholds = Thresholds(det_thr=0.9)
    result = kd.detect([image])
    assert result.people == [[]] and len(result.dropped) == 3
    assert all("< det_thr 0.9" in d.reason for d in result.dropped)


# --------------------------------------------------------------------------- keypoint JSON and CLI


def test_run_detect_writes_reusable_keypoint_json(detector, tmp_path):
    from PIL import Image

    from dpmesh_infer.detect.run import run_detect
    from dpmesh_infer.keypoint_files import read_keypoints

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    a, b = _images()
    Image.fromarray(a).save(folder / "a.png")
    Image.fromarray(b).save(folder / "sub" / "b.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "kp.json"
    summary = run_detect([folder], out, detector, det_thr=0.0, kpt_thr=0.0, max_people=2, min_keypoints=0)
    assert summary.images == 2 and summary.people == 4
    assert [name for name, _ in summary.failed] == ["broken.jpg"]
    assert all("max_people 2" in reason for _, reason in summary.dropped) and summary.dropped
    doc = json.loads(out.read_text())
    assert doc["format"] == "dpmesh-keypoints" and doc["images"] == ["a.png", "sub/b.png"]
    kps = read_keypoints(out)
    people = kps.lookup(folder / "sub" / "b.png", root=folder)
    assert len(people) == 2 and people[0].joint_format == "coco17" and people[0].keypoints.shape == (17, 3)


def test_cli_detect_and_fetch_detector(rtmo, tmp_path, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from dpmesh_infer.cli import app

    _, ckpt, cfg = rtmo
    Image.fromarray(_images()[0]).save(tmp_path / "one.jpg")
    out = tmp_path / "kp.json"
    runner = CliRunner()
    res = runner.invoke(app, ["detect", str(tmp_path / "one.jpg"), "--out", str(out), "--det-config", str(cfg),
                              "--det-checkpoint", str(ckpt), "--det-thr", "1.01", "--device", "cpu", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["people"] == []

    monkeypatch.setenv(D.NO_DOWNLOAD_ENV, "1")
    res = runner.invoke(app, ["weights", "fetch", "--detector", "rtmo-l", "--weights", str(tmp_path / "w"),
                              "--no-progress"])
    assert res.exit_code == 3 and "Traceback" not in res.output
    assert D.DETECTORS["rtmo-l"].pose.url in res.output
    assert str(tmp_path / "w" / "detectors" / D.DETECTORS["rtmo-l"].pose.file_name) in res.output
    res = runner.invoke(app, ["detect", str(tmp_path / "missing.jpg"), "--out", str(out), "--det-config", str(cfg)])
    assert res.exit_code == 2 and "--det-checkpoint" in res.output


# --------------------------------------------------------------------------- compatibility module


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, thr: float, offset: int) -> list[int]:
    """Textbook greedy NMS, one box at a time, in float64."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, xx2 - xx1 + offset) * max(0.0, yy2 - yy1 + offset)
            area = lambda b: (b[2] - b[0] + offset) * (b[3] - b[1] + offset)  # noqa: E731
            if inter / (area(boxes[i]) + area(boxes[j]) - inter) > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("thr,offset", list(itertools.product([0.0, 0.3, 0.6, 1.0], [0, 1])))
def test_pure_torch_nms_matches_bruteforce(thr, offset):
    rng = np.random.RandomState(int(thr * 10) + offset)
    xy = rng.rand(60, 2) * 50
    boxes = np.concatenate([xy, xy + 5 + rng.rand(60, 2) * 30], 1)
    scores = rng.rand(60).round(2)  # ties on purpose
    got = mmpose_compat.nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32),
                            thr, offset)  # fmt: skip
    assert got.dtype == torch.long
    assert got.tolist() == _nms_reference(boxes.astype(np.float32).astype(np.float64),
                                          scores.astype(np.float32), thr, offset)  # fmt: skip
    assert mmpose_compat.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_compat_standins():
    mmpose_compat.import_mmpose()
    from mmcv.ops import nms as mmcv_nms

    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    dets, inds = mmcv_nms(boxes, scores, 0.5)  # mmcv's own wrapper, running on the stand-in op
    assert inds.tolist() == [0, 2] and dets.shape == (2, 5)
    ext = sys.modules["mmcv._ext"]
    if isinstance(ext, mmpose_compat._ExtStandin):
        with pytest.raises(mmpose_compat.CompiledOpUnavailable, match="roi_align_forward"):
            ext.roi_align_forward()
    assert "torchvision" not in sys.modules  # the import-time stand-in is gone
    from transformers.utils import import_utils

    assert import_utils.is_torchvision_available() is False


def test_missing_stack_error(monkeypatch):
    monkeypatch.setattr(mmpose_compat, "_done", False)
    monkeypatch.setattr(mmpose_compat, "missing_packages", lambda: ["mmpose", "mmdet"])
    with pytest.raises(mmpose_compat.DetectorStackError, match="bash install.sh") as e:
        mmpose_compat.import_mmpose()
    assert "mmpose, mmdet" in str(e.value) and "--no-deps" in str(e.value)


def test_predict_without_keypoints_runs_the_detector(rtmo, tiny_weights, tmp_path):
    """`dpmesh predict IMAGE --out X` with no keypoint file: detector -> pipeline -> outputs."""
    from PIL import Image
    from typer.testing import CliRunner

    from dpmesh_infer.cli import app as main_app

    _, ckpt, cfg = rtmo
    img = tmp_path / "photo.png"
    Image.fromarray(_images()[0]).save(img)
    out = tmp_path / "photo.npz"
    res = CliRunner().invoke(main_app, ["predict", str(img), "--out", str(out), "--weights", str(tiny_weights),
                                        "--det-config", str(cfg), "--det-checkpoint", str(ckpt),
                                        "--det-thr", "0", "--kpt-thr", "0", "--max-people", "2"])
    assert res.exit_code == 0, res.output
    with np.load(out, allow_pickle=False) as z:
        assert z["vertices"].shape == (2, 6890, 3)
        assert np.isfinite(z["vertices"]).all()
        # the keypoints the pipeline used are the detector's COCO-17 mapped to the 30-joint set
        assert z["keypoints_2d"].shape == (2, 30, 3)
    res = CliRunner().invoke(main_app, ["predict", str(img), "--out", str(out), "--weights", str(tiny_weights),
                                        "--det-config", str(cfg)])
    assert res.exit_code == 2 and "--det-checkpoint" in res.output


def test_folder_run_with_the_detector(rtmo, tiny_weights, tmp_path):
    """A folder run without --keypoints: detector per chunk -> pipeline -> per-image bundles and manifest."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from dpmesh_infer.cli import app as main_app

    _, ckpt, cfg = rtmo
    src = tmp_path / "photos"
    src.mkdir()
    for i, im in enumerate(_images()):
        Image.fromarray(im).save(src / f"img{i}.png")
    out = tmp_path / "out"
    res = CliRunner().invoke(main_app, ["predict", str(src), "--out", str(out), "--weights", str(tiny_weights),
                                        "--det-config", str(cfg), "--det-checkpoint", str(ckpt), "--quiet",
                                        "--det-thr", "0", "--kpt-thr", "0", "--max-people", "2"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["done", "done"]
    for i in range(2):
        people = json.loads((out / f"img{i}" / "people.json").read_text())
        # random weights: a detection whose keypoints all score <= 0.05 is skipped with its reason
        assert len(people["persons"]) + len(people["skipped"]) == 2 and people["persons"]
        assert all(s["reason"] for s in people["skipped"])
