"""Temporal smoothing of a track's SMPL parameters: One-Euro filters on SO(3) and on the root position,
and one shape per track.

One-Euro (Casiez, Roussel and Vogel, CHI 2012) is an exponential smoother whose cutoff frequency rises
with the signal's speed: ``cutoff = min_cutoff + beta * |speed|``; slow motion is smoothed hard
(jitter removed), fast motion lightly (little lag). Each step uses the real time between samples, so
gaps in a track are handled (a long gap makes the filter trust the new measurement).

* **Rotations** (global orientation and the 23 body joints) are filtered on SO(3), not on axis-angle
  numbers: with unit quaternions, each measurement is first put on the hemisphere of the previous
  estimate (sign continuity: q and -q are the same rotation), the speed is the geodesic angular
  velocity ``|log(q_prev^-1 q)| / dt`` (rad/s), and the estimate moves along the geodesic by the
  filter's alpha (slerp). Rotations are handled with :class:`scipy.spatial.transform.Rotation`.
* **Translation**: the root joint's position (``J_0(betas) + transl``, metres) is filtered per
  coordinate (speed = its norm, m/s), then turned back into ``transl`` for the track's fixed betas,
  so replacing the per-frame betas does not move the body.
* **Betas** are fixed per track: the score-weighted geometric median of the per-frame betas
  (Weiszfeld), robust to frames where the person was mostly hidden.

**Zero lag** (default, ``--smooth oneeuro``): a video run is offline, so each filter runs forward and
backward over the track and the two estimates are averaged (the SO(3) midpoint for rotations). The
causal filter (``--smooth oneeuro-causal``, what live systems and ROMP use) lags behind the motion; measured
on synthetic rotations with 0.05 rad noise (``benchmarks/bench_smoothing.py``), the causal filter's error
to the true motion is larger than the raw noise once the joint turns faster than about 1 rad/s, while the
forward-backward average cuts the error 2-3x at every speed with the same jitter reduction.

The raw per-frame values are never changed; smoothed values are new arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ConfigBase


@dataclass(frozen=True)
class OneEuroConfig(ConfigBase):
    """One-Euro parameters (``--smooth-min-cutoff``, ``--smooth-beta``, ``--smooth-d-cutoff``).

    Attributes:
        min_cutoff: cutoff frequency at rest, Hz. Lower = smoother slow motion (more lag).
        beta: how fast the cutoff rises with speed, Hz per (rad/s) for rotations and per (m/s) for the
            root. Higher = less lag in fast motion (more jitter left).
        d_cutoff: cutoff of the speed estimate itself, Hz.
        zero_lag: run forward and backward and average (offline, no lag); False = the causal filter.
    """

    min_cutoff: float = 1.0
    beta: float = 0.3
    d_cutoff: float = 1.0
    zero_lag: bool = True

    def validate(self) -> None:
        from ..errors import InputError

        if not (self.min_cutoff > 0 and self.d_cutoff > 0 and self.beta >= 0):
            raise InputError("--smooth-min-cutoff and --smooth-d-cutoff must be positive, --smooth-beta >= 0")


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


def _steps(times: np.ndarray) -> np.ndarray:
    t = np.asarray(times, np.float64)
    dt = np.diff(t)
    if np.any(dt <= 0):
        raise ValueError("sample times must increase")
    return dt


def one_euro_vectors(x: np.ndarray, times: np.ndarray, cfg: OneEuroConfig) -> np.ndarray:
    """One-Euro filter of a vector signal (forward-backward average with ``cfg.zero_lag``).

    Args:
        x: (T, ..., D) values; each (..., ) group is filtered as one D-vector (speed = its norm).
        times: (T,) seconds, increasing.
    Returns:
        (T, ..., D) filtered values (float64); the first equals ``x[0]``.
    """
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return x.copy()
    fwd = _one_euro_vectors_causal(x, times, cfg)
    if not cfg.zero_lag:
        return fwd
    t = np.asarray(times, np.float64)
    bwd = _one_euro_vectors_causal(x[::-1], t[-1] - t[::-1], cfg)[::-1]
    return 0.5 * (fwd + bwd)


def _one_euro_vectors_causal(x: np.ndarray, times: np.ndarray, cfg: OneEuroConfig) -> np.ndarray:
    dts = _steps(times)
    out = np.empty_like(x)
    out[0] = x[0]
    dx = np.zeros_like(x[0])
    for i, dt in enumerate(dts, start=1):
        raw_d = (x[i] - out[i - 1]) / dt
        dx = dx + _alpha(cfg.d_cutoff, dt) * (raw_d - dx)
        speed = np.linalg.norm(dx, axis=-1, keepdims=True)
        a = _alpha(cfg.min_cutoff + cfg.beta * speed, dt)
        out[i] = out[i - 1] + a * (x[i] - out[i - 1])
    return out


def one_euro_rotations(rotvec: np.ndarray, times: np.ndarray, cfg: OneEuroConfig) -> np.ndarray:
    """One-Euro filter on SO(3) (see the module docstring); forward-backward with ``cfg.zero_lag``.

    Args:
        rotvec: (T, J, 3) axis-angle rotations (radians) of J joints over T samples.
        times: (T,) seconds, increasing.
    Returns:
        (T, J, 3) filtered rotations as axis-angle (angle in [0, pi]).
    """
    from scipy.spatial.transform import Rotation

    rv = np.asarray(rotvec, np.float64)
    fwd = _one_euro_quats_causal(rv, times, cfg)
    if cfg.zero_lag and len(rv) > 1:
        t = np.asarray(times, np.float64)
        bwd = _one_euro_quats_causal(rv[::-1], t[-1] - t[::-1], cfg)[::-1]
        f, b = Rotation.from_quat(fwd.reshape(-1, 4)), Rotation.from_quat(bwd.reshape(-1, 4))
        mid = f * Rotation.from_rotvec(0.5 * (f.inv() * b).as_rotvec())  # the SO(3) midpoint
        return mid.as_rotvec().reshape(rv.shape)
    return Rotation.from_quat(fwd.reshape(-1, 4)).as_rotvec().reshape(rv.shape)


def _one_euro_quats_causal(rv: np.ndarray, times: np.ndarray, cfg: OneEuroConfig) -> np.ndarray:
    """The causal SO(3) One-Euro filter: (T, J, 3) axis-angle -> (T, J, 4) quaternions (x, y, z, w)."""
    from scipy.spatial.transform import Rotation

    t_len, n_j = rv.shape[:2]
    if t_len == 0:
        return np.zeros((0, n_j, 4))
    dts = _steps(times)
    quats = Rotation.from_rotvec(rv.reshape(-1, 3)).as_quat().reshape(t_len, n_j, 4)  # (x, y, z, w)
    est = quats[0].copy()
    out = np.empty_like(quats)
    out[0] = est
    omega = np.zeros((n_j, 3))  # filtered angular velocity, rad/s
    for i, dt in enumerate(dts, start=1):
        q = quats[i].copy()
        q[(q * est).sum(-1) < 0] *= -1.0  # sign continuity: the hemisphere of the estimate
        prev = Rotation.from_quat(est)
        step = (prev.inv() * Rotation.from_quat(q)).as_rotvec()  # geodesic from the estimate, rad
        omega = omega + _alpha(cfg.d_cutoff, dt) * (step / dt - omega)
        a = _alpha(cfg.min_cutoff + cfg.beta * np.linalg.norm(omega, axis=-1), dt)
        new = (prev * Rotation.from_rotvec(step * a[:, None])).as_quat()
        new[(new * est).sum(-1) < 0] *= -1.0
        est = new
        out[i] = est
    return out


def geometric_median(x: np.ndarray, weights: np.ndarray | None = None, iters: int = 50,
                     eps: float = 1e-9) -> np.ndarray:
    """Weighted geometric median of the rows of ``x`` (T, D) (Weiszfeld's algorithm) -> (D,)."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if weights is None else np.clip(np.asarray(weights, np.float64), 1e-6, None)
    m = np.average(x, axis=0, weights=w)
    for _ in range(iters):
        d = np.linalg.norm(x - m, axis=1)
        if np.any(d < eps):  # the median sits on a sample
            inv = np.where(d < eps, 1.0 / eps, 1.0 / np.maximum(d, eps)) * w
        else:
            inv = w / d
        new = (inv[:, None] * x).sum(0) / inv.sum()
        if np.linalg.norm(new - m) < 1e-10:
            return new
        m = new
    return m


def root_joint_model(smpl_arrays) -> tuple[np.ndarray, np.ndarray]:
    """``J_0(betas) = a + B @ betas``: the SMPL root joint at rest (metres) is linear in the betas.

    Returns a (3,) and B (3, 10) from ``J_regressor[0]``, ``v_template`` and ``shapedirs``.
    """
    jr0 = np.asarray(smpl_arrays["J_regressor"], np.float64)[0]
    a = jr0 @ np.asarray(smpl_arrays["v_template"], np.float64)
    shapedirs = np.asarray(smpl_arrays["shapedirs"], np.float64)[:, :, :10]
    b = np.einsum("v,vcb->cb", jr0, shapedirs)
    return a, b


@dataclass
class SmoothedParams:
    """A track's smoothed SMPL parameters over its T samples (float64).

    Attributes:
        global_orient: (T, 3) axis-angle, camera frame.
        body_pose: (T, 23, 3) axis-angle, parent-relative.
        betas: (T, 10) per sample: the track's fixed shape repeated (raw values with ``--smooth none``).
        transl: (T, 3) metres, for ``betas``.
        rig_betas: (10,) the track's fixed shape (score-weighted geometric median), the rest shape of
            the exported rig (one mesh per track), also with ``--smooth none``.
        rig_transl: (T, 3) metres: ``transl`` for ``rig_betas`` that keeps the root joint where
            (``global_orient``, ``betas``, ``transl``) put it.
    """

    global_orient: np.ndarray
    body_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    rig_betas: np.ndarray
    rig_transl: np.ndarray


def smooth_track(global_orient: np.ndarray, body_pose: np.ndarray, betas: np.ndarray, transl: np.ndarray,
                 times: np.ndarray, scores: np.ndarray, smpl_arrays, cfg: OneEuroConfig | None) -> SmoothedParams:
    """Smooth one track of T samples (see the module docstring); ``cfg=None`` (``--smooth none``) keeps
    the raw values (only the rig's fixed shape and its root-preserving translation are computed).

    Args:
        global_orient (T, 3), body_pose (T, 23, 3), betas (T, 10), transl (T, 3): raw per-frame values.
        times: (T,) seconds. scores: (T,) detection scores (weights of the betas' median).
        smpl_arrays: the body's SMPL arrays (``SMPLBody.arrays``).
    """
    go = np.asarray(global_orient, np.float64)
    bp = np.asarray(body_pose, np.float64)
    be = np.asarray(betas, np.float64)
    tr = np.asarray(transl, np.float64)
    fixed = geometric_median(be, scores)
    a, b = root_joint_model(smpl_arrays)
    root = tr + a + be @ b.T  # (T, 3) root joint position, metres
    j0_fixed = a + b @ fixed
    if cfg is None:
        return SmoothedParams(go.copy(), bp.copy(), be.copy(), tr.copy(), fixed, root - j0_fixed)
    cfg.validate()
    rots = one_euro_rotations(np.concatenate([go[:, None], bp], axis=1), times, cfg)
    transl_s = one_euro_vectors(root, times, cfg) - j0_fixed
    return SmoothedParams(rots[:, 0], rots[:, 1:], np.tile(fixed, (len(go), 1)), transl_s, fixed, transl_s)
