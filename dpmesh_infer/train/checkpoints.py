"""Verified training checkpoints: every checkpoint records the SHA-256 and size of its files when it is
written, and resuming uses the newest checkpoint that is intact, with a warning naming each one that
is not (truncated by a full disk, corrupted, half-copied).

Two shapes, one rule:

- a checkpoint *folder* (``dpmesh train dpmesh``: ``state.pt`` + ``rng-rank<r>.pt``) gets a
  ``manifest.json`` {file: {sha256, size}} before it is swapped into place;
- a checkpoint *file* (``dpmesh train vqvae``: ``checkpoint.pt``) gets ``<file>.sha256`` beside it, and
  the previous checkpoint is kept as ``<stem>.prev.pt`` (with its own ``.sha256``) to fall back to.

Files are read with ``torch.load(weights_only=True)`` only. A file that cannot be read is reported by
name as truncated or corrupt; torch's own message (which may suggest disabling ``weights_only`` — never
do that for a file you cannot trust) is not passed on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

from ..atomic import write_text, write_with
from ..errors import CheckpointError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "dpmesh-checkpoint"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_torch(obj, path: Path) -> None:
    """``torch.save`` through the atomic writer."""
    import torch

    write_with(path, lambda f: torch.save(obj, f))


def load_torch(path: Path, *, what: str = "checkpoint file"):
    """``torch.load(path, weights_only=True)`` on the CPU; :class:`CheckpointError` naming the file when it
    is missing or cannot be read (torch's message is not forwarded)."""
    import pickle

    import torch

    if not Path(path).is_file():
        raise CheckpointError(f"{what} {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, AttributeError,
            ImportError, TypeError, IndexError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} {path} cannot be read ({type(e).__name__}): it is truncated, corrupt or not "
                              "a dpmesh checkpoint") from None


# --------------------------------------------------------------------------- checkpoint folders


def write_manifest(folder: Path) -> None:
    """Record every file of the (complete, not yet published) checkpoint ``folder``."""
    files = {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size}
             for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}
    write_text(folder / MANIFEST_NAME, json.dumps({"format": MANIFEST_FORMAT, "version": 1, "files": files},
                                                  indent=1) + "\n")


def folder_problem(folder: Path, required: tuple[str, ...] = ()) -> str | None:
    """Why the checkpoint ``folder`` cannot be trusted, or None when every file matches its manifest."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"it has no {MANIFEST_NAME} (written by an older version, or interrupted before it was finished)"
    except (OSError, ValueError, RecursionError):
        return f"its {MANIFEST_NAME} is unreadable"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return f"its {MANIFEST_NAME} is not a {MANIFEST_FORMAT} manifest"
    for name in required:
        if name not in files:
            return f"its manifest does not list {name}"
    for name, meta in files.items():
        p = folder / name
        if not isinstance(meta, dict):
            return f"its {MANIFEST_NAME} is not a {MANIFEST_FORMAT} manifest"
        if not p.is_file():
            return f"{name} is missing"
        if p.stat().st_size != meta.get("size"):
            return f"{name} has {p.stat().st_size} bytes, {meta.get('size')} when written (truncated?)"
        if sha256_file(p) != meta.get("sha256"):
            return f"{name} does not match its checksum (corrupt)"
    return None


def newest_intact_folder(root: Path, *, pointer: str, pattern: str = "step-*",
                         required: tuple[str, ...] = ()) -> Path | None:
    """The checkpoint folder under ``root`` to resume from: the one ``root/pointer`` names when intact, else
    the newest intact one (by name), with a warning naming each broken one. None when ``root`` holds no
    checkpoint at all.

    Raises:
        CheckpointError: there are checkpoints but none is intact.
    """
    if not root.is_dir():
        return None
    candidates = sorted((p for p in root.glob(pattern) if p.is_dir() and not p.name.endswith((".tmp", ".old"))),
                        key=lambda p: p.name, reverse=True)
    named = None
    try:
        named = root / (root / pointer).read_text(encoding="utf-8").strip()
    except OSError:
        pass
    if named is not None and named in candidates:
        candidates.remove(named)
        candidates.insert(0, named)
    bad = []
    for c in candidates:
        problem = folder_problem(c, required)
        if problem is None:
            for b, why in bad:
                logger.warning("skipping the checkpoint %s: %s; resuming from %s instead", b, why, c)
            return c
        bad.append((c, problem))
    if bad:
        raise CheckpointError("no intact checkpoint to resume from: " + "; ".join(f"{b}: {why}" for b, why in bad)
                              + ". Start a new run (another --out), or restore a checkpoint from a backup.")
    return None


# --------------------------------------------------------------------------- single checkpoint files


def _prev(path: Path) -> Path:
    return path.with_name(path.stem + ".prev" + path.suffix)


def _digest_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_checkpoint_exists(path: Path) -> bool:
    """``path`` or the previous copy it replaced is present (a kill between the two leaves only the copy)."""
    return path.is_file() or _prev(path).is_file()


def save_file_checkpoint(obj, path: Path) -> None:
    """Write ``obj`` to ``path`` (atomic) with its checksum; the checkpoint it replaces becomes ``.prev``."""
    if path.is_file():
        os.replace(path, _prev(path))
        if _digest_file(path).is_file():
            os.replace(_digest_file(path), _digest_file(_prev(path)))
    save_torch(obj, path)
    write_text(_digest_file(path), sha256_file(path) + "\n")


def load_file_checkpoint(path: Path, check: Callable[[object], None] | None = None):
    """The newest intact of ``path`` and its ``.prev`` copy (checksum verified, loaded with weights_only;
    ``check`` may raise CheckpointError for a file that loads but is not usable), with a warning when
    falling back.

    Raises:
        CheckpointError: neither can be used (each named with the reason).
    """
    problems = []
    for p in (path, _prev(path)):
        if not p.is_file():
            continue
        digest = _digest_file(p)
        try:
            expected = digest.read_text(encoding="utf-8").strip()
        except OSError:
            expected = None
        if expected is not None and sha256_file(p) != expected:
            problems.append(f"{p} does not match its checksum {digest.name} (truncated or corrupt)")
            continue
        try:
            obj = load_torch(p)
            if check is not None:
                check(obj)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if problems:
            logger.warning("%s; resuming from %s instead", "; ".join(problems), p)
        return obj
    raise CheckpointError("no intact checkpoint to resume from: " + ("; ".join(problems) or f"{path} is missing"))
