"""Evaluation metrics exactly as DPMesh / 3DCrowdNet report them (ARCHITECTURE §10, upstream §7).

All inputs are numpy arrays **in metres**; every metric returns **millimetres per instance** (B,) so
callers can average per split or combine splits/ranks with :func:`weighted_mean`.

Protocol (3DPW family):

- Joints: the 17×6890 H36M regressor (``J_regressor_h36m_correct.npy``) applied to each mesh
  (:func:`h36m_joints`), made relative to H36M joint 0 (pelvis), then the 14 evaluation joints
  :data:`H36M_EVAL_JOINTS` are kept (:func:`h36m_eval_joints`).
- MPJPE (:func:`mpjpe`): mean Euclidean distance over those joints.
- PA-MPJPE (:func:`pa_mpjpe`): the predicted joints are first mapped onto the GT joints by the
  similarity Procrustes of :func:`similarity_align` (SVD, reflection fix, scale = trace(S)/var(pred)).
- MPVE (:func:`mpve`): both meshes relative to their own pelvis (row 0 of the SMPL joint regressor the
  caller passes: the predicted mesh's and, if different, e.g. gender-specific GT, the GT mesh's), mean
  vertex distance. There is no PA-MPVE.

Computation is float64 internally; results are float64 arrays.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "H36M_PELVIS",
    "H36M_EVAL_JOINTS",
    "MeshMetrics",
    "evaluate_meshes",
    "h36m_eval_joints",
    "h36m_joints",
    "mpjpe",
    "mpve",
    "pa_mpjpe",
    "similarity_align",
    "weighted_mean",
]

H36M_PELVIS = 0
H36M_EVAL_JOINTS = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)  # 14 joints, H36M order


def _points(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"{name}: expected (B, N, 3) or (N, 3) points, got shape {x.shape}")
    return x


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _points(pred, "pred"), _points(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must have the same shape")
    return pred, gt


def h36m_joints(vertices: np.ndarray, regressor: np.ndarray) -> np.ndarray:
    """(B, V, 3) vertices × (17, V) H36M regressor → (B, 17, 3) joints (same units as the vertices)."""
    vertices = _points(vertices, "vertices")
    regressor = np.asarray(regressor, dtype=np.float64)
    if regressor.ndim != 2 or regressor.shape[1] != vertices.shape[1]:
        raise ValueError(f"regressor {regressor.shape} does not match {vertices.shape[1]} vertices")
    return np.einsum("jv,bvc->bjc", regressor, vertices)


def h36m_eval_joints(joints_h36m: np.ndarray) -> np.ndarray:
    """(B, 17, 3) H36M joints → (B, 14, 3) pelvis-relative evaluation joints (:data:`H36M_EVAL_JOINTS`)."""
    j = _points(joints_h36m, "joints_h36m")
    if j.shape[1] != 17:
        raise ValueError(f"expected 17 H36M joints, got {j.shape[1]}")
    return (j - j[:, H36M_PELVIS:H36M_PELVIS + 1])[:, list(H36M_EVAL_JOINTS)]


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean per-joint position error, mm per instance (B,). pred, gt (B, J, 3) in metres, used as given
    (make them pelvis-relative first, e.g. with :func:`h36m_eval_joints`)."""
    pred, gt = _pair(pred, gt)
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) * 1000.0


def similarity_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Map each pred (B, N, 3) onto gt by the least-squares similarity s·R·x + t (upstream ``rigid_align``).

    H = (pred − μp)ᵀ(gt − μg)/N = U S Vᵀ; R = V Uᵀ, and if det R < 0 the last singular value and the
    last row of Vᵀ are negated (reflection fix); s = ΣS / var(pred) (var summed over x, y, z);
    t = μg − s R μp. Returns the aligned pred (B, N, 3).
    """
    pred, gt = _pair(pred, gt)
    mu_p, mu_g = pred.mean(axis=1, keepdims=True), gt.mean(axis=1, keepdims=True)
    p, g = pred - mu_p, gt - mu_g
    h = np.einsum("bni,bnj->bij", p, g) / pred.shape[1]
    u, s, vt = np.linalg.svd(h)
    flip = np.linalg.det(np.einsum("bji,bkj->bik", vt, u)) < 0  # det(V Uᵀ)
    s = s.copy()
    vt = vt.copy()
    s[flip, -1] *= -1
    vt[flip, -1] *= -1
    r = np.einsum("bji,bkj->bik", vt, u)  # V Uᵀ
    var_p = p.var(axis=1).sum(axis=-1)
    scale = s.sum(axis=-1) / np.maximum(var_p, 1e-300)
    return scale[:, None, None] * np.einsum("bij,bnj->bni", r, p) + mu_g


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Procrustes-aligned MPJPE, mm per instance (B,): :func:`mpjpe` after :func:`similarity_align`."""
    pred, gt = _pair(pred, gt)
    return mpjpe(similarity_align(pred, gt), gt)


