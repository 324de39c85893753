"""The batched, deterministic optimiser of the keypoint refinement (:func:`fit_bodies`).

All persons of a batch are optimised together on one device by one Adam optimiser. Adam's update is
element-wise, so a person's result does not depend on the others in the batch except through the
pair terms (interpenetration, depth order). Each person keeps the parameters of its lowest loss and
stops on its own when that has not improved by ``early_stop_tol`` (relative) for ``patience`` steps
(frozen from then on). At most ``iterations`` steps, no randomness: the same inputs give the same result.

Parameters (per person): the VPoser latent z (pose decoder "vposer") or the 23 body-joint axis-angles
(the VQ head: its logits are not a smooth space to optimise), the global orientation (axis-angle),
betas, and the translation, as a multiplicative offset of the network's pelvis depth
(``transl = transl_net + δ · z_net``) so near and far people move alike in the image.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ..devices import autocast_off
from ..geometry.camera import project
from ..geometry.rotations import axis_angle_to_matrix
from . import losses
from .config import RefineConfig

#: Learning-rate multiples of ``RefineConfig.lr`` per parameter (radians for rotations; units of the
#: latent / betas; the translation offset δ is a fraction of the pelvis depth).
LR_SCALE = {"latent": 5.0, "body_pose": 1.0, "global_orient": 1.0, "betas": 5.0, "transl": 0.5}


@dataclass
class FitInputs:
    """Start and targets of one refinement batch (torch, one device, B persons, float32).

    Attributes:
        global_orient: (B, 3) axis-angle, photo camera frame.
        body_pose: (B, 23, 3) axis-angle (the network's; decoded from ``pose_latent`` with VPoser).
        betas: (B, 10).
        transl: (B, 3) metres: ``SMPL(global_orient, body_pose, betas, transl)`` is the network's body.
        pose_latent: (B, D) VPoser latent, or None to optimise ``body_pose`` directly.
        keypoints: (B, 30, 3) [x, y, confidence] image pixels (30-joint set).
        focal: (B,) pixels; principal: (B, 2) pixels (the photo's K of each person).
        box_side: (B,) crop box side in pixels (residual normalisation).
        pairs: (P, 2) int64 persons of the same image whose boxes overlap (pair terms), may be empty.
    """

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    pose_latent: torch.Tensor | None
    keypoints: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor
    box_side: torch.Tensor
    pairs: torch.Tensor


@dataclass
class FitResult:
    """Refined bodies (B persons, float32, detached, on the inputs' device).

    Attributes:
        global_orient (B, 3), body_pose (B, 23, 3), betas (B, 10), transl (B, 3): SMPL parameters.
        pose_latent: (B, D) fitted VPoser latent or None.
        vertices: (B, 6890, 3), joints: (B, 30, 3) metres; joints_2d: (B, 30, 2) pixels (through K).
        refined: (B,) bool, persons that had enough confident keypoints (the others are unchanged).
        keypoints_used: (B,) int64 confident keypoints per person.
        iterations: (B,) int64 optimiser steps applied per person.
        stopped_early: (B,) bool.
        error_before_px / error_after_px: (B,) mean pixel distance of the confident keypoints to the
            projected joints, before and after (NaN without keypoints).
        loss_before / loss_after: (B,) total loss of each person at the start and at the end.
    """

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    pose_latent: torch.Tensor | None
    vertices: torch.Tensor
    joints: torch.Tensor
    joints_2d: torch.Tensor
    refined: torch.Tensor
    keypoints_used: torch.Tensor
    iterations: torch.Tensor
    stopped_early: torch.Tensor
    error_before_px: torch.Tensor
    error_after_px: torch.Tensor
    loss_before: torch.Tensor
    loss_after: torch.Tensor


def pixel_error(joints_2d: torch.Tensor, keypoints: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """(B,) mean distance in pixels between (B, J, 2) projections and (B, J, 2) keypoints where ``used``."""
    d = (joints_2d - keypoints).norm(dim=-1)
    n = used.sum(-1)
    err = (d * used).sum(-1) / n.clamp_min(1)
    return torch.where(n > 0, err, torch.full_like(err, float("nan")))


class _Problem:
    """The loss of :func:`fit_bodies` as a function of the free parameters (see the module docstring)."""

    def __init__(self, body, decoder, inputs: FitInputs, cfg: RefineConfig) -> None:
        self.body, self.decoder, self.x, self.cfg = body, decoder, inputs, cfg
        conf = inputs.keypoints[..., 2]
        factor = torch.ones_like(conf[0]) if not cfg.keypoint_weights else torch.tensor(
            cfg.keypoint_weights, dtype=conf.dtype, device=conf.device)
        self.used = (conf >= cfg.min_confidence) & (factor > 0)
        self.weights = torch.where(self.used, conf * factor, torch.zeros_like(conf))
        self.depth_ref = inputs.transl[:, 2].abs().clamp_min(0.1)  # scale of the translation offset
        with torch.no_grad():
            ref = self.body(inputs.global_orient, inputs.body_pose, inputs.betas, inputs.transl)
        self.joints_rel_ref = ref.joints - ref.joints[:, :1]
        self.pelvis_z_ref = ref.joints[:, 0, 2]
        self.rot_ref = axis_angle_to_matrix(inputs.body_pose)

    def params(self) -> dict[str, torch.Tensor]:
        x = self.x
        p = {"global_orient": x.global_orient.clone(), "transl": torch.zeros_like(x.transl)}
        if x.pose_latent is not None:
            p["latent"] = x.pose_latent.clone()
        else:
            p["body_pose"] = x.body_pose.clone()
        if self.cfg.optimise_betas:
            p["betas"] = x.betas.clone()
        return {k: v.requires_grad_(True) for k, v in p.items()}

    def body_of(self, p: dict[str, torch.Tensor]):
        x = self.x
        body_pose = self.decoder(p["latent"]) if "latent" in p else p["body_pose"]
        betas = p.get("betas", x.betas)
        transl = x.transl + p["transl"] * self.depth_ref[:, None]
        out = self.body(p["global_orient"], body_pose, betas, transl)
        return body_pose, betas, transl, out

    def losses(self, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """(B,) total loss and the body it was computed for."""
        c, x = self.cfg, self.x
        body_pose, betas, transl, out = self.body_of(p)
        joints_2d = project(out.joints, x.focal, x.principal, eps=0.0)
        total = c.data_weight * losses.reprojection(joints_2d, x.keypoints[..., :2], self.weights, x.box_side,
                                                    c.sigma)
        if "latent" in p and c.latent_weight:
            total = total + c.latent_weight * p["latent"].pow(2).mean(-1)
        if c.shape_weight:
            total = total + c.shape_weight * betas.pow(2).mean(-1)
        if c.bending_weight:
            total = total + c.bending_weight * losses.bending(body_pose)
        if c.prediction_weight:
            total = total + c.prediction_weight * losses.rotation_distance(axis_angle_to_matrix(body_pose),
                                                                           self.rot_ref)
        if c.occluded_weight:
            joints_rel = out.joints - out.joints[:, :1]
            total = total + c.occluded_weight * losses.joints_drift(joints_rel, self.joints_rel_ref, ~self.used)
        if c.interpenetration_weight and x.pairs.numel():
            total = total + c.interpenetration_weight * losses.interpenetration(out.joints, x.pairs)
        if c.depth_order_weight and x.pairs.numel():
            total = total + c.depth_order_weight * losses.depth_order(out.joints[:, 0, 2], self.pelvis_z_ref,
                                                                      x.pairs, c.pair_margin_m)
        body = {"body_pose": body_pose, "betas": betas, "transl": transl, "vertices": out.vertices,
                "joints": out.joints, "joints_2d": joints_2d}
        return total, body


def fit_bodies(body, decoder, inputs: FitInputs, cfg: RefineConfig) -> FitResult:
    """Refine B bodies to their confident keypoints (see :class:`~dpmesh_infer.refine.RefineConfig`).

    Args:
        body: :class:`~dpmesh_infer.models.body.SMPLBody` on the inputs' device.
        decoder: the VPoser decoder when ``inputs.pose_latent`` is given (frozen, eval mode), else None.
        inputs: :class:`FitInputs`.
        cfg: :class:`~dpmesh_infer.refine.RefineConfig`.
    """
    with torch.inference_mode(False), autocast_off(inputs.transl), torch.enable_grad():
        # normal tensors even when called under inference mode (inference tensors cannot be optimised)
        x = FitInputs(**{f.name: None if getattr(inputs, f.name) is None else getattr(inputs, f.name).clone()
                         for f in fields(FitInputs)})
        problem = _Problem(body, decoder, x, cfg)
        n_used = problem.used.sum(-1)
        active = n_used >= cfg.min_keypoints
        p = problem.params()
        if decoder is not None:
            decoder.requires_grad_(False)
        opt = torch.optim.Adam([{"params": [v], "lr": cfg.lr * LR_SCALE[k]} for k, v in p.items()])
        frozen = ~active
        best = {k: v.detach().clone() for k, v in p.items()}
        best_loss = torch.full_like(n_used, float("inf"), dtype=x.transl.dtype)
        stall = torch.zeros_like(n_used)
        iterations = torch.zeros_like(n_used)
        stopped = torch.zeros_like(active)
        loss_before = None
        for _ in range(cfg.iterations + 1):
            loss, _ = problem.losses(p)
            current = loss.detach()
            if loss_before is None:
                loss_before = current.clone()
            better = (current < best_loss) & ~frozen
            significant = current < best_loss - cfg.early_stop_tol * best_loss.abs()
            stall = torch.where(significant, torch.zeros_like(stall), stall + 1)
            for k, v in p.items():
                best[k][better] = v.detach()[better]
            best_loss = torch.where(better, current, best_loss)
            newly = (stall >= cfg.patience) & ~frozen
            stopped |= newly
            frozen |= newly
            if bool(frozen.all()) or int(iterations.max()) >= cfg.iterations:
                break
            opt.zero_grad(set_to_none=True)
            (loss * (~frozen).to(loss.dtype)).sum().backward()
            opt.step()
            with torch.no_grad():
                for k, v in p.items():  # frozen persons stay at their best
                    v[frozen] = best[k][frozen]
            iterations += (~frozen).to(iterations.dtype)
        with torch.no_grad():
            for k, v in p.items():  # every person ends at its best (inactive ones: at the start)
                v.copy_(best[k])
            loss_after, fitted = problem.losses(p)
            before = project(problem.body(x.global_orient, x.body_pose, x.betas, x.transl).joints, x.focal,
                             x.principal, eps=0.0)
    kp = x.keypoints[..., :2]
    return FitResult(
        global_orient=p["global_orient"].detach(), body_pose=fitted["body_pose"].detach(),
        betas=fitted["betas"].detach(), transl=fitted["transl"].detach(),
        pose_latent=p["latent"].detach() if "latent" in p else None, vertices=fitted["vertices"].detach(),
        joints=fitted["joints"].detach(), joints_2d=fitted["joints_2d"].detach(), refined=active,
        keypoints_used=n_used, iterations=iterations, stopped_early=stopped & active,
        error_before_px=pixel_error(before, kp, problem.used),
        error_after_px=pixel_error(fitted["joints_2d"].detach(), kp, problem.used),
        loss_before=loss_before, loss_after=loss_after.detach(),
    )
