"""Input expansion shared by ``dpmesh detect`` and ``dpmesh predict``: files, folders and globs.

A folder is searched recursively for images (sorted, so the order is deterministic); a glob is
expanded (``**`` allowed) and sorted; a file is taken as given. Every image gets two names:

- ``name``: the path relative to the folder for folder inputs, the path as given otherwise (POSIX
  separators). Keypoint files are matched against it (``KeypointSet.lookup``).
- ``rel``: the relative path without suffix used for per-image output folders: relative to the folder
  for folder inputs, to the pattern's fixed leading directories for globs, the file stem for files.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from .errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class InputImage:
    """One image found in the inputs: ``path`` on disk, ``name`` (keypoint lookup), ``rel`` (outputs)."""

    path: Path
    name: str
    rel: str


@dataclass
class ScannedInputs:
    """Images found, and files inside input folders that are not images (skipped, listed to the user)."""

    images: list[InputImage] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)


def _glob_base(pattern: str) -> Path:
    """The leading directories of a glob pattern that hold no wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _strip_suffix(rel: str) -> str:
    p = PurePosixPath(rel)
    return p.with_suffix("").as_posix()


def _is_under(path: Path, folders: Sequence[Path]) -> bool:
    rp = path.resolve()
    return any(rp == f or f in rp.parents for f in folders)


def scan_inputs(inputs: Sequence[str | os.PathLike], *, exclude: Sequence[str | os.PathLike] = ()) -> ScannedInputs:
    """Expand files, folders (recursive) and globs into images; duplicates are removed, order kept.

    Files under any ``exclude`` folder are ignored (e.g. an output folder inside the input folder).

    Raises:
        InputError: an input does not exist, a folder holds no image, or a glob matches nothing.
    """
    excluded = [Path(e).resolve() for e in exclude]
    scanned = ScannedInputs()
    seen: set[Path] = set()

    def add(path: Path, name: str, rel: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            scanned.images.append(InputImage(path, name, _strip_suffix(rel)))

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file() and not _is_under(q, excluded))
            found = [q for q in files if q.suffix.lower() in IMAGE_EXTENSIONS]
            scanned.non_images.extend(q for q in files if q.suffix.lower() not in IMAGE_EXTENSIONS)
            if not found:
                raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
            for q in found:
                rel = q.relative_to(p).as_posix()
                add(q, rel, rel)
        elif p.is_file():
            add(p, p.as_posix(), p.name)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True) if Path(m).is_file())
            if not matches:
                raise InputError(f"no file matches {item}")
            base = _glob_base(str(item))
            for q in matches:
                try:
                    rel = q.relative_to(base).as_posix()
                except ValueError:
                    rel = q.name
                add(q, q.as_posix(), rel)
        else:
            raise InputError(f"input not found: {p}")
    return scanned


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """Files, folders (searched recursively for images) and glob patterns -> [(path, file_name)].

    file_name is the path relative to the folder for folder inputs, the path as given otherwise
    (POSIX separators). Duplicates are removed; order is kept (folders sorted).
    """
    return [(im.path, im.name) for im in scan_inputs(inputs).images]
