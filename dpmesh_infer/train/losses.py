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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry.joints import GRAPH_JOINTS

__all__ = ["masked_l1", "nkr_loss", "simclr_loss", "supervised_losses"]

CROP = 256.0
DEPTH_RANGE_M = 2.0  # joint_img z covers ±1 m around the pelvis


def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sum(w·|pred − target|) / max(sum(w), 1); ``weight`` broadcasts to pred's shape (0/1 or soft)."""
    w = weight.to(pred.dtype).expand_as(pred)
    return (w * (pred - target).abs()).sum() / w.sum().clamp_min(1.0)


def simclr_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between (B, C, H, W) maps pooled to (B, C); 0 for B < 2 (no negatives)."""
    if student.shape[0] < 2:
        return student.sum() * 0.0
    s = F.normalize(student.float().mean(dim=(2, 3)), dim=1)
    t = F.normalize(teacher.float().mean(dim=(2, 3)), dim=1)
    logits = s @ t.T / temperature
    labels = torch.arange(s.shape[0], device=s.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def nkr_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> tuple[torch.Tensor, dict]:
    """LNKR = SimCLR + MSE; returns (loss, {"nkr_simclr": .., "nkr_mse": ..})."""
    teacher = teacher.detach()
    sim = simclr_loss(student, teacher, temperature)
    mse = F.mse_loss(student.float(), teacher.float())
    return sim + mse, {"nkr_simclr": sim.detach(), "nkr_mse": mse.detach()}


def supervised_losses(out, batch: dict[str, torch.Tensor],
                      gt_joints_smpl: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The three supervised terms and their parts for one batch.

    Args:
        out: :class:`~dpmesh_infer.train.model.TrainOutputs`.
        batch: the collated samples (keys of :func:`dpmesh_infer.train.samples.make_training_sample`).
        gt_joints_smpl: (B, 30, 3) root-relative J30 of the GT SMPL bodies (metres), or None.

    Returns:
        {"l2d", "l3d", "lsmpl"} plus the parts {"l2d_proj", "l2d_joint_img", "l3d_joints", "l3d_depth",
        "lsmpl_pose", "lsmpl_betas"} (scalars).
    """
    graph = list(GRAPH_JOINTS)
    j2d = batch["target_j2d"].float()
    valid2d = j2d[..., 2:3]
    l2d_proj = masked_l1(out.joints_proj / CROP, j2d[..., :2] / CROP, valid2d)
    l2d_ji = masked_l1(out.joint_img[..., :2], j2d[:, graph, :2] / CROP, valid2d[:, graph])

    has_j3d = batch["has_j3d"].float().view(-1, 1, 1)
    has_smpl = batch["has_smpl"].float().view(-1, 1, 1)
    target3d = batch["target_j3d"].float()
    valid3d = batch["j3d_valid"].float()[..., None] * has_j3d
    if gt_joints_smpl is not None:
        use_smpl = (1.0 - has_j3d) * has_smpl
        target3d = has_j3d * target3d + use_smpl * gt_joints_smpl
        valid3d = valid3d + use_smpl
    l3d_joints = masked_l1(out.joints_rel, target3d, valid3d)
    depth_target = target3d[:, graph, 2:3] / DEPTH_RANGE_M + 0.5
    l3d_depth = masked_l1(out.joint_img[..., 2:3], depth_target, valid3d[:, graph])

    theta = torch.cat([out.global_orient, out.body_pose.reshape(-1, 69)], dim=1)
    pose_w = batch["pose_valid"].float().repeat_interleave(3, dim=1) * has_smpl.view(-1, 1)
    lsmpl_pose = masked_l1(theta, batch["smpl_pose"].float(), pose_w)
    lsmpl_betas = masked_l1(out.betas, batch["smpl_betas"].float(), has_smpl.view(-1, 1))
    return {"l2d": l2d_proj + l2d_ji, "l3d": l3d_joints + l3d_depth, "lsmpl": lsmpl_pose + lsmpl_betas,
            "l2d_proj": l2d_proj, "l2d_joint_img": l2d_ji, "l3d_joints": l3d_joints, "l3d_depth": l3d_depth,
            "lsmpl_pose": lsmpl_pose, "lsmpl_betas": lsmpl_betas}
