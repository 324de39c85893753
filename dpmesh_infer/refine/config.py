"""The settings of the keypoint refinement (:class:`RefineConfig`, a strict JSON config)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigBase
from ..errors import ConfigError


@dataclass(frozen=True)
class RefineConfig(ConfigBase):
    """SMPLify-X style refinement of the network's bodies to their confident 2D keypoints.

    Pass it as ``Pipeline(..., refine=RefineConfig())`` or ``pipe(..., refine=RefineConfig())`` (the
    pipeline calls :meth:`refine_chunk` on every network batch), ``dpmesh predict --refine`` or
    ``--refine-config FILE.json``. The loss per person (:mod:`dpmesh_infer.refine.losses` for each term):

        data_weight · Σ_j w_j ρ(|π(J_j) − x_j| / S · 100) / Σ_j w_j         (ρ = Geman–McClure, scale sigma)
      + latent_weight · mean(z²)                                           (VPoser only)
      + shape_weight · mean(β²)
      + bending_weight · Σ exp(±θ)² over the elbow and knee flexion axes    (SMPLify's angle prior)
      + prediction_weight · mean_k |R_k(θ) − R_k(θ_net)|²_F                (stay near the network's pose)
      + occluded_weight · mean over joints without a confident keypoint of |ΔJ_rel|² (cm²)
      + interpenetration_weight · Σ penetration² (cm²) of body spheres of people whose boxes overlap
      + depth_order_weight · hinge² (cm²) keeping the network's depth order of overlapping people

    with w_j the keypoint confidence (only keypoints with confidence >= ``min_confidence``), S the
    side of the person's crop box in pixels (residuals in percent of the box, so near and far people
    weigh alike) and J_rel the joints relative to the pelvis.

    Attributes:
        iterations: Adam steps at most (per person; a person stops early when its loss improved by less
            than ``early_stop_tol`` (relative) for ``patience`` steps; it ends at its lowest loss).
        lr: Adam learning rate (radians for rotations; the latent, betas and the translation, which is
            optimised relative to the network's depth, use fixed multiples of it).
        min_confidence: keypoints with at least this confidence are fitted.
        min_keypoints: persons with fewer confident keypoints are left as the network predicted them.
        sigma: Geman–McClure scale in percent of the box side (residuals far beyond it stop pulling).
        optimise_betas: also fit the shape (else betas stay the network's).
        interpenetration_weight / depth_order_weight: 0 turns the term off. They couple people of the
            same image whose crop boxes overlap, within one network batch.
        pair_margin_m: depth-order hinge: an overlapping pair whose network pelvis depths differ by more
            than this keeps its order with at least half that gap.
        keypoint_weights: () for all 1, or 30 factors (30-joint set) multiplying the confidences in the
            reprojection term, e.g. lower on the hips (COCO hip keypoints sit lower and wider than SMPL's
            hip joints; SMPLify-X down-weights them) or 0 for joints never to fit.
    """

    iterations: int = 100
    lr: float = 0.01
    min_confidence: float = 0.3
    min_keypoints: int = 4
    sigma: float = 10.0
    data_weight: float = 1.0
    latent_weight: float = 0.02
    shape_weight: float = 0.02
    bending_weight: float = 0.01
    prediction_weight: float = 0.1
    occluded_weight: float = 0.1
    interpenetration_weight: float = 0.01
    depth_order_weight: float = 0.1
    pair_margin_m: float = 0.1
    optimise_betas: bool = True
    keypoint_weights: tuple[float, ...] = ()
    early_stop_tol: float = 1e-3
    patience: int = 10

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.min_keypoints < 1 or self.patience < 1:
            raise ConfigError("RefineConfig: iterations must be >= 0, min_keypoints and patience >= 1")
        if self.lr <= 0 or self.sigma <= 0:
            raise ConfigError("RefineConfig: lr and sigma must be > 0")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"RefineConfig: min_confidence must be in [0, 1], got {self.min_confidence}")
        weights = ("data_weight", "latent_weight", "shape_weight", "bending_weight", "prediction_weight",
                   "occluded_weight", "interpenetration_weight", "depth_order_weight", "pair_margin_m",
                   "early_stop_tol")
        bad = [w for w in weights if getattr(self, w) < 0]
        if bad:
            raise ConfigError(f"RefineConfig: {bad} must be >= 0")
        if len(self.keypoint_weights) not in (0, 30) or any(w < 0 for w in self.keypoint_weights):
            raise ConfigError("RefineConfig: keypoint_weights must be empty or 30 numbers >= 0 (the 30-joint set)")

    def refine_chunk(self, pipe, out: dict, persons: list, *, focal, principal):
        """Refine one network batch of :class:`~dpmesh_infer.pipeline.Pipeline` (its hook; see
        :func:`dpmesh_infer.refine.apply.refine_chunk`). Returns (refined ``out``, Refinement per person)."""
        from .apply import refine_chunk

        return refine_chunk(self, pipe, out, persons, focal=focal, principal=principal)
