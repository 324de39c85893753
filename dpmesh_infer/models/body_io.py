"""Strict file io of the SMPL body model: validate arrays, read and write our clean ``SMPL_NEUTRAL.npz``,
read ``.npy`` joint regressors. No pickle anywhere (``np.load(allow_pickle=False)``).

Clean file layout (written by ``dpmesh weights import-smpl``; float32 unless noted):

==================  ================  ==========================================================
key                 shape             meaning
==================  ================  ==========================================================
v_template          (6890, 3)         rest template, metres
shapedirs           (6890, 3, 10)     first 10 shape components
posedirs            (6890, 3, 207)    pose correctives
J_regressor         (24, 6890)        dense joint regressor (rest joints from rest vertices)
weights             (6890, 24)        skinning weights
kintree_table       (2, 24) int64     row 0 = parents with -1 for the root, row 1 = 0..23
f                   (13776, 3) int64  triangles
format_version      () int64          1
source_name         () str            file name it was imported from
source_sha256       () str            SHA-256 of that file
==================  ================  ==========================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..atomic import write_with
from ..errors import WeightsError

FORMAT_VERSION = 1
NUM_VERTICES = 6890
NUM_JOINTS = 24
NUM_FACES = 13776
NUM_BETAS = 10
NUM_POSE_BASIS = 207  # 23 joints x 9

#: Array keys of the clean file (metadata keys excluded).
SMPL_ARRAY_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


def _shape_of(v: Any) -> str:
    return str(tuple(v.shape)) if hasattr(v, "shape") else type(v).__name__


def _identify(raw: Mapping[str, Any]) -> str:
    """Best guess of which body model ``raw`` holds, for error messages."""
    n_v = raw["v_template"].shape[0] if hasattr(raw.get("v_template"), "shape") else None
    jr = raw.get("J_regressor")
    n_j = jr.shape[0] if hasattr(jr, "shape") else None
    if n_v == 10475:
        return "an SMPL-X model (10475 vertices)"
    if n_v == 778 or "hands_components" in raw:
        return "a MANO hand model (778 vertices)"
    if n_v == 5023:
        return "a FLAME head model (5023 vertices)"
    if n_v == 6890 and n_j == 52:
        return "an SMPL-H model (6890 vertices, 52 joints)"
    if n_v == 6890 and n_j == 24:
        return "an SMPL model"
    return f"an unknown model ({n_v} vertices, {n_j} joints)"


def validate_smpl_arrays(raw: Mapping[str, Any], *, where: str) -> dict[str, np.ndarray]:
    """Check and normalise SMPL arrays; returns the clean dict of :data:`SMPL_ARRAY_KEYS`.

    Accepts ndarrays (or anything ``np.asarray`` turns into a numeric array). ``shapedirs`` may have
    ≥10 components (the first 10 are kept). The root parent may be stored as -1 or 4294967295.
    Output dtypes: float32 for the float arrays, int64 for ``kintree_table`` (root parent -1) and
    ``f``.

    Raises:
        WeightsError: naming what was found (e.g. an SMPL-X file) and what is expected.
    """
    missing = [k for k in SMPL_ARRAY_KEYS if k not in raw]
    if missing:
        kind = _identify(raw) if "v_template" in raw else "not an SMPL model"
        raise WeightsError(
            f"{where} is {kind}: missing entries {missing}; an SMPL model has {list(SMPL_ARRAY_KEYS)}. "
            f"Found entries: {sorted(map(str, raw))[:20]}"
        )
    arr: dict[str, np.ndarray] = {}
    for k in SMPL_ARRAY_KEYS:
        try:
            a = np.asarray(raw[k])
        except Exception as e:
            raise WeightsError(f"{where}: entry {k!r} is not an array ({type(raw[k]).__name__}): {e}") from e
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise WeightsError(f"{where}: entry {k!r} has non-numeric dtype {a.dtype}")
        arr[k] = a

    expected = {
        "v_template": (NUM_VERTICES, 3),
        "posedirs": (NUM_VERTICES, 3, NUM_POSE_BASIS),
        "J_regressor": (NUM_JOINTS, NUM_VERTICES),
        "weights": (NUM_VERTICES, NUM_JOINTS),
        "kintree_table": (2, NUM_JOINTS),
        "f": (NUM_FACES, 3),
    }
    wrong = [f"{k} {_shape_of(arr[k])} (expected {v})" for k, v in expected.items() if arr[k].shape != v]
    sd = arr["shapedirs"]
    if sd.ndim != 3 or sd.shape[:2] != (NUM_VERTICES, 3) or sd.shape[2] < NUM_BETAS:
        wrong.append(f"shapedirs {_shape_of(sd)} (expected ({NUM_VERTICES}, 3, >={NUM_BETAS}))")
    if wrong:
        raise WeightsError(
            f"{where} is {_identify(raw)}, not the SMPL neutral body model this package needs. "
            "Wrong shapes: " + "; ".join(wrong)
        )

    out = {k: arr[k].astype(np.float32) for k in ("v_template", "posedirs", "J_regressor", "weights")}
    out["shapedirs"] = np.ascontiguousarray(sd[:, :, :NUM_BETAS], dtype=np.float32)
    for k, v in out.items():
        if not np.isfinite(v).all():
            raise WeightsError(f"{where}: entry {k!r} contains NaN or infinite values")

    kt = arr["kintree_table"].astype(np.int64)
    parents = kt[0].copy()
    if parents[0] in (-1, 4294967295, 2**64 - 1):
        parents[0] = -1
    if parents[0] != -1 or not np.array_equal(kt[1], np.arange(NUM_JOINTS)) or not all(
        0 <= parents[j] < j for j in range(1, NUM_JOINTS)
    ):
        raise WeightsError(
            f"{where}: kintree_table is not an SMPL kinematic tree (row 0 = parents with the root "
            f"first, each parent listed before its child; row 1 = 0..23); found {kt.tolist()}"
        )
    out["kintree_table"] = np.stack([parents, kt[1]])

    f = arr["f"]
    if not np.issubdtype(f.dtype, np.integer) and not np.array_equal(f, np.round(f)):
        raise WeightsError(f"{where}: faces 'f' are not integer vertex indices")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= NUM_VERTICES:
        raise WeightsError(f"{where}: faces 'f' index vertices outside 0..{NUM_VERTICES - 1}")
    out["f"] = f
    return {k: out[k] for k in SMPL_ARRAY_KEYS}


def read_smpl_npz(path: str | Path, *, fix_hint: str = "") -> dict[str, np.ndarray]:
    """The validated arrays (:data:`SMPL_ARRAY_KEYS`) of a clean ``SMPL_NEUTRAL.npz``.

    Raises:
        WeightsError: unreadable or invalid file (``fix_hint`` is appended to the message).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files if k in SMPL_ARRAY_KEYS}
    except Exception as e:
        raise WeightsError(f"cannot read {path}: {type(e).__name__}: {e}"
                           + (f"\n{fix_hint}" if fix_hint else "")) from e
    return validate_smpl_arrays(raw, where=str(path))


