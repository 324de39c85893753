"""``dpmesh occlusion-map``: occlusion-sensitivity maps of the people of one photo, written to a folder.

Layout of ``OUT`` (every file atomic; ``occlusion.json`` last)::

    OUT/person_NN/occlusion.npz     the raw grids (OcclusionMap.arrays: errors_mm (gh, gw, 30),
                                    group_errors_mm (gh, gw, 7), positions, box, crop2img, ...)
    OUT/person_NN/crop_<group>.png  the group's map over the 256x256 crop, with a colour bar (mm)
    OUT/person_NN/photo_<group>.png the same map warped into the photo (crop box dashed)
    OUT/person_NN/summary.png       all groups over the crop
    OUT/occlusion.json              settings, grid, per person the peak error of each group and where

``NN`` is the person's index in the keypoint input. Groups: :data:`~.occlusion.JOINT_GROUPS`.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import write_bytes
from ..errors import InputError, NoPersonError
from .occlusion import JOINT_GROUPS, OcclusionConfig, OcclusionMap, occlusion_map

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SUMMARY_FILE = "occlusion.json"
_FORMAT_BY_JOINTS = {17: "coco17", 18: "openpose18", 25: "openpose25", 30: "j30"}


@dataclass
class OcclusionReport:
    """What :func:`run_occlusion_maps` computed and wrote."""

    maps: list[OcclusionMap]
    files: dict[int, list[Path]]
    summary: Path
    skipped: list[tuple[int, str]] = field(default_factory=list)


def keypoints_j30(keypoints) -> tuple[np.ndarray, list]:
    """(N, 30, 3) keypoints and fallback boxes from a list of KeypointPerson or an (N, J, 3) array
    (J = 17 COCO, 18/25 OpenPose, 30 dpmesh set), pixels."""
    from ..geometry.joints import to_j30
    from ..keypoint_files import KeypointPerson

    if isinstance(keypoints, (list, tuple)) and (not keypoints or isinstance(keypoints[0], KeypointPerson)):
        if not keypoints:
            return np.zeros((0, 30, 3)), []
        return np.stack([p.kp30() for p in keypoints]), [p.bbox for p in keypoints]
    arr = np.asarray(keypoints, np.float64)
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[1] not in _FORMAT_BY_JOINTS or not np.all(np.isfinite(arr)):
        raise InputError(f"keypoints must be finite (N, J, 3) [x, y, confidence] with J = 17, 18, 25 or 30; got "
                         f"shape {arr.shape}")
    fmt = _FORMAT_BY_JOINTS[arr.shape[1]]
    return (arr if fmt == "j30" else to_j30(arr, fmt)), [None] * len(arr)


def prepare(pipe, image_rgb: np.ndarray, keypoints, persons: Sequence[int] | None = None, where: str = "image"):
    """PersonInputs of the chosen persons (all by default) and the skipped ones (index, reason).

    Raises:
        InputError: a chosen index is not in the keypoints.
        NoPersonError: no chosen person can be cropped.
    """
    from ..geometry.crops import prepare_persons
    from ..keypoint_files import validate_against_image

    kp30, boxes = keypoints_j30(keypoints)
    h, w = image_rgb.shape[:2]
    kp30, _ = validate_against_image(kp30, w, h, where=where)
    wanted = list(range(len(kp30))) if persons is None else sorted(set(int(i) for i in persons))
    bad = [i for i in wanted if not 0 <= i < len(kp30)]
    if bad:
        raise InputError(f"--person {bad[0]}: {where} has {len(kp30)} person(s) in the keypoints (0..{len(kp30) - 1})")
    prepared, skipped = prepare_persons(image_rgb, kp30, pipe.config.preprocess, boxes)
    chosen = [p for p in prepared if p.person_index in wanted]
    skipped = [(i, r) for i, r in skipped if i in wanted]
    if not chosen:
        why = "; ".join(f"person {i}: {r}" for i, r in skipped) or "no person in the keypoints"
        raise NoPersonError(f"{where}: no person to analyse ({why})")
    return chosen, skipped


def _crop_rgb(person) -> np.ndarray:
    return np.clip(np.rint(np.asarray(person.image).transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)


def write_person(m: OcclusionMap, person, photo: np.ndarray, folder: Path, *, heatmap_size: int = 32) -> list[Path]:
    """The npz and the PNGs of one person (module docstring); returns the paths written.

    ``heatmap_size``: the joint grid side of ``person.joints32`` (crop px = grid · crop_size / heatmap_size).
    """
    from .figures import heat_overlay_png, summary_png

    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **m.arrays())
    written = [write_bytes(folder / "occlusion.npz", buf.getvalue())]
    crop = _crop_rgb(person)
    groups = m.group_errors()
    crop_pts = np.asarray(person.joints32, np.float64) * (m.crop_size / heatmap_size)  # keypoints, crop px
    kp = np.asarray(person.keypoints_2d, np.float64)
    cx, cy, side = (float(v) for v in m.box)
    crop_maps, points = {}, {}
    label = f"person {m.person_index}"
    for name, grid in groups.items():
        idx = [j for j in JOINT_GROUPS[name] if bool(person.mask[j])]
        points[name] = crop_pts[idx]
        crop_maps[name] = heat = m.to_crop(grid)
        title = (f"{label}: {name.replace('_', ' ')} (max {float(grid.max()):.1f} mm)\n"
                 f"occluder {m.patch} px, stride {m.stride} px")
        written.append(write_bytes(folder / f"crop_{name}.png", heat_overlay_png(crop, heat, title=title,
                                                                               points=points[name])))
        photo_heat, inside = m.to_image(grid)
        written.append(write_bytes(folder / f"photo_{name}.png", heat_overlay_png(
            photo, photo_heat, valid=inside, title=title, points=kp[idx, :2], box=(cx - side / 2, cy - side / 2, side),
            vmax=float(heat.max()))))
    written.append(write_bytes(folder / "summary.png", summary_png(
        crop, crop_maps, title=f"{label}: root-relative joint error (mm) with the occluder centred there",
        points=points)))
    return written


def _peak(m: OcclusionMap, grid: np.ndarray) -> dict:
    r, c = np.unravel_index(int(np.argmax(grid)), grid.shape)
    centre = np.array([m.positions_x[c], m.positions_y[r]], np.float64) + (m.patch - 1) / 2.0
    a = np.asarray(m.crop2img, np.float64)
    in_image = a[:, :2] @ centre + a[:, 2]
    return {"max_mm": round(float(grid.max()), 3), "mean_mm": round(float(grid.mean()), 3),
            "at_grid": [int(r), int(c)], "at_crop_px": centre.round(2).tolist(),
            "at_image_px": in_image.round(2).tolist()}


def summary_dict(image: str | None, cfg: OcclusionConfig, maps: list[OcclusionMap], files: dict[int, list[Path]],
                 out_dir: Path, skipped: list[tuple[int, str]]) -> dict:
    persons = []
    for m in maps:
        cx, cy, side = (float(v) for v in m.box)
        persons.append({
            "index": m.person_index,
            "bbox_xywh": [round(cx - side / 2, 3), round(cy - side / 2, 3), round(side, 3), round(side, 3)],
            "crops": int(m.errors_mm.shape[0] * m.errors_mm.shape[1]),
            "seconds": round(m.seconds, 3), "max_dropped_keypoints": int(m.dropped_keypoints.max()),
            "groups": {g: _peak(m, grid) for g, grid in m.group_errors().items()},
            "files": [str(p.relative_to(out_dir)) for p in files[m.person_index]],
        })
    gh, gw = maps[0].shape if maps else (0, 0)
    return {
        "schema_version": SCHEMA_VERSION, "tool": "dpmesh occlusion-map", "image": image,
        "image_size": list(maps[0].image_size) if maps else None, "settings": cfg.to_dict(),
        "grid": {"rows": gh, "cols": gw, "positions_px": maps[0].positions_y.tolist() if maps else [],
                 "crop_size": maps[0].crop_size if maps else None},
        "error": "root-relative 3D joint error against the unoccluded prediction, mm (crop camera)",
        "joint_groups": {g: [int(j) for j in idx] for g, idx in JOINT_GROUPS.items()},
        "persons": persons, "skipped": [{"index": int(i), "reason": r} for i, r in skipped],
    }


def run_occlusion_maps(pipe, image_rgb: np.ndarray, keypoints, out_dir: str | Path, *,
                       cfg: OcclusionConfig | None = None, persons: Sequence[int] | None = None,
                       image_path: str | None = None,
                       on_reference: Callable[[int, float, int], None] | None = None,
                       progress: Callable[[int, int, int], None] | None = None) -> OcclusionReport:
    """Maps of the chosen persons of one photo, written to ``out_dir`` (module docstring).

    Args:
        pipe: a :class:`~dpmesh_infer.pipeline.Pipeline` (its composed network, device and dtype are used).
        image_rgb: (H, W, 3) uint8 photo; keypoints: KeypointPerson list or (N, J, 3) array, pixels.
        persons: indices into the keypoints (default all).
        on_reference: (person index, seconds of one forward, crops to run) before each person's grid.
        progress: (person index, crops done, crops in total) after each network batch.
    """
    cfg = cfg or OcclusionConfig()
    out_dir = Path(out_dir)
    chosen, skipped = prepare(pipe, image_rgb, keypoints, persons, where=image_path or "image")
    maps, files = [], {}
    for p in chosen:
        m = occlusion_map(pipe.model, p, cfg, device=pipe.device, dtype=pipe.dtype,
                          on_reference=None if on_reference is None else
                          (lambda s, n, i=p.person_index: on_reference(i, s, n)),
                          progress=None if progress is None else (lambda d, n, i=p.person_index: progress(i, d, n)))
        files[p.person_index] = write_person(m, p, image_rgb, out_dir / f"person_{p.person_index:02d}",
                                             heatmap_size=pipe.config.preprocess.heatmap_size)
        maps.append(m)
    doc = summary_dict(image_path, cfg, maps, files, out_dir, skipped)
    summary = write_bytes(out_dir / SUMMARY_FILE, (json.dumps(doc, indent=1) + "\n").encode())
    return OcclusionReport(maps=maps, files=files, summary=summary, skipped=skipped)
