"""Video building blocks: decoding and sampling (PyAV), per-frame keypoint files, the tracker and the
One-Euro smoother, each against an independent expectation."""

import json
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (pip install av) is needed for video input")

from dpmesh_infer.errors import InputError, KeypointFileError, VideoError  # noqa: E402
from dpmesh_infer.video import decode  # noqa: E402
from dpmesh_infer.video.decode import SamplingOptions, parse_time_point, plan_samples  # noqa: E402


def _write(path, frames, *, rate=30, pts_ms=None, rotation=None, size=(64, 48), codec="libx264"):
    """Frames whose pixel value encodes the frame index (decoded back with a tolerance)."""
    w, h = size
    with av.open(str(path), "w") as c:
        st = c.add_stream(codec, rate=1000 if pts_ms is not None else rate)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        if pts_ms is not None:
            st.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            st.set_display_rotation(rotation)
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            img[:, :] = i * 6
            img[: h // 4, : w // 4] = 255  # a corner marker to see the rotation
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts_ms is not None:
                f.pts, f.time_base = int(pts_ms[i]), Fraction(1, 1000)
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path


def _index(img):
    return int(round(float(np.median(img[img.shape[0] // 2:, img.shape[1] // 2:, 0])) / 6))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("units") / "c.mp4", 40)


def test_probe_counts_frames_and_times(clip):
    info = decode.probe(clip)
    assert info.frame_count == 40 and (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(30.0, rel=1e-3) and not info.variable_rate
    np.testing.assert_allclose(info.times, np.arange(40) / 30.0, atol=1e-3)


def test_streamed_frames_seek_to_the_right_frame(clip):
    info = decode.probe(clip)
    plan = plan_samples(info, SamplingOptions(every=3, start=parse_time_point("21f")))
    assert [s.frame for s in plan.samples] == [21, 24, 27, 30, 33, 36, 39]
    got = [(s.frame, _index(img)) for s, img in decode.iter_frames(info, plan.samples)]
    assert got == [(f, f) for f in (21, 24, 27, 30, 33, 36, 39)]  # after a seek, the exact frames


def test_time_points_and_sampling(clip):
    info = decode.probe(clip)
    assert parse_time_point("1:02.5") == decode.TimePoint(62.5, "s")
    assert parse_time_point("0.5s").frame(info.times) == 15
    for bad in ("-1", "abc", "3.5f"):
        with pytest.raises(InputError, match="seconds"):
            parse_time_point(bad)
    plan = plan_samples(info, SamplingOptions(fps=10, start=parse_time_point("0.1"), end=parse_time_point("1s")))
    assert [s.frame for s in plan.samples] == [3, 6, 9, 12, 15, 18, 21, 24, 27]
    assert plan.fps == 10 and [round(s.time - plan.samples[0].time, 6) for s in plan.samples[:2]] == [0, 0.1]
    with pytest.raises(InputError, match="--fps or --every"):
        plan_samples(info, SamplingOptions(fps=10, every=2))
    with pytest.raises(InputError, match="no frame between"):
        plan_samples(info, SamplingOptions(start=parse_time_point("39f"), end=parse_time_point("39f")))


def test_variable_frame_rate_needs_fps(tmp_path):
    pts = np.cumsum([0] + [33] * 9 + [90] * 5 + [20] * 10)
    info = decode.probe(_write(tmp_path / "v.mkv", len(pts), pts_ms=pts))
    assert info.variable_rate
    with pytest.raises(InputError, match="variable frame rate.*--fps"):
        plan_samples(info, SamplingOptions())
    plan = plan_samples(info, SamplingOptions(fps=25))
    times = np.array([s.time for s in plan.samples])
    np.testing.assert_allclose(np.diff(times), 0.04)  # constant output rate
    for s in plan.samples:  # each tick takes the nearest frame
        assert abs(info.times[s.frame] - s.time) == pytest.approx(np.min(np.abs(info.times - s.time)))


def test_display_rotation_is_applied(tmp_path):
    info = decode.probe(_write(tmp_path / "r.mp4", 3, rotation=90))
    assert info.rotation == 90 and (info.width, info.height) == (48, 64)
    _, img = next(decode.iter_frames(info, plan_samples(info, SamplingOptions()).samples))
    assert img.shape == (64, 48, 3)
    # the bright top-left corner of the stored frame is bottom-left after a 90 degree counter-clockwise turn
    assert img[-4:, :4].mean() > 200 and img[:4, :4].mean() < 100


def test_unusable_videos_are_video_errors(tmp_path, clip):
    data = clip.read_bytes()
    (tmp_path / "trunc.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    with av.open(str(tmp_path / "audio.mkv"), "w") as c:  # an audio-only file
        st = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.rate = 8000
        for p in st.encode(frame):
            c.mux(p)
        for p in st.encode():
            c.mux(p)
    with av.open(str(tmp_path / "empty.mkv"), "w") as c:  # a video stream without frames (and some sound)
        st = c.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 64, 48, "yuv420p"
        sound = c.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.rate = 8000
        for p in [*sound.encode(frame), *sound.encode()]:
            c.mux(p)
    for name, pattern in [("trunc.mp4", "cannot be opened"), ("junk.mp4", "cannot be opened"),
                          ("audio.mkv", "no video stream.*audio"), ("empty.mkv", "no frames"),
                          ("missing.mp4", "not found")]:
        with pytest.raises(VideoError, match=pattern) as e:
            decode.probe(tmp_path / name)
        assert e.value.exit_code == 4


def test_sequence_folder_is_sorted_numerically(tmp_path):
    from PIL import Image

    for i in (1, 2, 10, 11):
        Image.fromarray(np.full((8, 10, 3), i * 10, np.uint8)).save(tmp_path / f"frame_{i}.png")
    info = decode.probe_sequence(tmp_path, fps=25)
    assert [p.name for p in info.frame_files] == ["frame_1.png", "frame_2.png", "frame_10.png", "frame_11.png"]
    vals = [int(img[0, 0, 0]) for _, img in decode.iter_frames(info, plan_samples(info, SamplingOptions()).samples)]
    assert vals == [10, 20, 100, 110] and info.fps == 25


# ------------------------------------------------------------------------------------ keypoint files

def _coco17(x):
    return [v for j in range(17) for v in (x + j, 10.0 + j, 0.9)]


def test_frame_keypoint_formats(tmp_path):
    from dpmesh_infer.video.keypoints import read_frame_keypoints

    coco = [{"file_name": "clip.mp4", "frame": 2, "keypoints": _coco17(5), "score": 0.8},
            {"file_name": "other.mp4", "frame": 0, "keypoints": _coco17(1)},
            {"file_name": "videos/clip.mp4", "frame": 2, "keypoints": _coco17(50)}]
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    kp = read_frame_keypoints(tmp_path / "coco.json", "clip.mp4")
    assert kp.frames == [2] and len(kp.persons(2)) == 2 and kp.persons(2)[0].score == 0.8
    with pytest.raises(KeypointFileError, match="no entry has file_name 'x.mp4'"):
        read_frame_keypoints(tmp_path / "coco.json", "x.mp4")

    inst = {"keypoints": [[float(j), 2.0 * j] for j in range(17)], "keypoint_scores": [0.5] * 17,
            "bbox": [[1.0, 2.0, 11.0, 22.0]], "bbox_score": 0.7}
    (tmp_path / "inferencer.json").write_text(json.dumps([{"frame_id": 0, "instances": [inst]},
                                                          {"frame_id": 1, "instances": []}]))
    kp = read_frame_keypoints(tmp_path / "inferencer.json", "clip.mp4")
    p = kp.persons(0)[0]
    assert kp.file_format == "mmpose-inferencer" and p.keypoints[3].tolist() == [3.0, 6.0, 0.5]
    assert p.bbox.tolist() == [1.0, 2.0, 10.0, 20.0] and p.score == 0.7
    (tmp_path / "demo.json").write_text(json.dumps({"meta_info": {}, "instance_info": [
        {"frame_id": 1, "instances": [inst]}, {"frame_id": 2, "instances": [inst, inst]}]}))
    kp = read_frame_keypoints(tmp_path / "demo.json", "clip.mp4")
    assert kp.file_format == "mmpose-demo" and [len(kp.persons(f)) for f in (0, 1)] == [1, 2]  # 1-based ids

    op = tmp_path / "openpose"
    op.mkdir()
    for f in (0, 7):
        people = [{"pose_keypoints_2d": [1.0] * 75}]
        (op / f"clip_{f:012d}_keypoints.json").write_text(json.dumps({"people": people}))
    kp = read_frame_keypoints(op, "clip.mp4")
    assert kp.frames == [0, 7] and kp.persons(7)[0].joint_format == "openpose25"
    with pytest.raises(KeypointFileError, match="beyond the end of clip.mp4 .*frames 7"):
        kp.check_frames(5, "clip.mp4")

    (tmp_path / "bad.json").write_text(json.dumps([{"keypoints": _coco17(1)}]))
    with pytest.raises(KeypointFileError, match="no integer 'frame'"):
        read_frame_keypoints(tmp_path / "bad.json", "clip.mp4")


# ------------------------------------------------------------------------------------ tracking

def _det(kp17, shift=(0.0, 0.0)):
    from dpmesh_infer.geometry.joints import coco17_to_j30
    from dpmesh_infer.video.track import Detection

    k = np.array(kp17, np.float64)
    k[:, :2] += shift
    j30 = coco17_to_j30(k[None])[0]
    return Detection(j30, np.array([0, 0, 1, 1.0]))


def _person(x, y=50.0):
    from dpmesh_infer.stand_ins.scene import _COCO_T_POSE

    kp = np.ones((17, 3))
    kp[:, :2] = _COCO_T_POSE * 100 + (x, y)
    return kp


def test_tracker_birth_gap_reid_and_crossing():
    from dpmesh_infer.video.track import TrackerConfig, track_detections

    frames = []
    for t in range(40):
        a, b = _person(10 + 5 * t), _person(210 - 5 * t)  # they cross at t = 20
        dets = [_det(a), _det(b)]
        if 18 <= t <= 21:
            dets = [dets[1]]  # A hidden behind B for 4 frames around the crossing
        if t in (5, 30):
            dets.append(_det(_person(400, 300)))  # a one-frame false detection
        if t % 2:
            dets = dets[::-1]  # detection order carries no identity
        frames.append(dets)
    ids = track_detections(frames, TrackerConfig(min_hits=3, max_gap=6))
    # ground truth: which detection is A in each frame
    track_a = set()
    track_b = set()
    for t, (dets, tid) in enumerate(zip(frames, ids)):
        for d, i in zip(dets, tid):
            x = d.keypoints[0, 0]
            is_a = abs(x - (10 + 5 * t + 50)) < abs(x - (210 - 5 * t + 50)) if x < 350 else None
            if is_a is None:
                assert i == -1  # never became a track
            elif is_a:
                track_a.add(i)
            else:
                track_b.add(i)
    assert track_a == {0} and track_b == {1}  # re-identified after the gap, no switch at the crossing
    # death: with a gap longer than max_gap, A comes back under a new id
    ids = track_detections(frames, TrackerConfig(min_hits=3, max_gap=2))
    assert len({i for f in ids for i in f if i >= 0}) == 3


# ------------------------------------------------------------------------------------ smoothing

def test_one_euro_on_so3_reduces_noise_and_handles_the_sign_flip():
    from scipy.spatial.transform import Rotation

    from dpmesh_infer.video.smooth import OneEuroConfig, one_euro_rotations

    rng = np.random.default_rng(0)
    t = np.arange(120) / 30.0
    # a rotation about a fixed axis through angle pi: axis-angle vectors flip sign there
    angle = 2.0 + 2.4 * t / t[-1]
    truth = Rotation.from_rotvec(np.array([0.0, 0.0, 1.0]) * angle[:, None])
    noisy = truth * Rotation.from_rotvec(rng.normal(0, 0.05, (len(t), 3)))
    rv = noisy.as_rotvec()
    assert np.abs(np.diff(rv[:, 2])).max() > 3  # the raw axis-angle numbers jump at pi
    err_raw = (truth.inv() * noisy).magnitude()
    errors = {}
    for zero_lag in (True, False):
        out = one_euro_rotations(rv[:, None], t, OneEuroConfig(min_cutoff=1.0, beta=0.3, zero_lag=zero_lag))[:, 0]
        est = Rotation.from_rotvec(out)
        errors[zero_lag] = (truth.inv() * est).magnitude()[5:-5].mean()
        steps = (est[1:].inv() * est[:-1]).magnitude()
        assert steps.max() < 0.1  # no jump where the axis-angle numbers flip
    assert errors[True] < 0.5 * err_raw[5:-5].mean()  # zero-lag: much closer to the truth than the measurements
    assert errors[True] < errors[False]  # and than the causal filter, which lags


def test_smooth_track_keeps_the_root_when_fixing_betas():
    import torch

    from dpmesh_infer.models.body import SMPLBody
    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays
    from dpmesh_infer.video.smooth import smooth_track

    arrays = make_synthetic_smpl_arrays()
    body = SMPLBody(arrays)
    rng = np.random.default_rng(1)
    n = 12
    go, bp = rng.normal(0, 0.2, (n, 3)), rng.normal(0, 0.2, (n, 23, 3))
    betas, transl = rng.normal(0, 1.0, (n, 10)), rng.normal(0, 0.1, (n, 3)) + [0, 0, 3]
    sm = smooth_track(go, bp, betas, transl, np.arange(n) / 30, np.ones(n), arrays, None)
    np.testing.assert_array_equal(sm.body_pose, bp)  # --smooth none: raw values
    f = dict(dtype=torch.float32)

    def root(b, tr):
        out = body(*(torch.as_tensor(x, **f) for x in (go, bp, b, tr)))
        return out.vertices.numpy(), out.joints[:, 0].numpy()

    _, r_raw = root(betas, transl)
    _, r_rig = root(np.tile(sm.rig_betas, (n, 1)), sm.rig_transl)
    # the SMPL kinematic root (J_regressor row 0 of the rest shape) is kept; J30 row 0 follows the pose
    assert np.abs(r_rig - r_raw).max() < 0.05
    jr0 = arrays["J_regressor"][0]
    k_raw = transl + (jr0 @ (arrays["v_template"] + np.einsum("vcb,nb->nvc", arrays["shapedirs"], betas)))
    k_rig = sm.rig_transl + jr0 @ (arrays["v_template"] + arrays["shapedirs"] @ sm.rig_betas)
    np.testing.assert_allclose(k_rig, k_raw, atol=1e-9)
