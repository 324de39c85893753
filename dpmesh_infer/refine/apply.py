"""Refinement of one network batch of the :class:`~dpmesh_infer.pipeline.Pipeline` (its ``refine`` hook).

:func:`refine_chunk` takes the device tensors of ``Pipeline._forward_device`` for a batch of persons,
fits them with :func:`~dpmesh_infer.refine.fit.fit_bodies` on the pipeline's device, and returns the
same dict with the refined body plus one :class:`~dpmesh_infer.outputs.Refinement` per person holding
the network's body and the reprojection errors before and after.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..outputs import BodyFit, Refinement
from .config import RefineConfig
from .fit import FitInputs, FitResult, fit_bodies

logger = logging.getLogger(__name__)

#: Body fields ``refine_chunk`` replaces in the pipeline's batch dict.
BODY_KEYS = ("vertices", "joints", "global_orient", "body_pose", "betas", "transl", "joints_2d")


def overlapping_pairs(image_index: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """(P, 2) int64 index pairs (i < j) of persons of the same image whose boxes (B, 4) overlap."""
    b = np.asarray(boxes_xyxy, np.float64)
    same = np.asarray(image_index)[:, None] == np.asarray(image_index)[None, :]
    ix = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    iy = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    hit = same & (ix > 0) & (iy > 0)
    i, j = np.nonzero(np.triu(hit, k=1))
    return np.stack([i, j], axis=1).astype(np.int64)


def fit_inputs(out: dict, persons: list, *, focal: torch.Tensor, principal: torch.Tensor,
               use_latent: bool) -> FitInputs:
    """:class:`FitInputs` from a batch dict of ``Pipeline.forward_persons`` and its PersonInputs."""
    dev = out["transl"].device

    def t(v):
        return v.detach().to(device=dev, dtype=torch.float32).clone()  # normal tensors (not inference-mode)

    box = np.stack([np.asarray(p.box, np.float64) for p in persons])  # (cx, cy, side)
    xyxy = np.concatenate([box[:, :2] - box[:, 2:] / 2, box[:, :2] + box[:, 2:] / 2], axis=1)
    pairs = overlapping_pairs(np.array([p.image_index for p in persons]), xyxy)
    keypoints = torch.from_numpy(np.stack([np.asarray(p.keypoints_2d, np.float32) for p in persons]))
    return FitInputs(
        global_orient=t(out["global_orient"]), body_pose=t(out["body_pose"]), betas=t(out["betas"]),
        transl=t(out["transl"]), pose_latent=t(out["pose_head"]) if use_latent else None,
        keypoints=keypoints.to(dev), focal=t(focal), principal=t(principal),
        box_side=torch.from_numpy(box[:, 2].astype(np.float32)).to(dev),
        pairs=torch.from_numpy(pairs).to(dev),
    )


def refine_chunk(cfg: RefineConfig, pipe, out: dict, persons: list, *, focal: torch.Tensor,
                 principal: torch.Tensor) -> tuple[dict, list[Refinement]]:
    """Refine the persons of one ``forward_persons`` batch (see the module docstring).

    Persons with fewer than ``cfg.min_keypoints`` confident keypoints keep the network's body exactly
    (status "skipped"). Returns the updated dict (a copy; the other entries unchanged) and the
    Refinement of each person, in batch order.
    """
    use_latent = pipe.config.pose_decoder == "vposer" and out.get("pose_head") is not None
    inputs = fit_inputs(out, persons, focal=focal, principal=principal, use_latent=use_latent)
    fit = fit_bodies(pipe.body, pipe.pose_decoder if use_latent else None, inputs, cfg)
    new = dict(out)
    keep = fit.refined.to(out["vertices"].device)
    for k in BODY_KEYS:
        refined = getattr(fit, k).to(out[k].dtype)
        new[k] = torch.where(keep.view(-1, *([1] * (refined.ndim - 1))), refined, out[k])
    infos = [_refinement(out, fit, j, cfg) for j in range(len(persons))]
    n = int(keep.sum())
    if n:
        logger.info("refined %d of %d persons: mean reprojection error %.2f px -> %.2f px", n, len(persons),
                    float(fit.error_before_px[keep].nanmean()), float(fit.error_after_px[keep].nanmean()))
    return new, infos


def _refinement(out: dict, fit: FitResult, j: int, cfg: RefineConfig) -> Refinement:
    def a(name):
        return out[name][j].detach().float().cpu().numpy()

    def px(v):
        v = float(v[j])
        return None if np.isnan(v) else v

    unrefined = BodyFit(**{k: a(k) for k in BODY_KEYS})
    used = int(fit.keypoints_used[j])
    before = px(fit.error_before_px)
    if not bool(fit.refined[j]):
        return Refinement(status="skipped", iterations=0, stopped_early=False, keypoints_used=used,
                          error_before_px=before, error_after_px=before, unrefined=unrefined,
                          reason=f"{used} keypoints with confidence >= {cfg.min_confidence} "
                                 f"(at least {cfg.min_keypoints} needed)")
    return Refinement(status="refined", iterations=int(fit.iterations[j]), stopped_early=bool(fit.stopped_early[j]),
                      keypoints_used=used, error_before_px=before, error_after_px=px(fit.error_after_px),
                      unrefined=unrefined)
