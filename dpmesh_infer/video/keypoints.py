"""Per-frame keypoint files for videos (``dpmesh predict clip.mp4 --keypoints FILE_OR_FOLDER``).

Accepted (detected from the content; anything else is a KeypointFileError naming these):

1. A COCO-style list of person entries with an integer ``frame`` (0-based source frame):
   ``[{"frame": 0, "keypoints": [51 numbers], "score": 0.9, "bbox": [x, y, w, h], "file_name": "clip.mp4"}]``.
   ``file_name`` is optional; when present only the entries naming this video (by file name) are used,
   so one file may hold several videos.
2. mmpose's video output: ``MMPoseInferencer(..., pred_out_dir=...)`` writes a list
   ``[{"frame_id": 0, "instances": [{"keypoints": [[x, y] * 17], "keypoint_scores": [17], "bbox":
   [[x1, y1, x2, y2]], "bbox_score": s}]}]`` (frame_id counts from 0); mmpose's demo scripts
   (``topdown_demo_with_mmdet.py``, ``bottomup_demo.py`` with ``--save-predictions``) write
   ``{"meta_info": ..., "instance_info": [same per-frame entries]}`` with frame_id counting from **1**
   (their loop increments before reading), which is mapped to frame 0. COCO-17 models only.
3. A folder of OpenPose per-frame JSONs (``clip_000000000012_keypoints.json``, as OpenPose's
   ``--write_json`` writes them): the last number in each file name is the frame (0-based).

Each person goes through the per-person parser of :mod:`dpmesh_infer.keypoint_files` (same checks and
messages as for photos). Frames without entries have no people. Frames beyond the video's length are
an error (:meth:`FrameKeypoints.check_frames`): usually the file of another video or a 1-based count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KeypointFileError
from ..keypoint_files import KeypointPerson, read_openpose_json
from ..keypoint_files.parse import _person, _read_json

FORMATS_HELP = (
    "expected, for a video: (1) a JSON list of COCO-style entries with an integer \"frame\" (0-based), "
    "\"keypoints\" [51 numbers] and optional \"file_name\" (the video's name), \"score\", \"bbox\"; "
    "(2) mmpose video output: a list of {\"frame_id\", \"instances\"} or {\"instance_info\": [...]} from the "
    "mmpose demo scripts; (3) a folder of OpenPose per-frame JSON files (the frame number in each name)"
)


@dataclass
class FrameKeypoints:
    """Persons per source frame (0-based) of one video, read from ``source`` (``file_format``)."""

    per_frame: dict[int, list[KeypointPerson]]
    source: str
    file_format: str

    def persons(self, frame: int) -> list[KeypointPerson]:
        return list(self.per_frame.get(int(frame), []))

    @property
    def frames(self) -> list[int]:
        """Frames that have an entry (possibly with no person), sorted."""
        return sorted(self.per_frame)

    def check_frames(self, frame_count: int, video: str) -> None:
        """KeypointFileError when entries lie beyond the video's ``frame_count`` frames."""
        beyond = [f for f in self.per_frame if f >= frame_count and self.per_frame[f]]
        if beyond:
            raise KeypointFileError(
                f"{self.source}: keypoints for {len(beyond)} frame(s) beyond the end of {video} "
                f"({frame_count} frames, 0-{frame_count - 1}): frames {_ranges(sorted(beyond))}. Is it the "
                "keypoint file of another video, or are its frames counted from 1?")


def _ranges(values: list[int], limit: int = 6) -> str:
    spans: list[tuple[int, int]] = []
    for v in values:
        if spans and v == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], v)
        else:
            spans.append((v, v))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:limit])
    return text + (" ..." if len(spans) > limit else "")


