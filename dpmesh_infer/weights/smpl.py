"""SMPL neutral: import the file a user downloaded, validate it, store a clean copy, find and load it.

The SMPL model is licensed (https://smpl.is.tue.mpg.de) and never downloaded by this package. The
user imports it once::

    dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights DIR

which writes ``DIR/smpl/SMPL_NEUTRAL.npz``: plain arrays, no pickle, no chumpy, readable with
``np.load(allow_pickle=False)`` (layout: :mod:`dpmesh_infer.models.body_io`). With ``--pkl`` it also
writes ``DIR/smpl/SMPL_NEUTRAL.pkl`` for smplx and other SMPL tools (:func:`write_smpl_pkl`: the
official file's layout with chumpy replaced by plain numpy arrays, ``J_regressor`` a scipy.sparse matrix
as in the official file): ``smplx.SMPL(model_path="DIR/smpl/SMPL_NEUTRAL.pkl")`` or
``smplx.create("DIR", model_type="smpl", gender="neutral")``.

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
from typing import Any

import numpy as np

from ..atomic import write_with
from ..errors import OutputConflictError, WeightsError
from ..models.body_io import SMPL_ARRAY_KEYS, read_regressor_npy, read_smpl_npz, validate_smpl_arrays, write_smpl_npz
from .layout import EXTRA_REGRESSOR_FILE, SMPL_DIR, SMPL_FILE, SMPL_PKL_FILE, fix_command

logger = logging.getLogger(__name__)

SMPL_DOWNLOAD_URL = "https://smpl.is.tue.mpg.de"

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
        f"    {fix_command(f'{SMPL_DIR}/{SMPL_FILE}', where)}"
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


def import_smpl(src: str | Path, weights_dir: str | Path, extra_regressor: str | Path | None = None, *,
                pkl: bool = False) -> Path:
    """Validate the SMPL neutral model at ``src`` and store a clean copy under ``weights_dir/smpl/``.

    Args:
        src: the official ``.pkl`` (``SMPL_NEUTRAL.pkl``, ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``,
            v1.1.0 files), an already converted ``.npz``, or a folder holding one of those names.
        weights_dir: the weights directory DIR; writes ``DIR/smpl/SMPL_NEUTRAL.npz``.
        extra_regressor: optional ``J_regressor_extra.npy`` (k, 6890), validated and copied to
            ``DIR/smpl/J_regressor_extra.npy`` (row 3 gives the head-top joint).
        pkl: also write ``DIR/smpl/SMPL_NEUTRAL.pkl`` (:func:`write_smpl_pkl`) for smplx and other tools.

    Returns:
        The path of the written ``SMPL_NEUTRAL.npz``.

    Raises:
        WeightsError: unreadable, refused (disallowed pickle content) or wrong model, with what was
            found and what is expected.
        OutputConflictError: with ``pkl``, the source is the ``SMPL_NEUTRAL.pkl`` that would be written.
    """
    src_path = _resolve_source(Path(src))
    pkl_path = smpl_folder(weights_dir) / SMPL_PKL_FILE
    if pkl and pkl_path.exists() and src_path.resolve() == pkl_path.resolve():
        raise OutputConflictError(f"{src_path} is the file --pkl would write ({pkl_path}); import from a copy "
                                  "elsewhere, or leave out --pkl")
    _warn_if_gendered(src_path.name)
    arrays = read_smpl_source(src_path)
    extra = _read_extra(extra_regressor) if extra_regressor is not None else None
    digest = hashlib.sha256(src_path.read_bytes()).hexdigest()
    folder = smpl_folder(weights_dir)
    out = write_smpl_npz(arrays, folder / SMPL_FILE, source_name=src_path.name, source_sha256=digest)
    if extra is not None:
        write_with(folder / EXTRA_REGRESSOR_FILE, lambda fh: np.save(fh, extra, allow_pickle=False))
    if pkl:
        write_smpl_pkl(arrays, pkl_path)
    logger.info("imported SMPL neutral model from %s into %s", src_path, out)
    return out


#: Pickle protocol of SMPL_NEUTRAL.pkl: 2 (no protocol-5 ``numpy._core.numeric._frombuffer`` reference,
#: so numpy >= 1.26.1 loads it as well as numpy 2).
SMPL_PKL_PROTOCOL = 2


def write_smpl_pkl(arrays: dict[str, np.ndarray], path: str | Path) -> Path:
    """Atomically write validated SMPL ``arrays`` as a chumpy-free ``SMPL_NEUTRAL.pkl`` that ``smplx.SMPL``
    and a plain ``pickle.load(f, encoding="latin1")`` read without chumpy.

    Layout of the official ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl`` with every chumpy array replaced
    by a plain ndarray: ``v_template`` (6890, 3), ``shapedirs`` (6890, 3, 10), ``posedirs`` (6890, 3, 207),
    ``weights`` (6890, 24), ``J`` (24, 3) rest joints = J_regressor @ v_template (float64, the official
    dtype, holding our float32 values exactly), ``J_regressor`` a ``scipy.sparse.csc_matrix`` (24, 6890),
    ``kintree_table`` (2, 24) uint32 with the root's parent 4294967295, ``f`` (13776, 3) uint32,
    ``bs_style`` "lbs", ``bs_type`` "lrotmin". Loading needs numpy and scipy >= 1.8 (numpy >= 1.26.1).
    """
    import scipy.sparse as sp

    a = {k: np.asarray(v) for k, v in arrays.items()}
    kintree = a["kintree_table"].astype(np.int64)
    kintree[0, 0] = 4294967295
    v_template = a["v_template"].astype(np.float64)
    jreg = a["J_regressor"].astype(np.float64)
    data = {
        "v_template": v_template,
        "shapedirs": a["shapedirs"].astype(np.float64),
        "posedirs": a["posedirs"].astype(np.float64),
        "weights": a["weights"].astype(np.float64),
        "J_regressor": sp.csc_matrix(jreg),
        "J": jreg @ v_template,
        "kintree_table": kintree.astype(np.uint32),
        "f": a["f"].astype(np.uint32),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    write_with(Path(path), lambda fh: pickle.dump(data, fh, protocol=SMPL_PKL_PROTOCOL))
    return Path(path)


# -------------------------------------------------------------------------------------------------
# Loading the clean file
# -------------------------------------------------------------------------------------------------


def smpl_folder(weights_dir: str | Path) -> Path:
    """``weights_dir/smpl`` (where the clean SMPL files live)."""
    return Path(weights_dir) / SMPL_DIR


def find_smpl_file(weights_dir_or_smpl_dir: str | Path) -> Path:
    """Locate the clean ``SMPL_NEUTRAL.npz``: accepts DIR, DIR/smpl, or the .npz path itself.

    Raises:
        WeightsError: not found; lists the paths looked at and the import command.
    """
    p = Path(weights_dir_or_smpl_dir)
    if p.is_file() and p.suffix == ".npz":
        return p
    candidates = [smpl_folder(p) / SMPL_FILE, p / SMPL_FILE]
    for c in candidates:
        if c.is_file():
            return c
    weights_dir = p.parent if p.name == SMPL_DIR else p
    raise WeightsError(
        f"SMPL body model not found: expected {candidates[0]}"
        f" (also looked for {candidates[1]}).\n" + _import_hint(weights_dir)
    )


def _read_extra(path: str | Path) -> np.ndarray:
    """A ``J_regressor_extra.npy``: (k >= 4, 6890) float32; row 3 is the head top."""
    return read_regressor_npy(path, what="extra joint regressor (J_regressor_extra.npy, row 3 = head top)",
                              min_rows=4)


def load_smpl_arrays(weights_dir: str | Path) -> dict[str, np.ndarray]:
    """Load the clean SMPL arrays (:data:`SMPL_ARRAY_KEYS`) from DIR, DIR/smpl or the .npz path.

    Returns float32 arrays (int64 ``kintree_table`` and ``f``), validated again on load.

    Raises:
        WeightsError: missing (with the import command) or invalid file.
    """
    path = find_smpl_file(weights_dir)
    return read_smpl_npz(path, fix_hint="Re-import it:\n" + _import_hint(path.parent.parent))


def load_extra_regressor(weights_dir_or_smpl_dir: str | Path) -> np.ndarray | None:
    """The optional ``J_regressor_extra.npy`` next to the clean SMPL file, or None if absent."""
    path = find_smpl_file(weights_dir_or_smpl_dir).parent / EXTRA_REGRESSOR_FILE
    return _read_extra(path) if path.is_file() else None


def load_smpl(weights_dir_or_smpl_dir: str | Path, device="cpu"):
    """:class:`~dpmesh_infer.models.body.SMPLBody` from ``DIR/smpl/SMPL_NEUTRAL.npz`` (+ the optional
    ``J_regressor_extra.npy`` beside it). Accepts the weights directory DIR, DIR/smpl, or the .npz path.

    Raises:
        WeightsError: the SMPL file is missing (the message gives the import command) or invalid.
    """
    from ..models.body import SMPLBody

    arrays = load_smpl_arrays(weights_dir_or_smpl_dir)
    extra = load_extra_regressor(weights_dir_or_smpl_dir)
    return SMPLBody(arrays, extra_regressor=extra).to(device)
