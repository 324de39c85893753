"""Tracks of a video run: assembled from the stored chunks, tracked, smoothed, written.

``tracks.npz`` (plain arrays, no pickle; rows = one person in one frame, sorted by track then time):

=================  ===========  ===========================================================
name               shape        meaning
=================  ===========  ===========================================================
track_id           (M,)         the row's track
sample, frame      (M,)         output sample index; source frame index (0-based)
time               (M,)         seconds on the source timeline
global_orient      (M, 3)       smoothed root rotation, axis-angle, camera frame
body_pose          (M, 23, 3)   smoothed joint rotations, axis-angle, parent-relative
betas              (M, 10)      the track's fixed shape (raw per frame with --smooth none)
transl             (M, 3)       smoothed SMPL translation (metres) for ``betas``
joints             (M, 30, 3)   3D joints of the smoothed body, metres, camera frame
joints_2d          (M, 30, 2)   ``joints`` projected with ``K``, pixels
<name>_raw                      the same five SMPL fields and joints as reconstructed per frame
keypoints_2d       (M, 30, 3)   input keypoints [x, y, confidence], pixels (30-joint set)
bbox, score        (M, 4), (M,) the crop box the network saw [x, y, w, h] px; detection score
tracks             (T,)         track ids; ``track_betas`` (T, 10) their fixed shapes
sample_frame       (S,)         source frame of every sample; ``sample_time`` (S,) seconds
K, image_size      (3, 3), (2,) intrinsics (pixels) and (width, height)
fps                ()           frame rate of the samples (the animation's)
schema_version     ()           :data:`TRACKS_SCHEMA_VERSION`
=================  ===========  ===========================================================

``tracks.json`` holds the same per track (schema ``dpmesh-tracks`` version
:data:`TRACKS_SCHEMA_VERSION`), plus the video, sampling, tracker and smoothing settings.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import write_bytes, write_text
from .smooth import OneEuroConfig, smooth_track
from .store import PERSON_FIELDS, ChunkData
from .track import Detection, TrackerConfig, track_detections

TRACKS_SCHEMA_VERSION = 1
SMPL_FIELDS = ("global_orient", "body_pose", "betas", "transl")


@dataclass
class Track:
    """One tracked person over T samples (float64 arrays; see the module docstring for the fields).

    ``raw`` and ``smoothed`` map ``global_orient``, ``body_pose``, ``betas``, ``transl``, ``joints`` to
    (T, ...) arrays; ``rig_betas`` (10,) and ``rig_transl`` (T, 3) are what the exported rig uses.
    """

    track_id: int
    samples: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    raw: dict[str, np.ndarray]
    smoothed: dict[str, np.ndarray]
    keypoints_2d: np.ndarray
    bbox: np.ndarray
    score: np.ndarray
    rig_betas: np.ndarray
    rig_transl: np.ndarray


@dataclass
class TrackSet:
    """Every track of a run plus what the outputs need about the samples."""

    tracks: list[Track]
    sample_frame: np.ndarray
    sample_time: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]
    fps: float
    untracked: int = 0
    missing_samples: list[int] = field(default_factory=list)


def _gather(chunks: list[ChunkData]):
    """Chunks -> per-sample arrays and the persons as one table."""
    chunks = sorted(chunks, key=lambda c: c.index)
    samples = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.int64)
    person_sample = np.concatenate([c.person_sample for c in chunks]) if chunks else np.zeros(0, np.int64)
    persons = {k: (np.concatenate([c.persons[k] for c in chunks]) if chunks else np.zeros((0, *s), np.float32))
               for k, s in PERSON_FIELDS.items()}
    return chunks, samples, person_sample, persons


def assemble_tracks(chunks: list[ChunkData], *, n_samples: int, sample_frame: np.ndarray, sample_time: np.ndarray,
                    fps: float, image_size: tuple[int, int], body, tracker: TrackerConfig,
                    smoothing: OneEuroConfig | None, device="cpu") -> TrackSet:
    """Track the persons of ``chunks`` (all samples of the run, in order), smooth each track and compute
    the smoothed bodies' joints with ``body`` (:class:`~dpmesh_infer.models.body.SMPLBody`)."""
    import torch

    chunks, samples, person_sample, persons = _gather(chunks)
    K = chunks[0].K[0] if chunks and len(chunks[0].K) else np.eye(3, dtype=np.float32)
    decoded = np.zeros(n_samples, bool)
    for c in chunks:
        decoded[c.samples] = c.decoded
    rows_of = [[] for _ in range(n_samples)]
    for row, s in enumerate(person_sample):
        rows_of[int(s)].append(row)
    frames_dets = [[Detection(persons["keypoints_2d"][r].astype(np.float64), persons["bbox"][r].astype(np.float64))
                    for r in rows] for rows in rows_of]
    ids = track_detections(frames_dets, tracker)
    by_track: dict[int, list[int]] = {}
    untracked = 0
    for s, rows in enumerate(rows_of):
        for r, tid in zip(rows, ids[s]):
            if tid < 0:
                untracked += 1
            else:
                by_track.setdefault(tid, []).append(r)
    tracks = []
    arrays = body.arrays
    for tid in sorted(by_track):
        rows = np.array(by_track[tid])
        rows = rows[np.argsort(person_sample[rows], kind="stable")]
        t_samples = person_sample[rows].astype(np.int64)
        raw = {k: persons[k][rows].astype(np.float64) for k in (*SMPL_FIELDS, "joints")}
        times = sample_time[t_samples].astype(np.float64)
        sm = smooth_track(raw["global_orient"], raw["body_pose"], raw["betas"], raw["transl"], times,
                          persons["score"][rows], arrays, smoothing)
        smoothed = {"global_orient": sm.global_orient, "body_pose": sm.body_pose, "betas": sm.betas,
                    "transl": sm.transl}
        with torch.no_grad():
            f32 = dict(dtype=torch.float32, device=device)
            joints = []
            for a in range(0, len(rows), 512):
                sl = slice(a, a + 512)
                out = body(torch.as_tensor(sm.global_orient[sl], **f32), torch.as_tensor(sm.body_pose[sl], **f32),
                           torch.as_tensor(sm.betas[sl], **f32), torch.as_tensor(sm.transl[sl], **f32))
                joints.append(out.joints.cpu().numpy().astype(np.float64))
        smoothed["joints"] = np.concatenate(joints) if joints else np.zeros((0, 30, 3))
        tracks.append(Track(track_id=int(tid), samples=t_samples, frames=sample_frame[t_samples].astype(np.int64),
                            times=times, raw=raw, smoothed=smoothed,
                            keypoints_2d=persons["keypoints_2d"][rows].astype(np.float64),
                            bbox=persons["bbox"][rows].astype(np.float64),
                            score=persons["score"][rows].astype(np.float64), rig_betas=sm.rig_betas,
                            rig_transl=sm.rig_transl))
    missing = [int(i) for i in np.flatnonzero(~decoded)]
    return TrackSet(tracks=tracks, sample_frame=np.asarray(sample_frame, np.int64),
                    sample_time=np.asarray(sample_time, np.float64), K=np.asarray(K, np.float64),
                    image_size=(int(image_size[0]), int(image_size[1])), fps=float(fps), untracked=untracked,
                    missing_samples=missing)


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(..., 3) camera-frame points (metres) -> (..., 2) pixels with ``K``."""
    z = np.where(np.abs(points[..., 2:3]) < 1e-9, 1e-9, points[..., 2:3])
    uv = points[..., :2] / z
    return uv * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]


def tracks_arrays(ts: TrackSet) -> dict[str, np.ndarray]:
    """The arrays of ``tracks.npz`` (module docstring)."""
    def cat(get, shape, dtype=np.float32):
        vals = [get(t) for t in ts.tracks]
        return np.concatenate(vals).astype(dtype) if vals else np.zeros((0, *shape), dtype)

    out: dict[str, np.ndarray] = {
        "schema_version": np.asarray(TRACKS_SCHEMA_VERSION, np.int64),
        "track_id": cat(lambda t: np.full(len(t.samples), t.track_id), (), np.int64),
        "sample": cat(lambda t: t.samples, (), np.int64),
        "frame": cat(lambda t: t.frames, (), np.int64),
        "time": cat(lambda t: t.times, (), np.float64),
    }
    shapes = {"global_orient": (3,), "body_pose": (23, 3), "betas": (10,), "transl": (3,), "joints": (30, 3)}
    for name, shape in shapes.items():
        out[name] = cat(lambda t: t.smoothed[name], shape)
        out[f"{name}_raw"] = cat(lambda t: t.raw[name], shape)
    out["joints_2d"] = project(out["joints"].astype(np.float64), ts.K).astype(np.float32)
    out["joints_2d_raw"] = project(out["joints_raw"].astype(np.float64), ts.K).astype(np.float32)
    out["keypoints_2d"] = cat(lambda t: t.keypoints_2d, (30, 3))
    out["bbox"] = cat(lambda t: t.bbox, (4,))
    out["score"] = cat(lambda t: t.score, ())
    out["tracks"] = np.array([t.track_id for t in ts.tracks], np.int64)
    out["track_betas"] = (np.stack([t.rig_betas for t in ts.tracks]) if ts.tracks else np.zeros((0, 10))).astype(
        np.float32)
    out["sample_frame"] = ts.sample_frame
    out["sample_time"] = ts.sample_time
    out["K"] = ts.K.astype(np.float32)
    out["image_size"] = np.asarray(ts.image_size, np.int64)
    out["fps"] = np.asarray(ts.fps, np.float64)
    return out


def write_tracks_npz(ts: TrackSet, path: Path) -> Path:
    buf = io.BytesIO()
    np.savez(buf, **tracks_arrays(ts))
    return write_bytes(path, buf.getvalue())


def _r(a: np.ndarray, nd: int = 6) -> list:
    return np.round(np.asarray(a, np.float64), nd).tolist()


def tracks_document(ts: TrackSet, *, video: dict, sampling: dict, tracker: TrackerConfig,
                    smoothing: OneEuroConfig | None, files: list[str], extra: dict | None = None) -> dict:
    """The ``tracks.json`` document."""
    tracks = []
    for t in ts.tracks:
        tracks.append({
            "track_id": t.track_id,
            "frames": t.frames.tolist(), "samples": t.samples.tolist(), "times": _r(t.times),
            "first_frame": int(t.frames[0]), "last_frame": int(t.frames[-1]),
            "score_mean": round(float(t.score.mean()), 4), "betas": _r(t.rig_betas),
            "smoothed": {k: _r(t.smoothed[k]) for k in SMPL_FIELDS},
            "raw": {k: _r(t.raw[k]) for k in SMPL_FIELDS},
            "keypoints_2d": _r(t.keypoints_2d, 3), "bbox_xywh": _r(t.bbox, 3), "score": _r(t.score, 4),
        })
    doc = {
        "format": "dpmesh-tracks", "schema_version": TRACKS_SCHEMA_VERSION,
        "units": {"3d": "metres", "2d": "pixels", "rotations": "axis-angle radians", "time": "seconds"},
        "frame": "OpenCV camera of the video: x right, y down, z forward; u = fx*X/Z + cx",
        "joint_set": "dpmesh30", "video": video, "sampling": sampling, "fps": ts.fps,
        "samples": int(len(ts.sample_frame)), "K": _r(ts.K), "image_size": list(ts.image_size),
        "tracker": tracker.to_dict(),
        "smoothing": {"method": "none"} if smoothing is None else {
            "method": "oneeuro" if smoothing.zero_lag else "oneeuro-causal", **smoothing.to_dict()},
        "untracked_detections": ts.untracked, "missing_samples": ts.missing_samples,
        "files": files, "tracks": tracks,
    }
    if extra:
        doc.update(extra)
    return doc


def write_tracks_json(doc: dict, path: Path) -> Path:
    return write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
