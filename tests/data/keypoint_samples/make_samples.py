"""Regenerate the keypoint sample files of this folder (see README.md beside it).

    PYTHONPATH=. python3 tests/data/keypoint_samples/make_samples.py [OUT_DIR]

The keypoints are the synthetic scene's (``dpmesh_infer.stand_ins.scene.synthetic_scene``: two people in
a 640x480 photo, COCO-17), so every file describes the same two people. The mmpose files are written by
mmpose's own code (``mmpose.structures.split_instances``, then ``mmengine.dump`` as the inferencer's
``pred_out_dir`` does, or ``json.dump(dict(meta_info=dataset_meta, instance_info=...))`` as the demo
scripts do, with mmengine's numpy-aware JSON default: mmpose 1.3.2's demo ``json.dump`` itself fails on
the numpy arrays of ``dataset_meta``). The AlphaPose files follow ``alphapose/utils/pPose_nms.py::write_json``
field by field (AlphaPose itself is not installable here). ``tests/test_keypoint_formats.py`` checks that
this script, run with the installed mmpose, writes exactly the committed mmpose files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
IMAGE = "scene.jpg"


def scene_keypoints() -> np.ndarray:
    """(2, 17, 3) COCO-17 [x, y, score] of the synthetic scene, rounded to 0.01 px."""
    from dpmesh_infer.stand_ins.scene import synthetic_scene

    _, kp = synthetic_scene()
    return np.round(kp, 2)


def halpe26(kp17: np.ndarray) -> np.ndarray:
    """(N, 26, 3): COCO-17 + head top, neck, hip centre, big/small toes, heels (plausible positions)."""
    n = len(kp17)
    extra = np.zeros((n, 9, 3))
    nose, ls, rs, lh, rh, la, ra = (kp17[:, j, :2] for j in (0, 5, 6, 11, 12, 15, 16))
    extra[:, 0, :2] = nose + [0.0, -30.0]            # head (top)
    extra[:, 1, :2] = (ls + rs) / 2                   # neck
    extra[:, 2, :2] = (lh + rh) / 2                   # hip
    extra[:, 3, :2], extra[:, 4, :2] = la + [8, 6], ra + [-8, 6]     # big toes
    extra[:, 5, :2], extra[:, 6, :2] = la + [12, 4], ra + [-12, 4]   # small toes
    extra[:, 7, :2], extra[:, 8, :2] = la + [-3, 3], ra + [3, 3]     # heels
    extra[:, :, 2] = 0.8
    return np.round(np.concatenate([kp17, extra], axis=1), 2)


def halpe136(kp17: np.ndarray) -> np.ndarray:
    """(N, 136, 3): Halpe-26 + 68 face points around the nose + 2 x 21 hand points around the wrists."""
    body = halpe26(kp17)
    n = len(kp17)
    rng = np.random.default_rng(1)
    face = kp17[:, None, 0, :2] + rng.normal(0, 6, (n, 68, 2))
    hands = np.concatenate([kp17[:, None, 9, :2] + rng.normal(0, 5, (n, 21, 2)),
                            kp17[:, None, 10, :2] + rng.normal(0, 5, (n, 21, 2))], axis=1)
    rest = np.concatenate([np.concatenate([face, hands], axis=1), np.full((n, 110, 1), 0.5)], axis=2)
    return np.round(np.concatenate([body, rest], axis=1), 2)


def boxes_xyxy(kp: np.ndarray, margin: float = 20.0) -> np.ndarray:
    return np.round(np.concatenate([kp[:, :, :2].min(1) - margin, kp[:, :, :2].max(1) + margin], axis=1), 2)


def mmpose_instances(kp: np.ndarray, scores: np.ndarray, boxes: np.ndarray, bbox_scores=(0.93, 0.71)) -> list[dict]:
    """mmpose's split_instances on pred_instances holding these keypoints and person boxes (x1, y1, x2, y2),
    in float32 as a model outputs them."""
    from mmengine.structures import InstanceData
    from mmpose.structures import split_instances

    inst = InstanceData()
    inst.keypoints = kp[:, :, :2].astype(np.float32)
    inst.keypoint_scores = scores.astype(np.float32)
    inst.bboxes = boxes.astype(np.float32)
    inst.bbox_scores = np.asarray(bbox_scores, np.float32)
    return split_instances(inst)


def write_mmpose(out: Path) -> list[Path]:
    import mmengine
    from mmengine.fileio.handlers.json_handler import set_default
    from mmpose.datasets.datasets.utils import parse_pose_metainfo

    from dpmesh_infer.detect.detectors import config_path

    kp = scene_keypoints()
    boxes = boxes_xyxy(kp)  # the person detector's boxes
    scores = kp[:, :, 2].copy()
    # person 1: ankles not found (heatmap codecs: location -1, score <= 0; codecs/utils/post_processing.py)
    kp[1, 15:17, :2] = -1.0
    scores[1, 15:17] = [-0.02, 0.0]
    written = []
    # 1. MMPoseInferencer(..., pred_out_dir=DIR) on scene.jpg -> DIR/scene.json (postprocess: mmengine.dump)
    path = out / "mmpose_inferencer_scene.json"
    mmengine.dump(mmpose_instances(kp, scores, boxes), str(path), indent="  ")
    written.append(path)
    # 2. the same on a 2-frame video -> DIR/clip.json (_finalize_video_processing: frame_id from 0)
    frames = [mmpose_instances(kp + [[[3.0 * i, 0.0, 0.0]]], scores, boxes + [[3.0 * i, 0, 3.0 * i, 0]])
              for i in range(2)]
    path = out / "mmpose_inferencer_clip.json"
    mmengine.dump([dict(frame_id=i, instances=pred) for i, pred in enumerate(frames)], str(path), indent="  ")
    written.append(path)

    def meta(name: str) -> dict:
        return parse_pose_metainfo(dict(from_file=str(config_path(f"mmpose:configs/_base_/datasets/{name}.py"))))

    # 3. demo/topdown_demo_with_mmdet.py --input scene.jpg --save-predictions (an image)
    path = out / "mmpose_demo_scene.json"
    with open(path, "w") as f:
        json.dump(dict(meta_info=meta("coco"), instance_info=mmpose_instances(kp, scores, boxes)), f, indent="\t",
                  default=set_default)
    written.append(path)
    # 4. demo/bottomup_demo.py on a 2-frame video with a Halpe-26 model (frame_idx counted from 1)
    h26 = halpe26(scene_keypoints())
    info = [dict(frame_id=i + 1, instances=mmpose_instances(h26 + [[[2.0 * i, 0.0, 0.0]]], h26[:, :, 2],
                                                            boxes_xyxy(h26) + [[2.0 * i, 0, 2.0 * i, 0]]))
            for i in range(2)]
    path = out / "mmpose_demo_halpe26_clip.json"
    with open(path, "w") as f:
        json.dump(dict(meta_info=meta("halpe26"), instance_info=info), f, indent="\t", default=set_default)
    written.append(path)
    return written


def alphapose_entry(kp: np.ndarray, score: float, box_xywh, idx, image_id) -> dict:
    """One result of AlphaPose's write_json (default form): field order and types as written there."""
    result = {"image_id": image_id, "category_id": 1,
              "keypoints": [float(v) for v in kp.reshape(-1)], "score": float(score)}
    result["box"] = [float(b) for b in box_xywh]
    result["idx"] = idx
    return result


