"""3DPW as parsed by 3DCrowdNet / I2L-MeshNet (COCO-style JSON) -> dpmesh dataset.

Field names assumed (read from the loaders of 3DCrowdNet_RELEASE ``data/PW3D/PW3D.py``, DPMesh
``dataloader/PW3D.py``, I2L-MeshNet_RELEASE ``data/PW3D/PW3D.py`` and 3DCrowdNet
``tool/match_3dpw_2dpose.py``; docs/DATA.md lists what could not be verified):

- ``images[]``: ``id``, ``file_name``, ``sequence``, ``width``, ``height``,
  ``cam_param`` {``focal`` [fx, fy], ``princpt`` [cx, cy]} (pixels);
- ``annotations[]``: ``id``, ``image_id``, ``bbox`` [x, y, w, h],
  ``smpl_param`` {``pose`` (72) axis-angle, ``shape`` (10), ``trans`` (3) metres, ``gender``}: the mesh
  ``SMPL(pose, shape) + trans`` is already in the camera frame of ``cam_param`` (the loaders project
  it with cam_param directly); ``joint_img`` (24 x 2) the 24 SMPL joints in image px;
  ``openpose_result`` (18 x 3) the matched OpenPose detection [x, y, conf].
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from .convert_common import (
    CocoFile,
    ConversionResult,
    bbox_xywh,
    check_image_files,
    image_root_value,
    image_size,
    infer_split,
    numbers,
    prepare_out,
    read_json,
    write_records,
)  # fmt: skip
from .format import DatasetError, ImageAnnotation, PersonAnnotation, SMPLParams

__all__ = ["PW3D_CROWD_SEQUENCES", "convert_3dpw"]

log = logging.getLogger(__name__)

#: 3DPW-Crowd (3DCrowdNet): the validation-split images of these sequences (substring match, as upstream).
PW3D_CROWD_SEQUENCES = ("courtyard_hug_00", "courtyard_dancing_00")
_FORMATS_BY_JOINTS = {17: "coco17", 18: "openpose18", 25: "openpose25"}
_GENDERS = {"male": "male", "m": "male", "female": "female", "f": "female", "neutral": "neutral"}
#: Max |difference| of pose/shape/trans for a subset-file person to be the same person (JSON round trips).
_MATCH_TOL = 1e-3


def convert_3dpw(
    annotations: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike,
    split: str | None = None,
    oc: str | os.PathLike | None = None,
    pc: str | os.PathLike | None = None,
    detections: str | os.PathLike | None = None,
    tags: Iterable[str] = (),
    check_images: bool = False,
    overwrite: bool = False,
    name: str | None = None,
) -> ConversionResult:
    """A 3DCrowdNet-style ``3DPW_latest_{train,validation,test}.json`` (or I2L-MeshNet ``3DPW_{split}.json``,
    or a subset file ``3DPW_oc.json`` / ``3DPW_pc.json`` itself) -> a dpmesh dataset at ``out``.

    Per image: ``image`` = ``<sequence>/<file_name>`` (relative to ``images``, the ``imageFiles`` folder),
    ``camera`` = ``cam_param``. Per person: ``smpl`` = pose/shape/trans with the annotated gender, ``transl``
    in the camera frame (metres); ``keypoints_2d`` rows 0-23 = ``joint_img`` (v = 1; rows 24-29 v = 0),
    all v = 0 when the file has no ``joint_img``; ``bbox`` as annotated; ``input_keypoints`` = the
    detection of ``detections`` for that annotation id when given, else ``openpose_result``
    ("openpose18" or "openpose25" by its size). Nothing is skipped.

    Tags (image and person level): "3dpw" on every image; "3dpw-crowd" for the sequences of
    :data:`PW3D_CROWD_SEQUENCES`; "3dpw-oc" / "3dpw-pc" for persons that are also in the ``oc`` / ``pc``
    subset files (same sequence and frame, same SMPL parameters within 1e-3, or the same annotation id
    when the subset file has no SMPL); ``tags`` are added to every image and person.

    Args:
        detections: JSON keyed by annotation id, each value ``{"coco_joints": 17 x 3}`` (3DCrowdNet's
            ``3DPW_validation_crowd_hhrnet_result.json``), ``{"openpose_result": 18|25 x 3}``, or a bare
            list of 17, 18 or 25 joints x [x, y, conf] (x [x, y]: conf 1).
        split: output split name (default: from the file name; required for the subset files).
        Others: as :func:`~dpmesh_infer.data.converters.convert_coco` (default name "3dpw-<split>").

    Raises:
        DatasetError: missing or malformed files or fields, naming the file and the entry.
    """
    annotations = Path(annotations)
    split = infer_split(annotations, split)
    out = prepare_out(out, overwrite, split=split, inputs=[("annotation file", annotations), ("--oc file", oc),
                                                          ("--pc file", pc), ("--detections file", detections)])
    root = image_root_value(images)
    extra_tags = [t for t in tags]
    for t in extra_tags:
        if not isinstance(t, str) or not t:
            raise DatasetError(f"tags must be non-empty strings, got {t!r}")
    db = CocoFile(annotations, "3DPW annotation file")
    subsets = {tag: _subset_index(path, tag) for tag, path in (("3dpw-oc", oc), ("3dpw-pc", pc)) if path is not None}
    dets = _read_detections(detections) if detections is not None else None
    result = ConversionResult(out=out, split=split)
    matched = {tag: set() for tag in subsets}
    det_used = no_joint_img = 0

    records = []
    for iid, img in db.images.items():
        iwhere = db.image_where(img)
        seq, file_name = img.get("sequence"), img.get("file_name")
        if not isinstance(seq, str) or not seq or not isinstance(file_name, str) or not file_name:
            raise DatasetError(f"{iwhere}: needs 'sequence' and 'file_name' strings")
        width, height = image_size(img, iwhere)
        cam = img.get("cam_param")
        if not isinstance(cam, dict) or "focal" not in cam or "princpt" not in cam:
            raise DatasetError(f"{iwhere}: needs 'cam_param' {{'focal': [fx, fy], 'princpt': [cx, cy]}}")
        focal = numbers(cam["focal"], (2,), iwhere, "cam_param.focal")
        if np.any(focal <= 0):
            raise DatasetError(f"{iwhere}: cam_param.focal must be positive")
        principal = numbers(cam["princpt"], (2,), iwhere, "cam_param.princpt")
        crowd = any(s in seq for s in PW3D_CROWD_SEQUENCES)
        persons = []
        for ann in db.by_image[iid]:
            where = db.where(ann)
            smpl, key = _smpl(ann, where)
            p_tags = (["3dpw-crowd"] if crowd else []) + list(extra_tags)
            for tag, index in subsets.items():
                hit = _match(index.get((seq, file_name), []), ann["id"], key)
                if hit is not None:
                    p_tags.append(tag)
                    matched[tag].add(hit)
            inp = fmt = None
            if dets is not None and str(ann["id"]) in dets:
                inp, fmt = _detection(dets[str(ann["id"])], f"{detections}: entry {str(ann['id'])!r}")
                det_used += 1
            elif ann.get("openpose_result") is not None:
                inp, fmt = _detection(ann["openpose_result"], where, name="openpose_result")
            bbox = bbox_xywh(ann.get("bbox"), where)
            persons.append(PersonAnnotation(
                keypoints_2d=_joint_img(ann.get("joint_img"), where),
                bbox=None if bbox is None else bbox.astype(np.float32),
                input_keypoints=None if inp is None else inp.astype(np.float32), input_format=fmt, smpl=smpl,
                tags=sorted(set(p_tags), key=p_tags.index)))
            no_joint_img += ann.get("joint_img") is None
        if not persons:
            result.skipped["images without a person"] += 1
            continue
        image_tags = ["3dpw"] + [t for t in ("3dpw-crowd", "3dpw-oc", "3dpw-pc") if any(t in p.tags for p in persons)]
        image_tags += [t for t in extra_tags if t not in image_tags]
        records.append(ImageAnnotation(image=f"{seq}/{file_name}", width=width, height=height, persons=persons,
                                       focal=focal.astype(np.float32), principal=principal.astype(np.float32),
                                       tags=image_tags))

    if not records:
        raise DatasetError(f"{annotations}: no annotated person to convert")
    if check_images:
        check_image_files(root, records, annotations)
    for tag, index in subsets.items():
        total = sum(len(v) for v in index.values())
        if len(matched[tag]) < total:
            result.notes.append(f"{tag}: {total - len(matched[tag])} of {total} subset persons are not in this file")
    if no_joint_img:
        result.notes.append(f"{no_joint_img} persons have no joint_img (keypoints_2d all v=0)")
    if dets is not None:
        result.notes.append(f"detections from {Path(detections).name} for {det_used} persons")
    files = [annotations.name] + [Path(p).name for p in (oc, pc, detections) if p is not None]
    source = "dpmesh data convert 3dpw: " + " + ".join(files)
    notes = ("3DPW GT: smpl (pose, shape, trans, gender) in the camera frame of 'camera'; keypoints_2d rows 0-23 "
             "from joint_img; input_keypoints from OpenPose / the detections file.")
    return write_records(out, name=name or f"3dpw-{split}", image_root=root, source=source, notes=notes,
                         split=split, records=records, result=result)


def _smpl(ann: dict, where: str) -> tuple[SMPLParams, np.ndarray]:
    """SMPLParams of an annotation and its (85,) [pose, shape, trans] key for subset matching."""
    sp = ann.get("smpl_param")
    if not isinstance(sp, dict):
        raise DatasetError(f"{where}: needs 'smpl_param' {{pose, shape, trans, gender}}")
    for key in ("pose", "shape", "trans"):
        if key not in sp:
            raise DatasetError(f"{where}: smpl_param has no {key!r}")
    pose = numbers(sp["pose"], (72,), where, "smpl_param.pose")
    betas = numbers(sp["shape"], (10,), where, "smpl_param.shape")
    trans = numbers(sp["trans"], (3,), where, "smpl_param.trans")
    gender = _GENDERS.get(str(sp.get("gender", "neutral")).lower())
    if gender is None:
        raise DatasetError(f"{where}: smpl_param.gender {sp.get('gender')!r} is not male, female or neutral")
    smpl = SMPLParams(global_orient=pose[:3].astype(np.float32), body_pose=pose[3:].astype(np.float32),
                      betas=betas.astype(np.float32), transl=trans.astype(np.float32), gender=gender, valid=True)
    return smpl, np.concatenate([pose, betas, trans])


def _joint_img(value, where: str) -> np.ndarray:
    """``joint_img`` (24 SMPL joints x [x, y] px) -> keypoints_2d (30,3) float32, v = 1 on rows 0-23."""
    kp = np.zeros((30, 3), np.float32)
    if value is not None:
        kp[:24, :2] = numbers(value, (24, 2), where, "joint_img")
        kp[:24, 2] = 1.0
    return kp


def _detection(value, where: str, name: str = "detection") -> tuple[np.ndarray, str]:
    """One person's detector keypoints -> ((J,3) [x, y, conf], format) with J = 17, 18 or 25."""
    if isinstance(value, dict):
        keys = [k for k in ("coco_joints", "openpose_result", "openpose", "keypoints") if k in value]
        if len(keys) != 1:
            raise DatasetError(f"{where}: expected one of 'coco_joints', 'openpose_result', 'keypoints'")
        name, value = keys[0], value[keys[0]]
    try:
        a = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: {name} must be a list of numbers") from None
    for cols in (3, 2):
        if a.size % cols == 0 and a.size // cols in _FORMATS_BY_JOINTS:
            j = a.size // cols
            if name == "coco_joints" and j != 17:
                break
            kp = np.ones((j, 3))
            kp[:, :cols] = a.reshape(j, cols)
            if not np.all(np.isfinite(kp)) or np.any(kp[:, 2] < 0):
                raise DatasetError(f"{where}: {name} has NaN, infinite or negative-confidence values")
            return kp, _FORMATS_BY_JOINTS[j]
    raise DatasetError(f"{where}: {name} has {a.size} numbers; expected 17 (COCO), 18 or 25 (OpenPose) joints "
                       "x [x, y, conf]")


