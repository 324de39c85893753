"""A folder of per-image keypoint files: ``--keypoints DIR``.

What writes such folders: ``MMPoseInferencer(..., pred_out_dir=DIR)`` (``DIR/<image stem>.json``) and
OpenPose's ``--write_json DIR`` (``DIR/<image stem>_keypoints.json``); any single-image file of
:func:`dpmesh_infer.keypoint_files.read_keypoints` works. Every ``*.json`` under ``DIR`` (recursive,
sorted) is read; its key is its path relative to ``DIR`` without ``.json`` (and without OpenPose's
``_keypoints``), matched to an image path without its suffix: ``DIR/sub/a.json`` <-> ``.../sub/a.jpg``
(the longest matching relative path first, then the stem alone).
"""

from __future__ import annotations

from pathlib import Path

from .parse import _fail, _read_file
from .people import KeypointPerson, KeypointSet

__all__ = ["read_keypoint_folder"]

_OPENPOSE_SUFFIX = "_keypoints"


def read_keypoint_folder(folder: Path) -> KeypointSet:
    """Every single-image keypoint file under ``folder`` -> one KeypointSet keyed by relative stem."""
    files = sorted(p for p in folder.rglob("*.json") if p.is_file())
    if not files:
        raise _fail(str(folder), "a keypoint folder must hold one .json file per image (mmpose pred_out_dir, "
                                 "OpenPose --write_json); found none")
    per_image: dict[str | int | None, list[KeypointPerson]] = {}
    formats = set()
    for path in files:
        part = _read_file(path)
        if not part.single_image:
            raise _fail(str(path), f"holds {part.describe_keys()}: a keypoint folder holds one file per image "
                                   "(pass a file with several images as --keypoints FILE instead)")
        rel = path.relative_to(folder).with_suffix("").as_posix()
        if rel.endswith(_OPENPOSE_SUFFIX) and part.file_format == "openpose":
            rel = rel[: -len(_OPENPOSE_SUFFIX)]
        if rel in per_image:
            raise _fail(str(path), f"a second file for image stem {rel!r}")
        per_image[rel] = part.per_image[None]
        formats.add(part.file_format)
    return KeypointSet(per_image, str(folder), f"folder ({', '.join(sorted(formats))})", by_stem=True)