def write_alphapose(out: Path) -> list[Path]:
    kp17 = scene_keypoints()
    xyxy = boxes_xyxy(kp17)
    xywh = np.round(np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1), 2)
    scores = (2.72, 2.41)  # proposal scores: mean + box score + 1.25 max (writer.py), so above 1
    written = []
    for name, kp in (("alphapose_results.json", kp17), ("alphapose_halpe26.json", halpe26(kp17)),
                     ("alphapose_halpe136.json", halpe136(kp17))):
        path = out / name
        path.write_text(json.dumps([alphapose_entry(kp[i], scores[i], xywh[i], [float(i)], IMAGE)
                                    for i in range(len(kp))]))
        written.append(path)
    # --format open: {image name: {"version", "people": [{"pose_keypoints_2d": 18 x 3}]}}, neck appended as
    # the shoulder mean, then AlphaPose's indexarr into the COCO-17 + neck list
    indexarr = [0, 51, 18, 24, 30, 15, 21, 27, 36, 42, 48, 33, 39, 45, 6, 3, 12, 9]
    people = []
    for i in range(len(kp17)):
        k = [float(v) for v in kp17[i].reshape(-1)]
        k += [(k[15] + k[18]) / 2, (k[16] + k[19]) / 2, (k[17] + k[20]) / 2]
        people.append({"pose_keypoints_2d": [k[j + d] for j in indexarr for d in range(3)]})
    path = out / "alphapose_openpose.json"
    path.write_text(json.dumps({IMAGE: {"version": "AlphaPose v0.3", "people": people}}))
    written.append(path)
    return written


def write_cocoapi(out: Path) -> list[Path]:
    """cocoapi keypoint results (``COCO.loadRes`` input) for COCO 2014 val images 136 and 137."""
    kp17 = scene_keypoints()
    entries = [{"image_id": 136, "category_id": 1, "keypoints": [float(v) for v in kp17[i].reshape(-1)],
                "score": s} for i, s in enumerate((0.87, 0.66))]
    entries.append({"image_id": 137, "category_id": 1, "keypoints": entries[0]["keypoints"], "score": 0.5})
    path = out / "cocoapi_results.json"
    path.write_text(json.dumps(entries))
    return [path]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    from dpmesh_infer.detect.mmpose_compat import import_mmpose

    import_mmpose()
    for p in write_mmpose(out) + write_alphapose(out) + write_cocoapi(out):
        print(p)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
