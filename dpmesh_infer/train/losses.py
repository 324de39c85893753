"""Training losses: L = w_2d·L2D + w_3d·L3D + w_smpl·LSMPL + w_nkr·LNKR (paper weights 5, 2, 1, 0.1).

Every term is a masked mean of element-wise L1 (as upstream's CoordLoss/ParamLoss), except LNKR.
Units are chosen so that the paper's weights balance: 2D in crop fractions, 3D in metres, SMPL in
radians / shape units.

- L2D = L1(joints_proj / 256, target_j2d / 256) over the 30 joints (valid = visible and inside the crop)
  + L1(joint_img[..., :2], target_j2d[graph joints] / 256) for the 15 regressor joint queries.
- L3D = L1(joints_rel, GT root-relative J30 in metres) + L1(joint_img[..., 2], GT depth / 2 m + 0.5) of
  the graph joints. GT 3D comes from the sample's joints_3d when it has them, else from the GT SMPL
  mesh (J30 of the posed GT body) when the SMPL fit is valid; samples with neither do not contribute.
- LSMPL = L1(θ, θ_GT) over the 72 axis-angle values with upstream's pose mask (ankles, feet, wrists,
  hands off) + L1(β, β_GT), for samples with a valid SMPL fit.
- LNKR = SimCLR(F_S, F_T) + MSE(F_S, F_T) between the student's and the frozen teacher's merged backbone
  feature maps (B, M, 8, 8): the SimCLR term is the symmetric InfoNCE (NT-Xent) between globally
  pooled, L2-normalised features, the positive of each student sample being the teacher's feature of
  the same person and the negatives the other persons of the batch (temperature τ); the MSE is over
  every element of the maps. (The paper names the two terms; the pooling and the symmetric form are
  our choices, documented here.)

Global batch (several processes, gradient accumulation): every masked mean divides by the weight sum
of the *whole* optimiser step (:func:`supervised_weights` gives each process's share of it before the
forward pass; the trainer sums them over micro-batches and processes), the MSE of LNKR by the element
count of the whole step, and the SimCLR term of a micro-batch contrasts the persons of that micro-batch
on *all* processes (``gather``). So a step of W processes x b persons has the loss, and the gradient,
of one process with W·b persons (up to floating-point summation order); only SimCLR's negatives are
limited to one micro-batch (``batch_size / grad_accumulation`` persons).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..geometry.joints import GRAPH_JOINTS

__all__ = ["masked_l1", "nkr_loss", "nkr_terms", "simclr_loss", "supervised_losses", "supervised_weights"]

CROP = 256.0
DEPTH_RANGE_M = 2.0  # joint_img z covers ±1 m around the pelvis


def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
              denominator: torch.Tensor | None = None) -> torch.Tensor:
    """sum(w·|pred − target|) / max(denominator, 1); ``weight`` broadcasts to pred's shape (0/1 or soft);
    ``denominator`` defaults to sum(w) over pred's shape (the mean over this batch) — pass the weight sum
    of the whole global batch to get this batch's share of its mean."""
    w = weight.to(pred.dtype).expand_as(pred)
    denom = w.sum() if denominator is None else denominator.to(pred.dtype)
    return (w * (pred - target).abs()).sum() / denom.clamp_min(1.0)


