"""AMASS ``.npz`` motion files -> a compact pose set for ``dpmesh train vqvae --poses``.

Output layout (``OUT``)::

    OUT/<relative path of the source>.npz   poses (T, 72) float32 axis-angle radians: [root (3),
                                            SMPL joints 1..23 (69)]; mocap_framerate () float64 (the
                                            frame rate after subsampling); betas / trans / gender when
                                            the source has them (trans subsampled like poses)
    OUT/summary.json                        {"format": "dpmesh-amass-poses", "version": 1, "source",
                                             "target_fps", "zero_hands", "files": [{"path", "frames",
                                             "source_frames", "source_fps", "stride", "source_columns"}],
                                             "frames", "skipped": [{"path", "reason"}]}

Columns follow :func:`dpmesh_infer.train.vqvae.load_amass_body_poses`: from a (T, >=72) array the
first 72 columns are kept (for SMPL+H, 156 columns, columns 66:72 are the first left-hand finger
joint, not SMPL's hands; ``zero_hands`` zeroes them); from (T, 66..71) columns 0:66 with joints 22/23
zero. The written files therefore load identically with ``zero_hands=False``.

AMASS's SMPL-X release (165 columns: root, 21 body joints, then jaw 66:69, eyes 69:75, hands 75:165;
``surface_model_type`` "smplx") is refused without ``zero_hands``: columns 66:72 are the jaw and left
eye, which would silently become SMPL joints 22/23. With ``--zero-hands`` its 21 body joints convert as
SMPL joints 1..21, exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from ..atomic import write_text, write_with
from ..errors import DatasetError, OutputConflictError

__all__ = ["AMASS_SUMMARY_FORMAT", "AmassConversionResult", "convert_amass", "SMPLX_POSE_COLUMNS", "smplx_refusal"]

log = logging.getLogger(__name__)

AMASS_SUMMARY_FORMAT = "dpmesh-amass-poses"
_FPS_KEYS = ("mocap_framerate", "mocap_frame_rate")  # SMPL+H G / SMPL-X N releases
#: Pose columns of AMASS's SMPL-X files: 3 root + 63 body + 3 jaw + 6 eyes + 90 hands.
SMPLX_POSE_COLUMNS = 165


def smplx_refusal(where: str, columns: int, option: str = "--zero-hands") -> str:
    """The message refusing SMPL-X poses without ``option`` (the shared wording of converter and loader)."""
    return (f"{where}: SMPL-X poses ({columns} columns): columns 66:72 are the jaw and left-eye rotations, not "
            f"SMPL's hand joints 22/23, and would be copied there; pass {option} (SMPL joints 22/23 = 0, the "
            "21 body joints are the same in SMPL-X and SMPL)")


def _is_smplx(columns: int | None, model_type: str | None) -> bool:
    return columns == SMPLX_POSE_COLUMNS or (model_type or "").lower() == "smplx"


def _peek(path: Path) -> tuple[int | None, str | None]:
    """(columns of 'poses', 'surface_model_type') read from the archive's headers only; None when unknown."""
    columns = model = None
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "poses.npy" in names:
                with z.open("poses.npy") as f:
                    fmt = np.lib.format
                    version = fmt.read_magic(f)
                    read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, _ = read_header(f)
                    columns = shape[1] if len(shape) == 2 else None
            if "surface_model_type.npy" in names:
                with z.open("surface_model_type.npy") as f:
                    value = np.lib.format.read_array(f, allow_pickle=False)
                    model = str(value.reshape(()).item()) if value.dtype.kind in "US" and value.size == 1 else None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None, None  # the conversion reports unreadable files
    return columns, model


@dataclasses.dataclass
class AmassConversionResult:
    """What :func:`convert_amass` wrote: ``files`` written, ``frames`` in total (after subsampling),
    ``skipped`` [(relative path, reason)] of the source files that were not usable."""

    out: Path
    files: int
    frames: int
    skipped: list[tuple[str, str]]

    def summary(self) -> str:
        line = f"{self.out}: {self.files} files, {self.frames} frames"
        if self.skipped:
            line += f"; skipped {len(self.skipped)} files: " + "; ".join(f"{p} ({r})" for p, r in self.skipped[:5])
            line += ", ..." if len(self.skipped) > 5 else ""
        return line


class _BadFile(Exception):
    pass