def write_smpl_npz(arrays: Mapping[str, np.ndarray], path: str | Path, *, source_name: str = "",
                   source_sha256: str = "") -> Path:
    """Atomically write validated ``arrays`` to the clean ``.npz`` ``path`` (no pickled objects)."""
    path = Path(path)
    payload = {k: np.asarray(arrays[k]) for k in SMPL_ARRAY_KEYS}
    payload["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
    payload["source_name"] = np.array(source_name)
    payload["source_sha256"] = np.array(source_sha256)
    write_with(path, lambda fh: np.savez(fh, **payload))
    return path


def read_regressor_npy(path: str | Path, *, what: str, rows: int | None = None, min_rows: int = 1,
                       dtype: Any = np.float32) -> np.ndarray:
    """A joint regressor ``.npy`` over the SMPL vertices: (rows, 6890), or (k >= min_rows, 6890), finite.

    Read with ``allow_pickle=False``; returned in ``dtype``. ``what`` names the file's role in messages.

    Raises:
        WeightsError: missing, unreadable, an archive of several arrays, wrong shape or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user problem
        raise WeightsError(f"cannot read {path} as a plain .npy array: {type(e).__name__}: {e}") from None
    if not isinstance(a, np.ndarray):
        a.close()
        raise WeightsError(f"{path}: expected one .npy array, found an archive of several")
    return check_regressor(a, where=str(path), what=what, rows=rows, min_rows=min_rows, dtype=dtype)


def check_regressor(a: Any, *, where: str, what: str, rows: int | None = None, min_rows: int = 1,
                    dtype: Any = np.float32) -> np.ndarray:
    """Validate an in-memory joint regressor (rows, 6890) / (k >= min_rows, 6890); returns it in ``dtype``.

    Raises:
        WeightsError: wrong shape, non-numeric or non-finite values (``where`` names the source).
    """
    a = np.asarray(a)
    shape_ok = a.ndim == 2 and a.shape[1] == NUM_VERTICES and (a.shape[0] == rows if rows else a.shape[0] >= min_rows)
    if not shape_ok or not np.issubdtype(a.dtype, np.number):
        want = f"({rows}, {NUM_VERTICES})" if rows else f"(k, {NUM_VERTICES}) with k >= {min_rows}"
        raise WeightsError(f"{where}: expected a {want} numeric {what}; found {a.dtype} {tuple(a.shape)}")
    a = a.astype(dtype)
    if not np.isfinite(a).all():
        raise WeightsError(f"{where}: contains NaN or infinite values")
    return a