def simclr_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
                gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between (B, C, H, W) maps pooled to (B, C); 0 for fewer than 2 persons (no
    negatives). ``gather`` maps this process's pooled (B, C) features to those of every process
    (W·B, C), in rank order (the trainer keeps the gradient on this process's rows only)."""
    s = F.normalize(student.float().mean(dim=(2, 3)), dim=1)
    t = F.normalize(teacher.float().mean(dim=(2, 3)), dim=1)
    if gather is not None:
        s, t = gather(s), gather(t)
    if s.shape[0] < 2:
        return student.sum() * 0.0
    logits = s @ t.T / temperature
    labels = torch.arange(s.shape[0], device=s.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def nkr_terms(student: torch.Tensor, teacher: torch.Tensor, temperature: float, *,
              gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
              mse_count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(SimCLR, MSE) of LNKR, with the gradient. ``gather``: see :func:`simclr_loss`; ``mse_count``: the
    element count the squared errors are divided by (default: this batch's, i.e. the mean)."""
    teacher = teacher.detach()
    sim = simclr_loss(student, teacher, temperature, gather)
    sq = (student.float() - teacher.float()).square().sum()
    return sim, sq / (student.numel() if mse_count is None else mse_count)


def nkr_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> tuple[torch.Tensor, dict]:
    """LNKR = SimCLR + MSE (means over this batch); returns (loss, {"nkr_simclr": .., "nkr_mse": ..})."""
    sim, mse = nkr_terms(student, teacher, temperature)
    return sim + mse, {"nkr_simclr": sim.detach(), "nkr_mse": mse.detach()}


def supervised_weights(batch: dict[str, torch.Tensor], smpl_targets: bool = True) -> dict[str, torch.Tensor]:
    """The element weights of the six masked means of :func:`supervised_losses`, each expanded to its
    target's shape ({"l2d_proj": (B, 30, 2), "l2d_joint_img": (B, 15, 2), "l3d_joints": (B, 30, 3),
    "l3d_depth": (B, 15, 1), "lsmpl_pose": (B, 72), "lsmpl_betas": (B, 10)}); their sums are the
    denominators. ``smpl_targets``: samples without 3D joints but with SMPL are supervised through
    their GT mesh joints (as when :func:`supervised_losses` gets ``gt_joints_smpl``)."""
    graph = list(GRAPH_JOINTS)
    j2d = batch["target_j2d"].float()
    valid2d = j2d[..., 2:3]
    has_j3d = batch["has_j3d"].float().view(-1, 1, 1)
    has_smpl = batch["has_smpl"].float().view(-1, 1, 1)
    target3d = batch["target_j3d"].float()
    valid3d = batch["j3d_valid"].float()[..., None] * has_j3d
    if smpl_targets:
        valid3d = valid3d + (1.0 - has_j3d) * has_smpl
    pose_w = batch["pose_valid"].float().repeat_interleave(3, dim=1) * has_smpl.view(-1, 1)
    return {"l2d_proj": valid2d.expand_as(j2d[..., :2]),
            "l2d_joint_img": valid2d[:, graph].expand(-1, -1, 2),
            "l3d_joints": valid3d.expand_as(target3d),
            "l3d_depth": valid3d[:, graph],
            "lsmpl_pose": pose_w.expand_as(batch["smpl_pose"]),
            "lsmpl_betas": has_smpl.view(-1, 1).expand_as(batch["smpl_betas"])}


def supervised_losses(out, batch: dict[str, torch.Tensor], gt_joints_smpl: torch.Tensor | None,
                      denominators: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The three supervised terms and their parts for one batch.

    Args:
        out: :class:`~dpmesh_infer.train.model.TrainOutputs`.
        batch: the collated samples (keys of :func:`dpmesh_infer.train.samples.make_training_sample`).
        gt_joints_smpl: (B, 30, 3) root-relative J30 of the GT SMPL bodies (metres), or None.
        denominators: part name -> the weight sum to divide by (default: this batch's, i.e. means
            over this batch); the global batch's sums of :func:`supervised_weights` give shares.

    Returns:
        {"l2d", "l3d", "lsmpl"} plus the parts {"l2d_proj", "l2d_joint_img", "l3d_joints", "l3d_depth",
        "lsmpl_pose", "lsmpl_betas"} (scalars).
    """
    graph = list(GRAPH_JOINTS)
    w = supervised_weights(batch, smpl_targets=gt_joints_smpl is not None)
    d = denominators or {}
    j2d = batch["target_j2d"].float()
    l2d_proj = masked_l1(out.joints_proj / CROP, j2d[..., :2] / CROP, w["l2d_proj"], d.get("l2d_proj"))
    l2d_ji = masked_l1(out.joint_img[..., :2], j2d[:, graph, :2] / CROP, w["l2d_joint_img"], d.get("l2d_joint_img"))

    has_j3d = batch["has_j3d"].float().view(-1, 1, 1)
    has_smpl = batch["has_smpl"].float().view(-1, 1, 1)
    target3d = batch["target_j3d"].float()
    if gt_joints_smpl is not None:
        target3d = has_j3d * target3d + (1.0 - has_j3d) * has_smpl * gt_joints_smpl
    l3d_joints = masked_l1(out.joints_rel, target3d, w["l3d_joints"], d.get("l3d_joints"))
    depth_target = target3d[:, graph, 2:3] / DEPTH_RANGE_M + 0.5
    l3d_depth = masked_l1(out.joint_img[..., 2:3], depth_target, w["l3d_depth"], d.get("l3d_depth"))

    theta = torch.cat([out.global_orient, out.body_pose.reshape(-1, 69)], dim=1)
    lsmpl_pose = masked_l1(theta, batch["smpl_pose"].float(), w["lsmpl_pose"], d.get("lsmpl_pose"))
    lsmpl_betas = masked_l1(out.betas, batch["smpl_betas"].float(), w["lsmpl_betas"], d.get("lsmpl_betas"))
    return {"l2d": l2d_proj + l2d_ji, "l3d": l3d_joints + l3d_depth, "lsmpl": lsmpl_pose + lsmpl_betas,
            "l2d_proj": l2d_proj, "l2d_joint_img": l2d_ji, "l3d_joints": l3d_joints, "l3d_depth": l3d_depth,
            "lsmpl_pose": lsmpl_pose, "lsmpl_betas": lsmpl_betas}
