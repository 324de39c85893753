"""mmpose's own prediction files (mmpose 1.x; field names from its source, ``mmpose/structures/utils.py``
``split_instances``, ``mmpose/apis/inferencers/base_mmpose_inferencer.py`` and ``demo/*_demo*.py``).

One instance (a person), as ``split_instances`` writes it::

    {"keypoints": [[x, y], ...J],          image pixels
     "keypoint_scores": [s, ...J],         scores; heatmap codecs report a joint they did not find with
                                           a score <= 0 (codecs/utils/post_processing.py): those become 0
     "bbox": [[x1, y1, x2, y2]],           optional; a one-element list (split_instances' trailing comma);
                                           a flat [x1, y1, x2, y2] is accepted too
     "bbox_score": s}                      optional (also as [s]): the person score

Files:

- ``MMPoseInferencer(...)(..., pred_out_dir=DIR)``: per image ``DIR/<image stem>.json`` = a list of
  instances (one image: matches any image, or by stem in a folder read); per video ``DIR/<video>.json``
  = ``[{"frame_id": i, "instances": [...]}, ...]`` with i counted from 0.
- the demo scripts (``topdown_demo_with_mmdet.py``, ``bottomup_demo.py`` with ``--save-predictions``):
  ``{"meta_info": <dataset_meta>, "instance_info": [...]}``, ``instance_info`` a list of instances (an
  image) or of ``{"frame_id": i, "instances": [...]}`` (a video; i counted from 1). ``meta_info``'s
  ``keypoint_id2name`` is checked against the joint set the keypoint count implies.

Frames are matched to images by the number their file stem ends with (``frame_000012.jpg`` -> 12), as
written: mmpose's demo scripts count from 1 like ``ffmpeg -i clip.mp4 frames/%06d.png``; the inferencer
counts from 0 (extract with ``ffmpeg -i clip.mp4 -start_number 0 frames/%06d.png``).

Joint sets by keypoint count: 17 COCO (``coco``), 26 Halpe-26 (``halpe26``), 133 COCO-WholeBody
(``coco_wholebody``), 136 Halpe-136 (``halpe``); their body joints are mapped by name
(:mod:`dpmesh_infer.geometry.joints`).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from .parse import _fail, _numbers
from .people import KeypointPerson, KeypointSet

__all__ = ["MMPOSE_FORMATS", "is_inferencer_output", "is_demo_output", "read_inferencer", "read_demo",
           "parse_instances"]

_COCO = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
         "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
         "right_knee", "left_ankle", "right_ankle")
_HALPE26 = _COCO + ("head", "neck", "hip", "left_big_toe", "right_big_toe", "left_small_toe", "right_small_toe",
                    "left_heel", "right_heel")
_WHOLEBODY_FEET = ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")

#: keypoint count -> (our joint format, mmpose dataset name, the first mmpose keypoint names of that set
#: as in mmpose's configs/_base_/datasets/<name>.py, which meta_info must start with)
MMPOSE_FORMATS: dict[int, tuple[str, str, tuple[str, ...]]] = {
    17: ("coco17", "coco", _COCO),
    26: ("halpe26", "halpe26", _HALPE26),
    133: ("coco_wholebody", "coco_wholebody", _COCO + _WHOLEBODY_FEET),
    136: ("halpe136", "halpe", _HALPE26),
}

_INSTANCE = ('{"keypoints": [[x, y], ...], "keypoint_scores": [...], optional "bbox": [[x1, y1, x2, y2]], '
             'optional "bbox_score"}')


def _looks_like_instance(x: Any) -> bool:
    if not isinstance(x, dict):
        return False
    kp = x.get("keypoints")
    return "keypoint_scores" in x or (isinstance(kp, list) and bool(kp) and isinstance(kp[0], list))


def _looks_like_frame(x: Any) -> bool:
    return isinstance(x, dict) and "frame_id" in x and "instances" in x


def is_inferencer_output(data: list) -> bool:
    """A top-level JSON list written by MMPoseInferencer (instances of one image, or frames of a video)."""
    return bool(data) and (_looks_like_instance(data[0]) or _looks_like_frame(data[0]))


def is_demo_output(data: dict) -> bool:
    """A ``{"meta_info", "instance_info"}`` file of mmpose's demo scripts."""
    return "instance_info" in data


def _joint_format(n: int, where: str, names: list[str] | None, dataset: str | None) -> str:
    if n not in MMPOSE_FORMATS:
        known = ", ".join(f"{k} ({v[1]})" for k, v in MMPOSE_FORMATS.items())
        raise _fail(where, f"{n} keypoints per person{f' (mmpose dataset {dataset!r})' if dataset else ''}; "
                           f"this reads mmpose models with {known} keypoints")
    fmt, name, expected = MMPOSE_FORMATS[n]
    if names is not None and tuple(names[:len(expected)]) != expected:
        raise _fail(where, f"meta_info names the keypoints of mmpose dataset {dataset!r} "
                           f"({', '.join(names[:6])}, ...), not the {name} order this reads for {n} keypoints "
                           f"({', '.join(expected[:6])}, ...)")
    return fmt