def convert_amass(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    target_fps: float = 30.0,
    zero_hands: bool = False,
    overwrite: bool = False,
) -> AmassConversionResult:
    """Subsample every AMASS ``.npz`` under ``src`` (recursive, sorted) to about ``target_fps`` and write
    the pose arrays under ``out`` (layout: module docstring).

    The stride is k = max(1, round(source fps / target_fps)) (120 fps -> every 4th frame at 30 fps);
    files without a frame rate keep every frame. Files that cannot be used (no ``poses``, pickled or
    corrupt archives, fewer than 66 columns, NaN) are skipped and listed in the result and summary.json,
    e.g. AMASS's per-subject ``shape.npz``. Files under ``out`` (when ``out`` is inside ``src``) are ignored.

    Raises:
        DatasetError: ``src`` is not a folder, holds no ``.npz``, or no file is usable; ``out`` already
            holds a conversion (unless ``overwrite``); ``target_fps`` <= 0.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetError(f"AMASS folder not found: {src}")
    if not target_fps > 0:
        raise DatasetError(f"target fps must be > 0, got {target_fps}")
    if (out / "summary.json").exists() and not overwrite:
        raise DatasetError(f"{out} already holds a converted pose set (summary.json); pass --overwrite to replace "
                           "it, or choose another --out")
    if out.resolve() == src.resolve():
        raise OutputConflictError(f"--out {out} is the AMASS folder itself; its .npz files would be overwritten. "
                                  "Choose another output folder.")
    out_resolved = out.resolve()
    files = sorted(p for p in src.rglob("*.npz") if p.is_file() and not p.resolve().is_relative_to(out_resolved))
    if not files:
        raise DatasetError(f"no .npz files under {src} (AMASS motion files with a 'poses' array)")
    if not zero_hands:  # refuse before writing anything
        smplx = [(p, c) for p in files for c, m in [_peek(p)] if _is_smplx(c, m)]
        if smplx:
            more = f" (and {len(smplx) - 1} more SMPL-X files)" if len(smplx) > 1 else ""
            raise DatasetError(smplx_refusal(str(smplx[0][0]), smplx[0][1] or SMPLX_POSE_COLUMNS) + more)

    written, skipped, total = [], [], 0
    for path in files:
        rel = path.relative_to(src)
        try:
            arrays, info = _convert_one(path, target_fps, zero_hands)
        except _BadFile as e:
            skipped.append((rel.as_posix(), str(e)))
            log.warning("skipped %s: %s", path, e)
            continue
        write_with(out / rel, lambda f, arrays=arrays: np.savez_compressed(f, **arrays))
        written.append({"path": rel.as_posix(), **info})
        total += info["frames"]
    if not written:
        reasons = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
        raise DatasetError(f"none of the {len(files)} .npz files under {src} is a usable AMASS motion file ({reasons})")

    summary = {"format": AMASS_SUMMARY_FORMAT, "version": 1, "source": str(src.resolve()), "target_fps": target_fps,
               "zero_hands": zero_hands, "files": written, "frames": total,
               "skipped": [{"path": p, "reason": r} for p, r in skipped]}
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return AmassConversionResult(out=out, files=len(written), frames=total, skipped=skipped)


def _convert_one(path: Path, target_fps: float, zero_hands: bool) -> tuple[dict, dict]:
    """Arrays to write and the summary entry of one file; _BadFile with the reason when unusable."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise _BadFile(f"cannot read as a plain .npz: {e}") from None
    if not hasattr(data, "files"):
        raise _BadFile("a single .npy array, not an .npz archive")
    try:
        with data:
            if "poses" not in data.files:
                raise _BadFile(f"no 'poses' array (has {sorted(data.files)})")
            poses = np.asarray(data["poses"])
            fps = next((float(data[k]) for k in _FPS_KEYS if k in data.files), None)
            extras = {}
            for key in ("betas", "trans", "gender"):
                if key in data.files:
                    try:
                        extras[key] = np.asarray(data[key])
                    except ValueError:  # object array (pickled): not carried over
                        pass
    except (OSError, ValueError, TypeError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise _BadFile(f"cannot read as a plain .npz: {e}") from None
    if poses.ndim != 2 or poses.shape[1] < 66 or not np.issubdtype(poses.dtype, np.floating):
        raise _BadFile(f"'poses' must be a float (T, >=66) array, got {poses.dtype} {poses.shape}")
    if poses.shape[0] == 0:
        raise _BadFile("'poses' has no frames")
    if not np.isfinite(poses).all():
        raise _BadFile("'poses' holds NaN or infinite values")
    stride = 1 if fps is None or not fps > 0 else max(1, int(round(fps / target_fps)))
    sub = poses[::stride]
    out = np.zeros((sub.shape[0], 72), np.float32)
    cols = 72 if poses.shape[1] >= 72 and not zero_hands else 66
    out[:, :cols] = sub[:, :cols]
    arrays = {"poses": out}
    if fps is not None and fps > 0:
        arrays["mocap_framerate"] = np.float64(fps / stride)
    if "betas" in extras and np.issubdtype(extras["betas"].dtype, np.floating):
        arrays["betas"] = extras["betas"].astype(np.float32)
    trans = extras.get("trans")
    if trans is not None and trans.shape == (poses.shape[0], 3) and np.issubdtype(trans.dtype, np.floating):
        arrays["trans"] = trans[::stride].astype(np.float32)
    if "gender" in extras and extras["gender"].dtype.kind in "US" and extras["gender"].size == 1:
        g = extras["gender"].reshape(()).item()
        arrays["gender"] = np.array(g.decode() if isinstance(g, bytes) else str(g))
    info = {"frames": int(out.shape[0]), "source_frames": int(poses.shape[0]), "source_fps": fps, "stride": stride,
            "source_columns": int(poses.shape[1])}
    return arrays, info
