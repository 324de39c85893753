"""SMPL neutral: import the file a user downloaded, validate it, store a clean copy, load it.

The SMPL model is licensed (https://smpl.is.tue.mpg.de) and never downloaded by this package. The
user imports it once::

    dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights DIR

which writes ``DIR/smpl/SMPL_NEUTRAL.npz``: plain arrays, no pickle, no chumpy, readable with
``np.load(allow_pickle=False)``. Keys and layout (float32 unless noted):

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

Official ``.pkl`` files were pickled by Python 2 and contain chumpy ``Ch`` objects and
``scipy.sparse`` matrices. They are read with a *restricted* unpickler: only an allowlist of
globals can be named by the file (numpy array/dtype reconstruction, the byte-string codec helper,
``set``/``object``); chumpy and scipy.sparse classes are mapped to inert stand-ins that merely hold
the pickled state, from which the arrays are taken. Any other global (``os.system``,
``builtins.eval``, ...) is refused before it is resolved, so nothing from the file is executed.
Neither chumpy nor its import is ever needed.

The 8 float arrays are stored in float32: every consumer (smplx, and upstream's smplpytorch) casts
them to float32 anyway, so results are identical and the file is half the size.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..atomic import write_with
from ..errors import WeightsError

logger = logging.getLogger(__name__)

SMPL_SUBDIR = "smpl"
SMPL_FILENAME = "SMPL_NEUTRAL.npz"
EXTRA_REGRESSOR_FILENAME = "J_regressor_extra.npy"
SMPL_DOWNLOAD_URL = "https://smpl.is.tue.mpg.de"
FORMAT_VERSION = 1

NUM_VERTICES = 6890
NUM_JOINTS = 24
NUM_FACES = 13776
NUM_BETAS = 10
NUM_POSE_BASIS = 207  # 23 joints x 9

#: Array keys of the clean file (metadata keys excluded).
SMPL_ARRAY_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")

# Well-known names, used when a folder is given to the importer.
_KNOWN_SOURCE_NAMES = (
    "SMPL_NEUTRAL.pkl",
    "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl",
    "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl",
    "SMPL_NEUTRAL.npz",
)


def _import_hint(where: Path | str) -> str:
    return (
        f"Download the SMPL model from {SMPL_DOWNLOAD_URL} (free registration; the neutral model "
        "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl or SMPL_NEUTRAL.pkl both work), then run:\n"
        f"    dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights {where}"
    )


# -------------------------------------------------------------------------------------------------
# Restricted unpickling
# -------------------------------------------------------------------------------------------------


class _ChumpyStandIn:
    """Inert replacement for any chumpy class: keeps the pickled state, runs no chumpy code.

    chumpy's ``Ch.__getstate__`` pickles the instance ``__dict__`` (minus weak-reference caches);
    a plain ``Ch`` holds its value as an ndarray under ``'x'``.
    """

    chumpy_name = "chumpy"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def value(self, key: str) -> np.ndarray:
        state = getattr(self, "state", None)
        x = state.get("x") if isinstance(state, dict) else None
        if isinstance(x, _ChumpyStandIn):
            return x.value(key)
        if not isinstance(x, np.ndarray):
            raise WeightsError(
                f"entry {key!r} is a chumpy expression ({self.chumpy_name}) rather than a stored array; "
                "it cannot be evaluated without running chumpy. Use the official SMPL .pkl as "
                f"downloaded from {SMPL_DOWNLOAD_URL}, or a file already converted to plain arrays."
            )
        return x


class _SparseStandIn:
    """Inert replacement for scipy.sparse csc/csr matrices: keeps the pickled ``__dict__``."""

    sparse_format = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def dense(self, key: str) -> np.ndarray:
        import scipy.sparse as sp

        st = getattr(self, "state", None)
        try:
            shape = tuple(int(s) for s in st.get("_shape", st.get("shape")))
            data, indices, indptr = (np.asarray(st[k]) for k in ("data", "indices", "indptr"))
            cls = sp.csc_matrix if self.sparse_format == "csc" else sp.csr_matrix
            return np.asarray(cls((data, indices, indptr), shape=shape).toarray())
        except Exception as e:  # malformed state: report, do not guess
            raise WeightsError(f"entry {key!r} is a malformed scipy.sparse matrix: {e}") from e


_STAND_INS: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_INS:
        if module.startswith("chumpy"):
            _STAND_INS[key] = type(name, (_ChumpyStandIn,), {"chumpy_name": f"{module}.{name}"})
        else:
            _STAND_INS[key] = type(name, (_SparseStandIn,), {"sparse_format": name[:3]})
    return _STAND_INS[key]


def _safe_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects), limited to our inert stand-ins."""
    if isinstance(cls, type) and issubclass(cls, (_ChumpyStandIn, _SparseStandIn)) and base is object:
        return object.__new__(cls)
    raise pickle.UnpicklingError(f"refusing to reconstruct {cls!r} from base {base!r}")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import codecs

    try:  # numpy >= 2 (also present as an alias in 1.26)
        from numpy._core import multiarray as ma
        from numpy._core import numeric as nm
    except ImportError:  # pragma: no cover - older numpy
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
        from numpy.core import numeric as nm  # type: ignore[no-redef]

    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core._multiarray_umath",
                "numpy._core._multiarray_umath"):
        out[(mod, "_reconstruct")] = ma._reconstruct
        out[(mod, "scalar")] = ma.scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = nm._frombuffer
    out[("_codecs", "encode")] = codecs.encode  # how protocol<3 pickles store bytes
    for mod in ("__builtin__", "builtins"):
        out[(mod, "set")] = set
        out[(mod, "frozenset")] = frozenset
        out[(mod, "object")] = object
    for mod in ("copy_reg", "copyreg"):
        out[(mod, "_reconstructor")] = _safe_reconstructor
    return out


