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
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

from .errors import InputError, OutputConflictError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class InputImage:
    """One image found in the inputs: ``path`` on disk, ``name`` (keypoint lookup), ``rel`` (outputs)."""

    path: Path
    name: str
    rel: str


@dataclass
class ScannedInputs:
    """Images found; files inside input folders that are not images (skipped, listed to the user); and
    entries named like images that are not regular files (directories, FIFOs, broken symbolic links),
    with the reason (``ignored``, listed in the summary and the manifest)."""

    images: list[InputImage] = field(default_factory=list)
    non_images: list[Path] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable regular file ("does not exist", "is a directory", "is a FIFO (named
    pipe)", "is a broken symbolic link", ...), or None when it is one. Never opens the path (a FIFO would
    block)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        return "is a broken symbolic link" if p.is_symlink() else "not found"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is not a regular file"


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


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def scan_inputs(inputs: Sequence[str | os.PathLike], *, exclude: Sequence[str | os.PathLike] = ()) -> ScannedInputs:
    """Expand files, folders (recursive) and globs into images; duplicates are removed, order kept.

    ``exclude``: output folders. One that lies inside an input folder is not searched (a re-run does not
    take its own results as inputs); one that *is* an input folder is an error.

    Raises:
        InputError: an input does not exist or is not a regular file, a folder holds no image, a glob
            matches nothing, or an input folder is an excluded (output) folder.
    """
    excluded = [Path(e).resolve() for e in exclude]
    scanned = ScannedInputs()
    seen: set[Path] = set()

    def add(path: Path, name: str, rel: str) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            scanned.images.append(InputImage(path, name, _strip_suffix(rel)))

    def sort_entry(q: Path, problem: str | None) -> bool:
        """True for a regular image file; other entries are listed as non-images or ignored."""
        if problem is None:
            if _is_image_name(q):
                return True
            scanned.non_images.append(q)
        elif _is_image_name(q):
            scanned.ignored.append((q, problem))
        elif not q.is_dir():
            scanned.non_images.append(q)
        return False

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            rp = p.resolve()
            if rp in excluded:
                raise InputError(f"the output folder {p} is also an input folder; write the results to another "
                                 "folder (e.g. --out results/)")
            inside = [e for e in excluded if rp in e.parents]  # output folders below this input folder
            found = []
            for q in sorted(p.rglob("*")):
                if inside and _is_under(q, inside):
                    continue
                if sort_entry(q, path_problem(q)):
                    found.append(q)
            if not found:
                raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
            for q in found:
                rel = q.relative_to(p).as_posix()
                add(q, rel, rel)
        elif p.is_file():
            add(p, p.as_posix(), p.name)
        elif glob.has_magic(str(item)):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            files = [q for q in matches if sort_entry(q, path_problem(q))]
            if not files:
                raise InputError(f"no image file matches {item}")
            base = _glob_base(str(item))
            for q in files:
                try:
                    rel = q.relative_to(base).as_posix()
                except ValueError:
                    rel = q.name
                add(q, q.as_posix(), rel)
        else:
            problem = path_problem(p)
            raise InputError(f"input {p} {problem}" if problem != "not found" else f"input not found: {p}")
    return scanned


def _same_path(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def refuse_overwriting_inputs(*, inputs: Sequence[tuple[str, str | os.PathLike]] = (),
                              files: Sequence[str | os.PathLike] = (),
                              trees: Sequence[str | os.PathLike] = (),
                              protected: Sequence[tuple[str, str | os.PathLike]] = ()) -> None:
    """Refuse a run whose outputs would overwrite one of its own inputs, before any work is done.

    Args:
        inputs: (what, path) of every input file or folder (image, keypoint file, config, checkpoint, ...).
        files: files the run writes.
        trees: folders the run replaces as a whole or writes into recursively: an input inside one is a
            conflict too.
        protected: (what, folder) inputs nothing may be written into (e.g. the weights directory).

    Raises:
        OutputConflictError (exit 2) naming the output and the input.
    """
    for what, folder in protected:
        folder = Path(folder).resolve()
        for out in [*files, *trees]:
            r = Path(out).resolve()
            if r == folder or folder in r.parents or r in folder.parents:
                raise OutputConflictError(f"the output {out} is inside (or contains) the {what} {folder}; choose an "
                                          "output path outside it")
    for what, src in inputs:
        src = Path(src)
        for f in files:
            if _same_path(Path(f), src):
                raise OutputConflictError(f"the output {f} is also the {what} {src} of this run; it would be "
                                          "overwritten. Choose another output path.")
        for t in trees:
            t = Path(t)
            if _same_path(t, src) or t.resolve() in src.resolve().parents:
                raise OutputConflictError(f"the output folder {t} contains the {what} {src} of this run; writing "
                                          "there could overwrite it. Choose another output folder.")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """Files, folders (searched recursively for images) and glob patterns -> [(path, file_name)].

    file_name is the path relative to the folder for folder inputs, the path as given otherwise
    (POSIX separators). Duplicates are removed; order is kept (folders sorted).
    """
    return [(im.path, im.name) for im in scan_inputs(inputs).images]
