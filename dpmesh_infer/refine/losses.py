"""The terms of the keypoint refinement (SMPLify / SMPLify-X), batched over persons, each per person (B,).

Frames and units: OpenCV camera of the photo (metres), image pixels for keypoints. Pure torch.
"""

from __future__ import annotations

import torch

#: SMPL body-pose entries (joint 1..23 axis-angle flattened to 69) bent by SMPLify's angle prior, and the
#: sign that makes the unnatural direction positive: left elbow +y, right elbow -y (hyper-extension of
#: the elbows), left / right knee -x (knee hyper-extension); SMPLify's indices 55, 58, 12, 15 minus 3.
BENDING_INDICES = (52, 55, 9, 12)
BENDING_SIGNS = (1.0, -1.0, -1.0, -1.0)

#: Radius (m) of the sphere at each SMPL joint (J30 rows 0..23) in the interpenetration proxy; a sphere
#: also sits half-way along each bone with the mean radius of its two joints.
JOINT_RADII_M = (0.12, 0.09, 0.09, 0.12, 0.06, 0.06, 0.12, 0.05, 0.05, 0.12, 0.04, 0.04,
                 0.06, 0.07, 0.07, 0.10, 0.06, 0.06, 0.045, 0.045, 0.035, 0.035, 0.035, 0.035)
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


def geman_mcclure(squared: torch.Tensor, sigma: float) -> torch.Tensor:
    """ρ(r) = σ² r² / (σ² + r²) of squared residuals r² (any shape): quadratic near 0, bounded by σ²."""
    s2 = sigma * sigma
    return s2 * squared / (s2 + squared)


def reprojection(joints_2d: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor, box_side: torch.Tensor,
                 sigma: float) -> torch.Tensor:
    """Robust keypoint term (B,): confidence-weighted mean of ρ over the keypoints, residuals in percent
    of the box side.

    Args:
        joints_2d: (B, J, 2) projected joints, pixels.
        keypoints: (B, J, 2) target keypoints, pixels.
        weights: (B, J) keypoint weights (confidence; 0 = unused).
        box_side: (B,) crop box side, pixels.
    """
    r2 = ((joints_2d - keypoints) * (100.0 / box_side)[:, None, None]).pow(2).sum(-1)
    return (weights * geman_mcclure(r2, sigma)).sum(-1) / weights.sum(-1).clamp_min(1e-9)


def bending(body_pose: torch.Tensor) -> torch.Tensor:
    """SMPLify's elbow/knee prior (B,): Σ exp(sign · θ)² over :data:`BENDING_INDICES` (body_pose (B, 23, 3))."""
    flat = body_pose.reshape(body_pose.shape[0], 69)[:, list(BENDING_INDICES)]
    signs = torch.tensor(BENDING_SIGNS, dtype=flat.dtype, device=flat.device)
    return torch.exp(flat * signs).pow(2).sum(-1)


def rotation_distance(rot: torch.Tensor, rot_ref: torch.Tensor) -> torch.Tensor:
    """(B,) mean over joints of the squared Frobenius distance of (B, K, 3, 3) rotations (0..8 per joint)."""
    return (rot - rot_ref).pow(2).sum((-1, -2)).mean(-1)


def joints_drift(joints_rel: torch.Tensor, joints_rel_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared distance in cm² of the (B, J, 3) root-relative joints (metres) where ``mask`` (B, J)."""
    d2 = (joints_rel - joints_rel_ref).pow(2).sum(-1) * 1e4
    m = mask.to(d2.dtype)
    return (d2 * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def body_spheres(joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere proxy of a body: centres (B, 47, 3) (the 24 SMPL joints of J30 and 23 bone midpoints) and
    radii (47,) metres."""
    j = joints[:, :24]
    parents = list(SMPL_PARENTS[1:])
    mids = 0.5 * (j[:, 1:] + j[:, parents])
    radii = torch.tensor(JOINT_RADII_M, dtype=joints.dtype, device=joints.device)
    mid_r = 0.5 * (radii[1:] + radii[parents])
    return torch.cat([j, mids], dim=1), torch.cat([radii, mid_r])


def interpenetration(joints: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """(B,) summed squared penetration (cm²) of the sphere proxies of each person with its ``pairs``
    partners (a pair's penetration counts for both of its persons).

    Args:
        joints: (B, 30, 3) joints in one camera frame, metres.
        pairs: (P, 2) int64 person indices.
    """
    out = joints.new_zeros(joints.shape[0])
    if pairs.numel() == 0:
        return out
    centres, radii = body_spheres(joints)
    a, b = centres[pairs[:, 0]], centres[pairs[:, 1]]  # (P, S, 3)
    dist = torch.cdist(a, b)  # (P, S, S)
    pen = torch.relu(radii[:, None] + radii[None, :] - dist).pow(2).sum((-1, -2)) * 1e4
    return out.index_add(0, pairs[:, 0], pen).index_add(0, pairs[:, 1], pen)


def depth_order(pelvis_z: torch.Tensor, pelvis_z_ref: torch.Tensor, pairs: torch.Tensor, margin: float) -> torch.Tensor:
    """(B,) hinge² (cm²) keeping the reference depth order of ``pairs`` (P, 2) whose reference pelvis
    depths (B,) differ by more than ``margin`` (m): the gap may shrink to half, never flip."""
    out = pelvis_z.new_zeros(pelvis_z.shape[0])
    if pairs.numel() == 0:
        return out
    ref_gap = pelvis_z_ref[pairs[:, 1]] - pelvis_z_ref[pairs[:, 0]]
    gap = pelvis_z[pairs[:, 1]] - pelvis_z[pairs[:, 0]]
    keep = (ref_gap.abs() > margin).to(gap.dtype)
    hinge = torch.relu(0.5 * ref_gap.abs() - torch.sign(ref_gap) * gap).pow(2) * keep * 1e4
    return out.index_add(0, pairs[:, 0], hinge).index_add(0, pairs[:, 1], hinge)