def _frame_number(value: Any, where: str, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise KeypointFileError(f"{where}: '{field}' must be a non-negative integer, got {value!r}")
    return int(value)


def _coco_frames(entries: list, src: str, video_name: str) -> FrameKeypoints:
    per_frame: dict[int, list[KeypointPerson]] = {}
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{src}: entry[{i}]"
        if not isinstance(entry, dict):
            raise KeypointFileError(f"{where}: expected an object, got {type(entry).__name__}; {FORMATS_HELP}")
        if "frame" not in entry:
            raise KeypointFileError(f"{where}: no integer 'frame' (0-based frame of the video); {FORMATS_HELP}")
        name = entry.get("file_name")
        if name is not None:
            if not isinstance(name, str):
                raise KeypointFileError(f"{where}: 'file_name' must be a string, got {name!r}")
            names.add(name)
            if Path(name.replace("\\", "/")).name != video_name:
                continue
        if entry.get("category_id", 1) != 1:
            continue
        frame = _frame_number(entry["frame"], where, "frame")
        per_frame.setdefault(frame, []).append(_person(entry, where, formats=("coco17",)))
    if not per_frame and names:
        raise KeypointFileError(f"{src}: no entry has file_name {video_name!r} (file names in it: "
                                f"{', '.join(sorted(names)[:8])}{' ...' if len(names) > 8 else ''})")
    return FrameKeypoints(per_frame, src, "coco-frames")


def _mmpose_instance(inst: Any, where: str) -> KeypointPerson:
    if not isinstance(inst, dict) or "keypoints" not in inst:
        raise KeypointFileError(f"{where}: expected an mmpose instance with 'keypoints' and 'keypoint_scores'")
    kps, scores = inst["keypoints"], inst.get("keypoint_scores")
    if not isinstance(kps, list) or not all(isinstance(p, list) and len(p) == 2 for p in kps):
        raise KeypointFileError(f"{where}: 'keypoints' must be a list of [x, y] pairs")
    if len(kps) != 17:
        raise KeypointFileError(f"{where}: {len(kps)} keypoints; only COCO-17 models (17 keypoints) are "
                                "supported (e.g. RTMO, RTMPose body on COCO/body7)")
    if not isinstance(scores, list) or len(scores) != len(kps):
        raise KeypointFileError(f"{where}: 'keypoint_scores' must list one score per keypoint")
    flat = [v for (x, y), s in zip(kps, scores) for v in (x, y, s)]
    entry: dict[str, Any] = {"keypoints": flat}
    score = inst.get("bbox_score")
    if isinstance(score, list) and len(score) == 1:
        score = score[0]
    if score is not None:
        entry["score"] = score
    box = inst.get("bbox")
    if isinstance(box, list) and len(box) == 1 and isinstance(box[0], list):
        box = box[0]  # split_instances writes a 1-tuple of [x1, y1, x2, y2]
    if box is not None:
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise KeypointFileError(f"{where}: 'bbox' must be [x1, y1, x2, y2], got {box!r}")
        entry["bbox"] = [box[0], box[1], box[2] - box[0], box[3] - box[1]]
    return _person(entry, where, formats=("coco17",))


def _mmpose_frames(frames: list, src: str, label: str, one_based: bool) -> FrameKeypoints:
    per_frame: dict[int, list[KeypointPerson]] = {}
    ids = []
    for i, fr in enumerate(frames):
        where = f"{src}: {label}[{i}]"
        if not isinstance(fr, dict) or "frame_id" not in fr or not isinstance(fr.get("instances"), list):
            raise KeypointFileError(f"{where}: expected {{\"frame_id\": int, \"instances\": [...]}}")
        ids.append(_frame_number(fr["frame_id"], where, "frame_id"))
    base = 1 if one_based and ids and min(ids) >= 1 else 0
    for i, (fr, fid) in enumerate(zip(frames, ids)):
        people = [_mmpose_instance(inst, f"{src}: {label}[{i}].instances[{j}]")
                  for j, inst in enumerate(fr["instances"])]
        per_frame.setdefault(fid - base, []).extend(people)
    fmt = "mmpose-demo" if one_based else "mmpose-inferencer"
    return FrameKeypoints(per_frame, src, fmt)


_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def _openpose_folder(folder: Path) -> FrameKeypoints:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".json")
    if not files:
        raise KeypointFileError(f"{folder}: no .json files (expected OpenPose per-frame files "
                                "<name>_<frame>_keypoints.json)")
    per_frame: dict[int, list[KeypointPerson]] = {}
    owner: dict[int, Path] = {}
    for f in files:
        m = _LAST_NUMBER.search(f.stem)
        if m is None:
            raise KeypointFileError(f"{f}: no frame number in the file name (OpenPose writes "
                                    "<name>_000000000012_keypoints.json)")
        frame = int(m.group(1))
        if frame in owner:
            raise KeypointFileError(f"{folder}: {owner[frame].name} and {f.name} are both frame {frame}")
        owner[frame] = f
        per_frame[frame] = read_openpose_json(f)
    return FrameKeypoints(per_frame, str(folder), "openpose-folder")


def read_frame_keypoints(path: str | Path, video_name: str) -> FrameKeypoints:
    """Read a per-frame keypoint file or OpenPose folder for the video named ``video_name`` (file name).

    Raises:
        KeypointFileError: unreadable, not one of the formats of this module, invalid entries.
    """
    path = Path(path)
    if path.is_dir():
        return _openpose_folder(path)
    data = _read_json(path)
    src = str(path)
    if isinstance(data, list):
        if data and isinstance(data[0], dict) and "frame_id" in data[0]:
            return _mmpose_frames(data, src, "frames", one_based=False)
        if not data:
            return FrameKeypoints({}, src, "coco-frames")
        return _coco_frames(data, src, video_name)
    if isinstance(data, dict) and isinstance(data.get("instance_info"), list):
        return _mmpose_frames(data["instance_info"], src, "instance_info", one_based=True)
    raise KeypointFileError(f"{src}: not a per-frame keypoint file; {FORMATS_HELP}")