def parse_instances(instances: Any, where: str, *, names: list[str] | None = None,
                    dataset: str | None = None) -> list[KeypointPerson]:
    """A list of ``split_instances`` dicts -> KeypointPerson list (module docstring for the fields).

    ``names``: mmpose's keypoint names from ``meta_info`` (checked against the joint set), if known.
    """
    if not isinstance(instances, list):
        raise _fail(where, f"expected a list of instances {_INSTANCE}, got {type(instances).__name__}")
    out = []
    for i, inst in enumerate(instances):
        w = f"{where}[{i}]"
        if not isinstance(inst, dict) or "keypoints" not in inst or "keypoint_scores" not in inst:
            raise _fail(w, f"expected an mmpose instance {_INSTANCE}, got {json.dumps(inst)[:80]}")
        kp = inst["keypoints"]
        if not isinstance(kp, list) or any(not isinstance(p, list) or len(p) != 2 for p in kp):
            dims = {len(p) for p in kp if isinstance(p, list)} if isinstance(kp, list) else set()
            extra = " (3D keypoints of a lifter are not image pixels)" if dims == {3} else ""
            raise _fail(w, f"'keypoints' must be a list of [x, y] pairs in pixels{extra}, got {json.dumps(kp)[:60]}")
        xy = _numbers([c for p in kp for c in p], w, "keypoints").reshape(-1, 2)
        scores = _numbers(inst["keypoint_scores"], w, "keypoint_scores")
        if scores.shape != (len(xy),):
            raise _fail(w, f"'keypoint_scores' has {scores.size} values for {len(xy)} keypoints")
        fmt = _joint_format(len(xy), w, names, dataset)
        keypoints = np.column_stack([xy, np.maximum(scores, 0.0)])  # score <= 0: not found (module docstring)
        out.append(KeypointPerson(keypoints=keypoints, joint_format=fmt,  # type: ignore[arg-type]
                                  score=_bbox_score(inst.get("bbox_score"), w), bbox=_bbox(inst.get("bbox"), w)))
    return out


def _bbox(value: Any, where: str) -> np.ndarray | None:
    """``[[x1, y1, x2, y2]]`` (or flat) -> [x, y, w, h]."""
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    box = _numbers(value, where, "bbox")
    if box.size != 4 or box[2] < box[0] or box[3] < box[1]:
        raise _fail(where, f"'bbox' must be [[x1, y1, x2, y2]] with x2 >= x1 and y2 >= y1, got {box.tolist()}")
    return np.array([box[0], box[1], box[2] - box[0], box[3] - box[1]], dtype=np.float64)


def _bbox_score(value: Any, where: str) -> float | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, f"'bbox_score' must be a finite number, got {value!r}")
    return float(value)


def _frames(frames: list, where: str, names, dataset) -> dict[int, list[KeypointPerson]]:
    out: dict[int, list[KeypointPerson]] = {}
    for i, fr in enumerate(frames):
        w = f"{where}[{i}]"
        if not _looks_like_frame(fr):
            raise _fail(w, "expected a frame {\"frame_id\": int, \"instances\": [...]} like the entries before it")
        fid = fr["frame_id"]
        if isinstance(fid, bool) or not isinstance(fid, int) or fid < 0:
            raise _fail(w, f"'frame_id' must be a non-negative integer, got {fid!r}")
        if fid in out:
            raise _fail(w, f"frame_id {fid} appears twice")
        out[fid] = parse_instances(fr["instances"], f"{w}.instances", names=names, dataset=dataset)
    return out


def read_inferencer(data: list, src: str) -> KeypointSet:
    """A ``pred_out_dir`` file: one image's instances (single-image set) or a video's frames."""
    if _looks_like_frame(data[0]):
        return KeypointSet(_frames(data, src, None, None), src, "mmpose-inferencer", id_kind="frame_id")
    return KeypointSet({None: parse_instances(data, src)}, src, "mmpose-inferencer")


def read_demo(data: dict, src: str) -> KeypointSet:
    """A demo script's ``{"meta_info", "instance_info"}`` file (an image or a video's frames)."""
    meta = data.get("meta_info") or {}
    if not isinstance(meta, dict):
        raise _fail(src, f"'meta_info' must be mmpose's dataset_meta object, got {type(meta).__name__}")
    names = _names(meta.get("keypoint_id2name"), f"{src}: meta_info")
    dataset = meta.get("dataset_name") if isinstance(meta.get("dataset_name"), str) else None
    info = data["instance_info"]
    where = f"{src}: instance_info"
    if not isinstance(info, list):
        raise _fail(where, f"expected a list of instances or of frames, got {type(info).__name__}")
    if info and _looks_like_frame(info[0]):
        return KeypointSet(_frames(info, where, names, dataset), src, "mmpose-demo", id_kind="frame_id")
    return KeypointSet({None: parse_instances(info, where, names=names, dataset=dataset)}, src, "mmpose-demo")


def _names(id2name: Any, where: str) -> list[str] | None:
    """``keypoint_id2name`` ({"0": "nose", ...} once through JSON) -> names in id order, or None."""
    if id2name is None:
        return None
    try:
        pairs = sorted((int(k), v) for k, v in id2name.items())
    except (AttributeError, TypeError, ValueError):
        raise _fail(where, "'keypoint_id2name' must map keypoint ids to names") from None
    if [k for k, _ in pairs] != list(range(len(pairs))) or not all(isinstance(v, str) for _, v in pairs):
        raise _fail(where, "'keypoint_id2name' must name keypoints 0..J-1")
    return [v for _, v in pairs]
