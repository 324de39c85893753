"""Planning a folder run: which images to compute, where each one's folder is, what must not be
overwritten, and which images another run finished meanwhile.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..atomic import check_writable_dir
from ..errors import InputError
from ..inputs import InputImage, refuse_overwriting_inputs, scan_inputs
from .files import MANIFEST_NAME, OUTPUT_FILES, RENDER_FILES, finished_persons


@dataclass
class BatchPlan:
    """The images to compute (``todo``), those finished earlier (``finished``), non-image files, and
    entries named like images that are not regular files (``ignored``, with the reason)."""

    out_dir: Path
    todo: list[InputImage]
    finished: list[tuple[InputImage, int]]
    non_images: list[Path]
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    overwrite: bool = False
    require: tuple[str, ...] = ()


def output_folder(out_dir: Path, image: InputImage) -> Path:
    return Path(out_dir) / image.rel


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and prove a file can be written there (InputError, exit 2, otherwise)."""
    check_writable_dir(out_dir)


def check_plan_outputs(plan: BatchPlan, *, keypoints: Path | None = None, weights: Path | None = None) -> None:
    """Refuse the run when it would write over (or delete) one of its inputs: an input image or the
    keypoint file at a path the run writes, or the output folder inside the weights directory.

    Raises:
        OutputConflictError (exit 2) naming both.
    """
    files = [plan.out_dir / MANIFEST_NAME]
    for im in plan.todo:
        folder = output_folder(plan.out_dir, im)
        files += [folder / name for name in OUTPUT_FILES]
    images = [("input image", im.path) for im in plan.todo + [im for im, _ in plan.finished]]
    in_folders = {output_folder(plan.out_dir, im).resolve() for im in plan.todo}
    for what, path in images + ([("keypoint file", keypoints)] if keypoints is not None else []):
        if Path(path).resolve().parent in in_folders and re.fullmatch(r"person_\d+\.obj", Path(path).name):
            files.append(Path(path))  # redoing a folder deletes its old person meshes
    refuse_overwriting_inputs(inputs=images + ([("keypoint file", keypoints)] if keypoints is not None else []),
                              files=files, protected=[("weights directory", weights)] if weights else [])


def plan_batch(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, overwrite: bool = False,
               render: bool = False) -> BatchPlan:
    """Expand the inputs, map each image to its output folder, and split finished from to-do images
    (with ``render``, a folder finished without the rendered images is redone).

    Raises:
        InputError: missing input, empty folder, or two images that map to the same output folder.
    """
    out_dir = Path(out_dir)
    scanned = scan_inputs(inputs, exclude=[out_dir])
    require = RENDER_FILES if render else ()
    by_rel: dict[str, InputImage] = {}
    for im in scanned.images:
        other = by_rel.get(im.rel)
        if other is not None:
            raise InputError(f"{other.path} and {im.path} would both write to {out_dir / im.rel}/; "
                             "rename one, or pass their folders separately with distinct --out")
        by_rel[im.rel] = im
    todo, finished = [], []
    for im in scanned.images:
        n = None if overwrite else finished_persons(output_folder(out_dir, im), require)
        if n is None:
            todo.append(im)
        else:
            finished.append((im, n))
    return BatchPlan(out_dir=out_dir, todo=todo, finished=finished, non_images=scanned.non_images,
                     ignored=scanned.ignored, overwrite=overwrite, require=require)


def recheck_plan(plan: BatchPlan) -> BatchPlan:
    """``plan`` with the images finished since it was made (by a run that held the lock then) moved to
    ``finished``: a finished image is never redone or made to look unfinished without --overwrite."""
    if plan.overwrite:
        return plan
    todo, finished = [], list(plan.finished)
    for im in plan.todo:
        n = finished_persons(output_folder(plan.out_dir, im), plan.require)
        (todo.append(im) if n is None else finished.append((im, n)))
    return dataclasses.replace(plan, todo=todo, finished=finished)

