"""Read and write user keypoint files (``dpmesh predict --keypoints FILE``).

Accepted formats, detected from the content (anything else is a KeypointFileError listing them):

1. COCO keypoint results (cocoapi ``loadRes``): a JSON list of ``{"keypoints": [3*J numbers], "score":
   float, "bbox": [x, y, w, h] (optional), "category_id": int (optional; entries other than 1 = person
   are skipped)}`` with J = 17 (COCO), 26 (Halpe-26), 133 (COCO-WholeBody) or 136 (Halpe-136).
   Which image an entry belongs to: ``"file_name"`` (str) if present, else ``"image_id"``, else the file
   describes a single image. A numeric ``image_id`` matches an image whose file stem is that number
   (zero padding allowed: ``000000397133.jpg`` <-> 397133) or a standard COCO name ending in it
   (``COCO_val2014_000000397133.jpg``); :meth:`KeypointSet.unmatched` lists the ids no image matched.
2. AlphaPose results (``alphapose-results.json``, AlphaPose's ``write_json``): the same list with the
   image's file name as ``image_id`` and the box as ``"box": [x, y, w, h]``; ``idx`` is ignored; COCO-17,
   Halpe-26 or Halpe-136 keypoints. AlphaPose's ``--format open`` output (one ``{"people": ...}`` per
   image name) and ``--format cmu`` (``{"bodies": [{"joints": [54 numbers]}]}``) are read too.
3. COCO-style table: ``{"images": [{"id": int, "file_name": str}, ...], "annotations" | "results":
   [entries as in 1, with "image_id"]}``. Other top-level keys ("info", "categories", ...) are ignored.
   Listed images without entries have zero people. In an ``"annotations"`` table whose third values
   are all COCO visibility flags (0, 1, 2), the flags become confidences: 1 and 2 (labelled) -> 1.0,
   0 (not labelled) -> 0.0, as ``dpmesh data convert coco`` does; ``num_keypoints: 0`` means no labelled
   keypoint; ``iscrowd: 1`` regions are not people and are skipped with a reason.
4. OpenPose, one file per image: ``{"people": [{"pose_keypoints_2d": [54 or 75 numbers]}]}`` (COCO-18
   or BODY_25 model; the old key "pose_keypoints" is accepted too).
5. mmpose (:mod:`.mmpose`): ``MMPoseInferencer(..., pred_out_dir=DIR)`` files (per image a list of
   ``{"keypoints": [[x, y], ...], "keypoint_scores": [...], "bbox": [[x1, y1, x2, y2]], "bbox_score"}``;
   for a video a list of ``{"frame_id", "instances"}``), and the demo scripts' ``--save-predictions``
   file (``{"meta_info": {...}, "instance_info": [...]}``, per image or per frame).
6. Our own (``dpmesh detect`` output, written by :func:`write_keypoints_json`)::

       {"format": "dpmesh-keypoints", "version": 1, "images": [file names, including those with no
        person], "people": [{"file_name": str | null, "joint_format": "coco17" | "openpose18" |
        "openpose25" | "halpe26" | "halpe136" | "coco_wholebody", "keypoints": [3*J numbers],
        "score": float | null, "bbox": [x, y, w, h] | null}]}

7. A folder of per-image files (:mod:`.folder`: mmpose's ``pred_out_dir``, OpenPose's ``--write_json``):
   each file is matched to the image with the same stem (``a.json`` or ``a_keypoints.json`` <-> ``a.jpg``).

Keypoints are ``[x, y, score]`` in image pixels. Values must be finite; scores must be >= 0 (scores
above 1, which some detectors emit, are accepted; mmpose's scores <= 0 mean "not found" and become 0).
People with no labelled keypoint (every confidence 0) are kept in the file's person list but carry a
``skip_reason``: the pipeline does not reconstruct them from their box alone and reports the reason
(``read_keypoints(..., keep_box_only=True)`` / ``dpmesh predict --keep-box-only`` reconstructs them
from the box). Positions are checked against the image only once its size is known:
:func:`validate_against_image`.

Modules: :mod:`.people` (``KeypointPerson``, ``KeypointSet``, the format's names and skip reasons),
:mod:`.parse` (format detection, the COCO-style / OpenPose / own readers, the writer, the image check),
:mod:`.alphapose`, :mod:`.mmpose`, :mod:`.folder` (the other formats), :mod:`.naming` (image ids and
frame numbers in file names).
"""

from .parse import read_keypoints, read_openpose_json, validate_against_image, write_keypoints_json
from .people import (
    BOX_ONLY_REASON,
    CROWD_REASON,
    EXPECTED_FORMATS,
    FORMAT_NAME,
    FORMAT_VERSION,
    RESULT_FORMATS,
    KeypointPerson,
    KeypointSet,
    person_boxes,
    stack_kp30,
)

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "EXPECTED_FORMATS", "KeypointPerson", "KeypointSet", "stack_kp30",
           "person_boxes", "read_keypoints", "read_openpose_json", "write_keypoints_json", "validate_against_image",
           "BOX_ONLY_REASON", "CROWD_REASON", "RESULT_FORMATS"]
