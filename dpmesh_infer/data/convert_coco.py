"""COCO and CrowdPose keypoint annotations (+ optional NeuralAnnot SMPL) -> dpmesh dataset.

Both are COCO-style files (``images``, ``annotations`` with ``keypoints`` [x, y, v] x J, ``bbox``
[x, y, w, h], ``iscrowd``); they differ in the keypoint set and in a known image-size bug of
CrowdPose. What is kept and dropped, and why: docs/DATA.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..geometry.joints import coco17_to_j30, map_to_j30
from .convert_common import (
    CocoFile,
    ConversionResult,
    NeuralAnnot,
    bbox_xywh,
    check_image_files,
    image_root_value,
    image_size,
    infer_split,
    keypoints_xyv,
    prepare_out,
    write_records,
)  # fmt: skip
from .format import DatasetError, ImageAnnotation, PersonAnnotation

__all__ = ["COCO17_FILE_NAMES", "CROWDPOSE14_FILE_NAMES", "CROWDPOSE14_NAMES", "SIZE_MODES", "convert_coco",
           "convert_crowdpose", "crowdpose14_to_j30"]

log = logging.getLogger(__name__)

#: Keypoint names in ``categories[0].keypoints`` of person_keypoints_*2017.json (COCO-17 order).
COCO17_FILE_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)  # fmt: skip
#: Keypoint names in ``categories[0].keypoints`` of crowdpose_*.json, in file order.
CROWDPOSE14_FILE_NAMES = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
)  # fmt: skip
#: The same 14 CrowdPose joints as J30 names ("head" is the top of the head: Head_top).
CROWDPOSE14_NAMES = (
    "L_Shoulder", "R_Shoulder", "L_Elbow", "R_Elbow", "L_Wrist", "R_Wrist", "L_Hip", "R_Hip", "L_Knee", "R_Knee",
    "L_Ankle", "R_Ankle", "Head_top", "Neck",
)  # fmt: skip
SIZE_MODES = ("auto", "json", "swap", "image")
_SIZE_TOLERANCE_PX = 2.0


def crowdpose14_to_j30(kp: np.ndarray) -> np.ndarray:
    """CrowdPose-14 (N,14,3) [x, y, v] px -> (N,30,3): copied by name (head -> Head_top, neck -> Neck);
    Pelvis = mean of the hips with v = product, as :func:`~dpmesh_infer.geometry.crops.coco17_to_j30` does."""
    return map_to_j30(np.asarray(kp, dtype=np.float64), CROWDPOSE14_NAMES, add_neck=False)


@dataclasses.dataclass(frozen=True)
class _Spec:
    kind: str  # "coco" | "crowdpose"
    what: str  # for messages
    file_names: tuple[str, ...]
    to_j30: Callable[[np.ndarray], np.ndarray]


_COCO = _Spec("coco", "COCO keypoint annotation file", COCO17_FILE_NAMES, coco17_to_j30)
_CROWDPOSE = _Spec("crowdpose", "CrowdPose annotation file", CROWDPOSE14_FILE_NAMES, crowdpose14_to_j30)


def convert_coco(
    annotations: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike,
    neuralannot: str | os.PathLike | None = None,
    split: str | None = None,
    min_keypoints: int = 1,
    max_fit_err: float | None = None,
    check_images: bool = False,
    overwrite: bool = False,
    name: str | None = None,
) -> ConversionResult:
    """COCO ``person_keypoints_{train,val}2017.json`` (+ NeuralAnnot SMPL) -> a dpmesh dataset at ``out``.

    Per person: ``keypoints_2d`` (30,3) = COCO-17 [x, y, v>0] mapped with ``coco17_to_j30`` (Pelvis = hip
    mean, Neck = shoulder mean, visibility = product), ``bbox`` [x, y, w, h] px as annotated, and, when
    ``neuralannot`` has the annotation id, ``smpl`` = global_orient/body_pose/betas exactly as fitted
    (neutral, transl null: NeuralAnnot's camera is per person). Image ``camera`` is null.

    Args:
        annotations: the COCO keypoint file. out: new dataset directory.
        images: the image folder the ``file_name`` entries are relative to (e.g. ``coco/train2017``); stored
            as the dataset's absolute image root, never copied.
        neuralannot: ``MSCOCO_train_SMPL_NeuralAnnot.json`` (dict keyed by annotation id).
        split: output split name (default: from the file name, e.g. "train").
        min_keypoints: persons with fewer labelled (v>0) keypoints are skipped (1 = 3DCrowdNet's
            ``num_keypoints == 0`` rule). ``iscrowd`` regions are always skipped.
        max_fit_err: NeuralAnnot entries whose ``fit_err`` exceeds it get ``smpl.valid = False``.
        check_images: fail unless every referenced image file exists under ``images``.
        overwrite: replace a dataset already at ``out``. name: dataset name (default "coco-<split>").

    Raises:
        DatasetError: missing or malformed files (naming the file and the entry), no person left.
    """
    return _convert_coco_like(_COCO, annotations, out, images=images, neuralannot=neuralannot, split=split,
                              min_keypoints=min_keypoints, max_fit_err=max_fit_err, check_images=check_images,
                              overwrite=overwrite, name=name, size="json")


def convert_crowdpose(
    annotations: str | os.PathLike,
    out: str | os.PathLike,
    *,
    images: str | os.PathLike,
    neuralannot: str | os.PathLike | None = None,
    split: str | None = None,
    min_keypoints: int = 1,
    max_fit_err: float | None = None,
    size: str = "auto",
    check_images: bool = False,
    overwrite: bool = False,
    name: str | None = None,
) -> ConversionResult:
    """CrowdPose ``crowdpose_{train,val,test,trainval}.json`` (+ NeuralAnnot SMPL) -> a dpmesh dataset.

    Keypoints (14: shoulders, elbows, wrists, hips, knees, ankles, head, neck) are copied by name into
    J30 (head -> Head_top 29, neck -> Neck 12, Pelvis = hip mean, v = product); the rest is as
    :func:`convert_coco` (NeuralAnnot file: ``CrowdPose_{split}_SMPL_NeuralAnnot.json``).

    ``size`` picks the image width/height: some releases of crowdpose_train/test/trainval.json have them
    swapped (CrowdPose issue #12; 3DCrowdNet swaps them for every non-val file). "json" trusts the file,
    "swap" swaps every image, "image" reads each image file's header (needs the images), "auto" (default)
    decides once per file from the labelled keypoints: swap when they lie outside the JSON size but
    inside the swapped one. Other arguments: see :func:`convert_coco` (default name "crowdpose-<split>").
    """
    if size not in SIZE_MODES:
        raise DatasetError(f"size must be one of {list(SIZE_MODES)}, got {size!r}")
    return _convert_coco_like(_CROWDPOSE, annotations, out, images=images, neuralannot=neuralannot, split=split,
                              min_keypoints=min_keypoints, max_fit_err=max_fit_err, check_images=check_images,
                              overwrite=overwrite, name=name, size=size)


def _convert_coco_like(spec: _Spec, annotations, out, *, images, neuralannot, split, min_keypoints, max_fit_err,
                       check_images, overwrite, name, size) -> ConversionResult:
    annotations = Path(annotations)
    if min_keypoints < 0:
        raise DatasetError(f"min_keypoints must be >= 0, got {min_keypoints}")
    split = infer_split(annotations, split)
    out = prepare_out(out, overwrite, split=split, inputs=[("annotation file", annotations),
                                                          ("NeuralAnnot file", neuralannot)])
    root = image_root_value(images)
    coco = CocoFile(annotations, spec.what, keypoint_names=spec.file_names)
    na = NeuralAnnot(neuralannot, max_fit_err=max_fit_err) if neuralannot is not None else None
    result = ConversionResult(out=out, split=split)
    n_joints = len(spec.file_names)
    few = f"persons with < {min_keypoints} labelled keypoints"

    records: list[ImageAnnotation] = []
    raw_kp: list[list[np.ndarray]] = []  # per record, per person (J,3) [x, y, v] for the size check
    for iid, img in coco.images.items():
        iwhere = coco.image_where(img)
        file_name = img.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise DatasetError(f"{iwhere}: no 'file_name'")
        width, height = image_size(img, iwhere)
        persons, kps = [], []
        for ann in coco.by_image[iid]:
            where = coco.where(ann)
            if ann.get("iscrowd"):
                result.skipped["iscrowd regions"] += 1
                continue
            if "keypoints" not in ann:
                raise DatasetError(f"{where}: no 'keypoints'")
            kp = keypoints_xyv(ann["keypoints"], n_joints, where)
            if int(np.count_nonzero(kp[:, 2] > 0)) < min_keypoints:
                result.skipped[few] += 1
                continue
            kp[:, 2] = (kp[:, 2] > 0).astype(np.float64)
            bbox = bbox_xywh(ann.get("bbox"), where)
            persons.append(PersonAnnotation(
                keypoints_2d=spec.to_j30(kp[None])[0].astype(np.float32),
                bbox=None if bbox is None else bbox.astype(np.float32),
                smpl=na.get(ann["id"]) if na is not None else None))
            kps.append(kp)
        if not persons:
            result.skipped["images without a kept person"] += 1
            continue
        records.append(ImageAnnotation(image=file_name, width=width, height=height, persons=persons,
                                       tags=[spec.kind]))
        raw_kp.append(kps)

    if not records:
        raise DatasetError(f"{annotations}: no person left to convert ({_reasons(result)})")
    if spec.kind == "crowdpose":
        _fix_sizes(records, raw_kp, size, root, annotations, result)
    if check_images:
        check_image_files(root, records, annotations)
    if na is not None:
        note = f"NeuralAnnot SMPL for {na.used} persons"
        if max_fit_err is not None:
            note += f" ({na.poor_fits} with fit_err > {max_fit_err:g} marked invalid)"
        result.notes.append(note)
    source = f"dpmesh data convert {spec.kind}: {annotations.name}" + (
        f" + {Path(neuralannot).name}" if neuralannot is not None else "")
    notes = ("keypoints_2d: J30 from the annotated keypoints, v = labelled (0/1). smpl: NeuralAnnot pose and "
             "shape as fitted (no |beta| > 3 zeroing), neutral, transl null; camera null (NeuralAnnot fits use a "
             "per-person virtual camera, see docs/DATA.md).")
    return write_records(out, name=name or f"{spec.kind}-{split}", image_root=root, source=source, notes=notes,
                         split=split, records=records, result=result)


def _reasons(result: ConversionResult) -> str:
    return ", ".join(f"{n} {r}" for r, n in sorted(result.skipped.items())) or "the file has no annotations"


def _fix_sizes(records: list[ImageAnnotation], raw_kp: list[list[np.ndarray]], size: str, root: Path,
               annotations: Path, result: ConversionResult) -> None:
    """Apply the ``size`` policy of :func:`convert_crowdpose` to ``records`` in place."""
    if size == "json":
        return
    if size == "swap":
        for rec in records:
            rec.width, rec.height = rec.height, rec.width
        result.notes.append(f"width/height swapped for all {len(records)} images (--size swap)")
        return
    if size == "image":
        from PIL import Image, UnidentifiedImageError

        changed = 0
        for rec in records:
            path = root / rec.image
            try:
                with Image.open(path) as im:  # reads the header only
                    w, h = im.size
            except (OSError, UnidentifiedImageError) as e:
                raise DatasetError(f"{annotations}: cannot read the size of image {path} ({e}); --size image "
                                   "needs every image") from None
            changed += (w, h) != (rec.width, rec.height)
            rec.width, rec.height = int(w), int(h)
        result.notes.append(f"sizes read from the image files ({changed} differed from the JSON)")
        return
    # auto: one decision for the whole file, from where the labelled keypoints lie
    json_only = swap_only = 0
    for rec, kps in zip(records, raw_kp):
        pts = np.concatenate([k[k[:, 2] > 0, :2] for k in kps])
        if rec.width == rec.height or len(pts) == 0:
            continue
        mx, my = pts.max(axis=0)
        fits_json = mx <= rec.width + _SIZE_TOLERANCE_PX and my <= rec.height + _SIZE_TOLERANCE_PX
        fits_swap = mx <= rec.height + _SIZE_TOLERANCE_PX and my <= rec.width + _SIZE_TOLERANCE_PX
        json_only += fits_json and not fits_swap
        swap_only += fits_swap and not fits_json
    evidence = f"{swap_only} images fit only the swapped size, {json_only} only the JSON size"
    if swap_only > 100 * json_only:
        for rec in records:
            rec.width, rec.height = rec.height, rec.width
        result.notes.append(f"width/height swapped for all images: the file has them reversed ({evidence})")
    elif json_only > 100 * swap_only or (json_only == swap_only == 0):
        log.info("CrowdPose image sizes taken from the JSON (%s)", evidence)
    else:
        raise DatasetError(f"{annotations}: cannot tell whether the image width/height are swapped ({evidence}); "
                           "pass --size image (read the image files), json or swap")
