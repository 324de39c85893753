"""Locate the weights directory: ``--weights DIR``, then ``$DPMESH_WEIGHTS``, then the user cache.

Never the working directory. The user cache is ``$XDG_CACHE_HOME/dpmesh`` (default ``~/.cache/dpmesh``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError
from .layout import FIX_CONVERT, FIX_SMPL

ENV_VAR = "DPMESH_WEIGHTS"


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/dpmesh`` or ``~/.cache/dpmesh`` (not created here)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dpmesh"


@dataclass(frozen=True)
class WeightsLocation:
    """The chosen weights directory and how it was chosen (for messages)."""

    path: Path
    source: str  # "--weights", "$DPMESH_WEIGHTS" or "user cache"
    searched: tuple[str, ...]


def candidate_dirs(explicit: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The search order as (source, path) pairs."""
    out: list[tuple[str, Path]] = []
    if explicit is not None:
        out.append(("--weights", Path(explicit).expanduser()))
    env = os.environ.get(ENV_VAR)
    if env:
        out.append((f"${ENV_VAR}", Path(env).expanduser()))
    out.append(("user cache", user_cache_dir()))
    return out


def resolve_weights_dir(explicit: str | os.PathLike | None = None, *, must_exist: bool = True) -> WeightsLocation:
    """Pick the weights directory.

    An explicit directory always wins (and must exist when ``must_exist``); otherwise the first of
    ``$DPMESH_WEIGHTS`` and the user cache that exists. With ``must_exist=False`` (for commands that
    write weights), the first candidate is returned even if it does not exist yet.
    """
    cands = candidate_dirs(explicit)
    searched = tuple(f"{p} ({src})" for src, p in cands)
    if explicit is not None:
        src, p = cands[0]
        if must_exist and not p.is_dir():
            raise WeightsError(f"weights directory {p} (given with --weights) does not exist.\n"
                               f"  Create it with: {FIX_CONVERT.format(dir=p)}\n"
                               f"  and: {FIX_SMPL.format(dir=p)}")
        return WeightsLocation(p, src, searched)
    for src, p in cands:
        if p.is_dir() or not must_exist:
            return WeightsLocation(p, src, searched)
    raise WeightsError(
        "no weights directory found. Looked in:\n    "
        + "\n    ".join(searched)
        + "\n  Create one with:\n"
        "    dpmesh weights convert-official /path/to/3dpw_best_ckpt.pth.tar --out DIR\n"
        "    dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights DIR\n"
        f"  then pass --weights DIR or set {ENV_VAR}=DIR."
    )