_SPARSE_MODULES = ("scipy.sparse.csc", "scipy.sparse._csc", "scipy.sparse.csr", "scipy.sparse._csr",
                   "scipy.sparse._arrays")
_SPARSE_NAMES = ("csc_matrix", "csr_matrix", "csc_array", "csr_array")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allowlisted globals; everything else is refused unresolved."""

    def __init__(self, fh: Any):
        super().__init__(fh, encoding="latin1")
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if module == "chumpy" or module.startswith("chumpy."):
            return _stand_in(module, name)
        if module in _SPARSE_MODULES and name in _SPARSE_NAMES:
            return _stand_in(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_unpickle(path: Path) -> Any:
    """Unpickle ``path`` allowing only the globals an SMPL model file needs (see module docstring).

    Raises:
        WeightsError: the file names a disallowed global, or is not a readable pickle.
    """
    try:
        with open(path, "rb") as fh:
            return _RestrictedUnpickler(fh).load()
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"refusing to load {path}: {e}. An SMPL model file contains only arrays, chumpy values and "
            "sparse matrices; this file names other Python objects and is not unpickled any further."
        ) from e
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(f"cannot read {path} as an SMPL .pkl file: {type(e).__name__}: {e}") from e


def _to_plain(value: Any, key: str) -> Any:
    if isinstance(value, _ChumpyStandIn):
        return value.value(key)
    if isinstance(value, _SparseStandIn):
        return value.dense(key)
    return value


# -------------------------------------------------------------------------------------------------
# Validation
# -------------------------------------------------------------------------------------------------


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


def _warn_if_gendered(name: str) -> None:
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    gender = "female" if tokens & {"female", "f"} else "male" if tokens & {"male", "m"} else None
    if gender:
        logger.warning(
            "%s looks like the %s SMPL model (from its name). DPMesh was trained with the NEUTRAL model; "
            "results with a gendered model will be off. Use SMPL_NEUTRAL.pkl / "
            "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl unless you know what you are doing.",
            name, gender,
        )


# -------------------------------------------------------------------------------------------------
# Reading sources, writing the clean file
# -------------------------------------------------------------------------------------------------


def _resolve_source(src: Path) -> Path:
    if src.is_dir():
        for cand in [src / n for n in _KNOWN_SOURCE_NAMES] + [src / "smpl" / n for n in _KNOWN_SOURCE_NAMES]:
            if cand.is_file():
                return cand
        raise WeightsError(
            f"no SMPL neutral model found in folder {src} (looked for {', '.join(_KNOWN_SOURCE_NAMES)}). "
            "Pass the .pkl file itself."
        )
    if not src.is_file():
        raise WeightsError(f"SMPL file not found: {src}\n" + _import_hint("DIR"))
    return src


def read_smpl_source(src: str | Path) -> dict[str, np.ndarray]:
    """Read and validate an SMPL neutral model from a ``.pkl`` (official, chumpy or not) or ``.npz``.

    ``.pkl`` files go through the restricted unpickler (module docstring); ``.npz`` files are read
    with ``allow_pickle=False``. Returns :func:`validate_smpl_arrays`' clean dict.
    """
    src = _resolve_source(Path(src))
    suffix = src.suffix.lower()
    if suffix == ".zip":
        raise WeightsError(
            f"{src} is a zip archive: unzip it first and pass the neutral model inside, e.g. "
            "basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl or basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
        )
    if suffix == ".npz":
        try:
            with np.load(src, allow_pickle=False) as z:
                raw: dict[str, Any] = {k: z[k] for k in z.files}
        except ValueError as e:
            raise WeightsError(
                f"{src} holds Python objects (pickled arrays), which are not loaded; store plain arrays: {e}"
            ) from e
        except Exception as e:
            raise WeightsError(f"cannot read {src} as an .npz file: {type(e).__name__}: {e}") from e
    elif suffix == ".pkl":
        obj = restricted_unpickle(src)
        if not isinstance(obj, dict):
            raise WeightsError(
                f"{src} does not hold an SMPL model (a dict of arrays); found {type(obj).__name__}"
            )
        raw = {str(k): _to_plain(v, str(k)) for k, v in obj.items() if str(k) in SMPL_ARRAY_KEYS}
        raw.update({str(k): v for k, v in obj.items() if str(k) not in SMPL_ARRAY_KEYS})
    else:
        raise WeightsError(f"{src}: unsupported file type {suffix!r}; expected the SMPL .pkl (or an .npz)")
    return validate_smpl_arrays(raw, where=str(src))


def write_smpl_npz(
    arrays: Mapping[str, np.ndarray], folder: str | Path, *, source_name: str = "", source_sha256: str = ""
) -> Path:
    """Atomically write validated ``arrays`` to ``folder/SMPL_NEUTRAL.npz`` (no pickled objects)."""
    path = Path(folder) / SMPL_FILENAME
    payload = {k: np.asarray(arrays[k]) for k in SMPL_ARRAY_KEYS}
    payload["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
    payload["source_name"] = np.array(source_name)
    payload["source_sha256"] = np.array(source_sha256)
    write_with(path, lambda fh: np.savez(fh, **payload))
    return path


def read_extra_regressor(path: str | Path) -> np.ndarray:
    """Read and validate a ``J_regressor_extra.npy``: (k ≥ 4, 6890) finite floats; row 3 = head top."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"extra joint regressor not found: {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise WeightsError(f"cannot read {path} as a plain .npy array: {type(e).__name__}: {e}") from e
    if a.ndim != 2 or a.shape[1] != NUM_VERTICES or a.shape[0] < 4 or not np.issubdtype(a.dtype, np.number):
        raise WeightsError(
            f"{path}: expected a (k, {NUM_VERTICES}) numeric joint regressor with k >= 4 (row 3 = head top); "
            f"found {a.dtype} {tuple(a.shape)}"
        )
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise WeightsError(f"{path}: contains NaN or infinite values")
    return a


def import_smpl(src: str | Path, weights_dir: str | Path, extra_regressor: str | Path | None = None) -> Path:
    """Validate the SMPL neutral model at ``src`` and store a clean copy under ``weights_dir/smpl/``.

    Args:
        src: the official ``.pkl`` (``SMPL_NEUTRAL.pkl``, ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``,
            v1.1.0 files), an already converted ``.npz``, or a folder holding one of those names.
        weights_dir: the weights directory DIR; writes ``DIR/smpl/SMPL_NEUTRAL.npz``.
        extra_regressor: optional ``J_regressor_extra.npy`` (k, 6890), validated and copied to
            ``DIR/smpl/J_regressor_extra.npy`` (row 3 gives the head-top joint).

    Returns:
        The path of the written ``SMPL_NEUTRAL.npz``.

    Raises:
        WeightsError: unreadable, refused (disallowed pickle content) or wrong model, with what was
            found and what is expected.
    """
    src_path = _resolve_source(Path(src))
    _warn_if_gendered(src_path.name)
    arrays = read_smpl_source(src_path)
    extra = read_extra_regressor(extra_regressor) if extra_regressor is not None else None
    digest = hashlib.sha256(src_path.read_bytes()).hexdigest()
    folder = smpl_folder(weights_dir)
    out = write_smpl_npz(arrays, folder, source_name=src_path.name, source_sha256=digest)
    if extra is not None:
        write_with(folder / EXTRA_REGRESSOR_FILENAME, lambda fh: np.save(fh, extra, allow_pickle=False))
    logger.info("imported SMPL neutral model from %s into %s", src_path, out)
    return out


# -------------------------------------------------------------------------------------------------
# Loading the clean file
# -------------------------------------------------------------------------------------------------


def smpl_folder(weights_dir: str | Path) -> Path:
    """``weights_dir/smpl`` (where the clean SMPL files live)."""
    return Path(weights_dir) / SMPL_SUBDIR


def find_smpl_file(weights_dir_or_smpl_dir: str | Path) -> Path:
    """Locate the clean ``SMPL_NEUTRAL.npz``: accepts DIR, DIR/smpl, or the .npz path itself.

    Raises:
        WeightsError: not found; lists the paths looked at and the import command.
    """
    p = Path(weights_dir_or_smpl_dir)
    if p.is_file() and p.suffix == ".npz":
        return p
    candidates = [smpl_folder(p) / SMPL_FILENAME, p / SMPL_FILENAME]
    for c in candidates:
        if c.is_file():
            return c
    weights_dir = p.parent if p.name == SMPL_SUBDIR else p
    raise WeightsError(
        f"SMPL body model not found: expected {candidates[0]}"
        f" (also looked for {candidates[1]}).\n" + _import_hint(weights_dir)
    )


def load_smpl_arrays(weights_dir: str | Path) -> dict[str, np.ndarray]:
    """Load the clean SMPL arrays (:data:`SMPL_ARRAY_KEYS`) from DIR, DIR/smpl or the .npz path.

    Returns float32 arrays (int64 ``kintree_table`` and ``f``), validated again on load.

    Raises:
        WeightsError: missing (with the import command) or invalid file.
    """
    path = find_smpl_file(weights_dir)
    try:
        with np.load(path, allow_pickle=False) as z:
            raw = {k: z[k] for k in z.files if k in SMPL_ARRAY_KEYS}
    except Exception as e:
        raise WeightsError(
            f"cannot read {path}: {type(e).__name__}: {e}\nRe-import it:\n" + _import_hint(path.parent.parent)
        ) from e
    return validate_smpl_arrays(raw, where=str(path))


def load_extra_regressor(weights_dir_or_smpl_dir: str | Path) -> np.ndarray | None:
    """The optional ``J_regressor_extra.npy`` next to the clean SMPL file, or None if absent."""
    path = find_smpl_file(weights_dir_or_smpl_dir).parent / EXTRA_REGRESSOR_FILENAME
    return read_extra_regressor(path) if path.is_file() else None