def _read_detections(path) -> dict:
    data = read_json(path, "detections file")
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: detections file must be an object keyed by annotation id")
    return data


def _subset_index(path, tag: str) -> dict[tuple[str, str], list[tuple[object, np.ndarray | None]]]:
    """(sequence, file_name) -> [(annotation id, (85,) SMPL key or None)] of a 3DPW-OC/PC file."""
    db = CocoFile(path, f"{tag} subset file")
    index: dict = {}
    for iid, img in db.images.items():
        seq, file_name = img.get("sequence"), img.get("file_name")
        if not isinstance(seq, str) or not isinstance(file_name, str):
            raise DatasetError(f"{db.image_where(img)}: needs 'sequence' and 'file_name' strings")
        for ann in db.by_image[iid]:
            key = _smpl(ann, db.where(ann))[1] if ann.get("smpl_param") is not None else None
            index.setdefault((seq, file_name), []).append((ann["id"], key))
    return index


def _match(candidates: list[tuple[object, np.ndarray | None]], ann_id, key: np.ndarray):
    """The annotation id (unique in its subset file) of the subset entry that is this person, or None."""
    for cid, ckey in candidates:
        if (cid == ann_id) if ckey is None else bool(np.max(np.abs(ckey - key)) <= _MATCH_TOL):
            return cid
    return None
