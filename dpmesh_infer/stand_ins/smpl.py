"""A synthetic stand-in for the SMPL neutral model (the real one is licensed and never downloaded).

:func:`make_synthetic_smpl_arrays`, :func:`write_synthetic_smpl_pkl` (laid out like the official .pkl,
chumpy objects included), :func:`write_synthetic_smpl_npz` (our clean format) and a stand-in H36M
regressor: a body-shaped model with the exact array shapes of the official file. Deterministic in ``seed``.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# =================================================================================================
# Synthetic SMPL
# =================================================================================================

#: Rest-pose joint positions (24, 3) in metres, SMPL frame (x = body left, y up, z forward),
#: roughly those of the real neutral SMPL template. The feet are near y = -1.2 and the head top near
#: y = +0.55, so the body is about 1.75 m tall.
SYNTHETIC_REST_JOINTS = np.array(
    [
        [0.000, -0.220, 0.020],  # 0 pelvis
        [0.060, -0.310, 0.010],  # 1 L_hip
        [-0.060, -0.310, 0.010],  # 2 R_hip
        [0.000, -0.110, -0.010],  # 3 spine1
        [0.100, -0.690, 0.010],  # 4 L_knee
        [-0.100, -0.690, 0.010],  # 5 R_knee
        [0.000, 0.030, 0.000],  # 6 spine2
        [0.080, -1.090, -0.030],  # 7 L_ankle
        [-0.080, -1.090, -0.030],  # 8 R_ankle
        [0.000, 0.080, 0.020],  # 9 spine3
        [0.120, -1.150, 0.090],  # 10 L_foot
        [-0.120, -1.150, 0.090],  # 11 R_foot
        [0.000, 0.290, -0.010],  # 12 neck
        [0.070, 0.190, 0.000],  # 13 L_collar
        [-0.070, 0.190, 0.000],  # 14 R_collar
        [0.000, 0.360, 0.040],  # 15 head
        [0.170, 0.230, -0.020],  # 16 L_shoulder
        [-0.170, 0.230, -0.020],  # 17 R_shoulder
        [0.430, 0.210, -0.040],  # 18 L_elbow
        [-0.430, 0.210, -0.040],  # 19 R_elbow
        [0.680, 0.220, -0.040],  # 20 L_wrist
        [-0.680, 0.220, -0.040],  # 21 R_wrist
        [0.760, 0.210, -0.050],  # 22 L_hand
        [-0.760, 0.210, -0.050],  # 23 R_hand
    ],
    dtype=np.float64,
)

#: SMPL kinematic tree: parent of each of the 24 joints (-1 for the root).
SMPL_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], dtype=np.int64
)

# Special vertices placed on the synthetic head so that face keypoints and the head top are plausible.
_HEAD_CENTRE = np.array([0.0, 0.45, 0.02])
_SPECIAL_VERTICES = {
    331: _HEAD_CENTRE + [0.0, 0.0, 0.10],  # nose (front is +z)
    2802: _HEAD_CENTRE + [0.035, 0.03, 0.085],  # L eye
    6262: _HEAD_CENTRE + [-0.035, 0.03, 0.085],  # R eye
    3489: _HEAD_CENTRE + [0.08, 0.0, 0.0],  # L ear
    3990: _HEAD_CENTRE + [-0.08, 0.0, 0.0],  # R ear
    411: _HEAD_CENTRE + [0.0, 0.10, 0.0],  # head top
}
_RING_SIZE = 16  # vertices per joint whose mean is exactly the rest joint (J_regressor rows)


def make_synthetic_smpl_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A body-shaped stand-in for the SMPL neutral model, with the official array shapes.

    Returns plain arrays (float64 unless noted), keyed like the official file:

    - ``v_template`` (6890, 3) metres: vertices scattered around the 23 bones of
      :data:`SYNTHETIC_REST_JOINTS` (limb radius 4-12 cm) plus a head sphere; ~1.75 m tall.
    - ``shapedirs`` (6890, 3, 10): component 0 scales the body about the pelvis (3 % per unit),
      the others are small random offsets (about 3 mm per unit).
    - ``posedirs`` (6890, 3, 207): small random pose correctives (about 1 mm per unit).
    - ``J_regressor`` (24, 6890): each row averages a symmetric ring of 16 vertices around its joint,
      so the regressed rest joints equal :data:`SYNTHETIC_REST_JOINTS`; rows sum to 1.
    - ``weights`` (6890, 24): skinning weights, Gaussian in the distance to the joints, 4 non-zero
      per row, rows sum to 1.
    - ``kintree_table`` (2, 24) int64: row 0 = parents with the root parent stored as 4294967295
      exactly like the official file (uint32 -1), row 1 = 0..23.
    - ``f`` (13776, 3) uint32: triangles with distinct vertex indices (random topology).

    The face-keypoint vertices 331, 2802, 6262, 3489, 3990 and the head-top vertex 411 sit on the
    head at plausible places.
    """
    rng = np.random.default_rng(seed)
    n_v, n_j = 6890, 24
    joints = SYNTHETIC_REST_JOINTS
    v = np.zeros((n_v, 3))
    free = np.ones(n_v, dtype=bool)
    for idx, pos in _SPECIAL_VERTICES.items():
        v[idx] = pos
        free[idx] = False

    # Joint rings: symmetric offsets so that the mean is exactly the joint.
    j_reg = np.zeros((n_j, n_v))
    candidates = rng.permutation(np.flatnonzero(free))
    ring_ids = candidates[: n_j * _RING_SIZE].reshape(n_j, _RING_SIZE)
    for j in range(n_j):
        half = rng.normal(size=(_RING_SIZE // 2, 3))
        half *= 0.03 / np.linalg.norm(half, axis=1, keepdims=True)
        v[ring_ids[j]] = joints[j] + np.concatenate([half, -half])
        j_reg[j, ring_ids[j]] = 1.0 / _RING_SIZE
    free[ring_ids.ravel()] = False

    # Remaining vertices: around bones (child joint c and its parent) and a head sphere.
    rest = np.flatnonzero(free)
    n_head = 600
    head_ids, bone_ids = rest[:n_head], rest[n_head:]
    d = rng.normal(size=(n_head, 3))
    v[head_ids] = _HEAD_CENTRE + 0.1 * d / np.linalg.norm(d, axis=1, keepdims=True)
    child = rng.integers(1, n_j, size=bone_ids.size)
    t = rng.uniform(0.0, 1.0, size=bone_ids.size)[:, None]
    axis_pts = joints[SMPL_PARENTS[child]] + t * (joints[child] - joints[SMPL_PARENTS[child]])
    radius = np.where(np.isin(child, [1, 2, 3, 6, 9]), 0.12, np.where(child >= 18, 0.04, 0.07))
    d = rng.normal(size=(bone_ids.size, 3))
    v[bone_ids] = axis_pts + radius[:, None] * d / np.linalg.norm(d, axis=1, keepdims=True)

    # Skinning weights: Gaussian in the distance to each joint, top 4 kept, rows sum to 1.
    dist2 = ((v[:, None, :] - joints[None, :, :]) ** 2).sum(-1)
    logits = -dist2 / (2 * 0.08**2)
    keep = np.argsort(-logits, axis=1)[:, :4]
    w = np.zeros((n_v, n_j))
    sel = np.take_along_axis(logits, keep, axis=1)
    sel = np.exp(sel - sel.max(axis=1, keepdims=True))
    np.put_along_axis(w, keep, sel / sel.sum(axis=1, keepdims=True), axis=1)

    shapedirs = rng.normal(scale=0.003, size=(n_v, 3, 10))
    shapedirs[:, :, 0] = 0.03 * (v - joints[0])
    posedirs = rng.normal(scale=0.001, size=(n_v, 3, 207))

    kintree = np.stack([SMPL_PARENTS, np.arange(n_j)]).astype(np.int64)
    kintree[0, 0] = 4294967295
    faces = np.stack([rng.choice(n_v, size=3, replace=False) for _ in range(13776)]).astype(np.uint32)
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": j_reg,
        "weights": w,
        "kintree_table": kintree,
        "f": faces,
    }


_FAKE_CHUMPY_CH = textwrap.dedent(
    '''
    """Test stand-in for chumpy.ch: only what pickling a Ch needs (state layout of chumpy's Ch)."""
    import numpy as np


    class Ch(object):
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

        def __getstate__(self):
            # chumpy pickles its __dict__ minus the weak-reference bookkeeping (_parents, _cache)
            return dict(self.__dict__)

        def __setstate__(self, d):
            self.__dict__.update(d)
    '''
)


@contextlib.contextmanager
def _fake_chumpy() -> Iterator[Any]:
    """Make ``import chumpy.ch`` resolve to a throw-away package for the duration of the block."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "chumpy" or k.startswith("chumpy.")}
    with tempfile.TemporaryDirectory(prefix="fake_chumpy_") as tmp:
        pkg = Path(tmp) / "chumpy"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("from .ch import Ch\n", encoding="utf-8")
        (pkg / "ch.py").write_text(_FAKE_CHUMPY_CH, encoding="utf-8")
        sys.path.insert(0, tmp)
        try:
            import chumpy.ch  # noqa: PLC0415  (the fake one)

            yield chumpy.ch
        finally:
            sys.path.remove(tmp)
            for k in [k for k in sys.modules if k == "chumpy" or k.startswith("chumpy.")]:
                del sys.modules[k]
            sys.modules.update(saved)


def write_synthetic_smpl_pkl(
    path: str | Path, with_chumpy: bool = True, *, seed: int = 0, protocol: int = 2
) -> Path:
    """Write a synthetic SMPL neutral model laid out like the official ``.pkl``.

    With ``with_chumpy`` (default) the file mirrors ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``:
    ``shapedirs`` is a ``chumpy.ch.Ch`` object (pickled through a temporary fake ``chumpy``
    package, so the file references ``chumpy.ch.Ch`` exactly like real files; the package is gone
    afterwards), ``J_regressor`` and ``J_regressor_prior`` are ``scipy.sparse.csc_matrix``, ``f``
    is uint32, the root parent in ``kintree_table`` is 4294967295, and the extra entries of the
    official file are present (``J``, ``weights_prior``, ``vert_sym_idxs``, ``bs_style``,
    ``bs_type``, ``pose_training_info``). Without it, every entry is a plain ndarray (like files
    that were already cleaned of chumpy). ``protocol`` 2 is what Python-2 era files use.
    """
    import scipy.sparse as sp

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = make_synthetic_smpl_arrays(seed)
    if not with_chumpy:
        with open(path, "wb") as fh:
            pickle.dump(arrays, fh, protocol=protocol)
        return path

    data: dict[str, Any] = dict(arrays)
    data["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
    data["J_regressor_prior"] = sp.csc_matrix(arrays["J_regressor"])
    data["weights_prior"] = arrays["weights"].copy()
    data["J"] = arrays["J_regressor"] @ arrays["v_template"]
    data["vert_sym_idxs"] = np.arange(6890, dtype=np.int64)[::-1].copy()
    data["bs_style"] = "lbs"
    data["bs_type"] = "lrotmin"
    data["pose_training_info"] = {"num_subjects": 1, "data_type": "synthetic", "lambdas": [1.0, 0.5]}
    with _fake_chumpy() as ch:
        data["shapedirs"] = ch.Ch(arrays["shapedirs"])
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=protocol)
    return path


def write_synthetic_smpl_npz(
    weights_dir: str | Path, *, seed: int = 0, extra_regressor: bool = False
) -> Path:
    """Write ``weights_dir/smpl/SMPL_NEUTRAL.npz`` (our clean format) from the synthetic model.

    With ``extra_regressor``, also writes ``weights_dir/smpl/J_regressor_extra.npy`` (9, 6890) whose
    row 3 (head top) averages four vertices around the synthetic head top. Returns the npz path.
    """
    from ..models.body_io import validate_smpl_arrays, write_smpl_npz
    from ..weights.layout import EXTRA_REGRESSOR_FILE, SMPL_DIR, SMPL_FILE

    arrays = validate_smpl_arrays(make_synthetic_smpl_arrays(seed), where="synthetic SMPL")
    folder = Path(weights_dir) / SMPL_DIR
    out = write_smpl_npz(arrays, folder / SMPL_FILE)
    if extra_regressor:
        extra = np.zeros((9, 6890))
        extra[3, [411, 331, 3489, 3990]] = [0.7, 0.1, 0.1, 0.1]
        for r in (0, 1, 2, 4, 5, 6, 7, 8):
            extra[r, 100 + r] = 1.0
        np.save(folder / EXTRA_REGRESSOR_FILE, extra)
    return out


#: H36M joint -> SMPL joint whose synthetic J_regressor row stands in for it (pelvis, R hip, R knee,
#: R ankle, L hip, L knee, L ankle, spine, thorax, neck/nose, head, L shoulder, L elbow, L wrist,
#: R shoulder, R elbow, R wrist).
_H36M_FROM_SMPL = (0, 2, 5, 8, 1, 4, 7, 3, 9, 12, 15, 16, 18, 20, 17, 19, 21)


def write_synthetic_h36m_regressor(folder: str | Path, *, seed: int = 0) -> Path:
    """Write ``folder/J_regressor_h36m.npy`` (17, 6890) for the synthetic body: each H36M joint is the
    synthetic J_regressor row of the nearest SMPL joint (a stand-in for smoke runs of ``dpmesh
    evaluate``; NOT the real H36M regressor, whose numbers it does not reproduce)."""
    from ..weights.layout import H36M_REGRESSOR_FILE

    j = make_synthetic_smpl_arrays(seed)["J_regressor"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / H36M_REGRESSOR_FILE
    np.save(path, np.asarray(j[list(_H36M_FROM_SMPL)], dtype=np.float64), allow_pickle=False)
    return path