def _pelvis_row(regressor: np.ndarray, n_vertices: int, name: str) -> np.ndarray:
    r = np.asarray(regressor, dtype=np.float64)
    row = r[0] if r.ndim == 2 else r
    if row.ndim != 1 or row.shape[0] != n_vertices:
        raise ValueError(f"{name}: expected a (J, {n_vertices}) regressor or its ({n_vertices},) row 0, "
                         f"got shape {r.shape}")
    return row


def mpve(pred_vertices: np.ndarray, gt_vertices: np.ndarray, smpl_regressor: np.ndarray,
         gt_smpl_regressor: np.ndarray | None = None) -> np.ndarray:
    """Mean per-vertex error, mm per instance (B,).

    Args:
        pred_vertices, gt_vertices: (B, V, 3) meshes in metres.
        smpl_regressor: the predicted mesh's SMPL joint regressor (24, V) (or just its row 0, (V,));
            row 0 (pelvis) is subtracted from the predicted mesh.
        gt_smpl_regressor: the same for the GT mesh (e.g. the gender-specific model); defaults to
            ``smpl_regressor``.
    """
    pred, gt = _pair(pred_vertices, gt_vertices)
    v = pred.shape[1]
    row_p = _pelvis_row(smpl_regressor, v, "smpl_regressor")
    row_g = row_p if gt_smpl_regressor is None else _pelvis_row(gt_smpl_regressor, v, "gt_smpl_regressor")
    pred = pred - np.einsum("v,bvc->bc", row_p, pred)[:, None]
    gt = gt - np.einsum("v,bvc->bc", row_g, gt)[:, None]
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1) * 1000.0


@dataclasses.dataclass(frozen=True)
class MeshMetrics:
    """Per-instance metrics in mm, each (B,) float64: ``mpjpe``, ``pa_mpjpe``, ``mpve``."""

    mpjpe: np.ndarray
    pa_mpjpe: np.ndarray
    mpve: np.ndarray

    def means(self) -> dict[str, float]:
        """{"mpjpe": mm, "pa_mpjpe": mm, "mpve": mm, "count": B} (NaN means for an empty batch)."""
        n = int(self.mpjpe.shape[0])
        out = {k: float(getattr(self, k).mean()) if n else float("nan") for k in ("mpjpe", "pa_mpjpe", "mpve")}
        return {**out, "count": n}


def evaluate_meshes(pred_vertices: np.ndarray, gt_vertices: np.ndarray, *, h36m_regressor: np.ndarray,
                    smpl_regressor: np.ndarray, gt_smpl_regressor: np.ndarray | None = None) -> MeshMetrics:
    """All three metrics for (B, V, 3) predicted and GT meshes in metres, by the §10 protocol."""
    pred_j = h36m_eval_joints(h36m_joints(pred_vertices, h36m_regressor))
    gt_j = h36m_eval_joints(h36m_joints(gt_vertices, h36m_regressor))
    return MeshMetrics(mpjpe=mpjpe(pred_j, gt_j), pa_mpjpe=pa_mpjpe(pred_j, gt_j),
                       mpve=mpve(pred_vertices, gt_vertices, smpl_regressor, gt_smpl_regressor))


def weighted_mean(means: list[float] | np.ndarray, counts: list[int] | np.ndarray) -> float:
    """Sample-weighted mean of per-part means (e.g. per rank or per batch), as upstream combines ranks."""
    m, c = np.asarray(means, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if m.shape != c.shape or (c < 0).any():
        raise ValueError("means and counts must have the same shape and counts must be non-negative")
    total = c.sum()
    return float((m * c).sum() / total) if total > 0 else float("nan")
