"""The one composed DPMesh network (:class:`DPMesh`), its output (:class:`DPMeshOutput`) and the
configuration a weights directory stores for it (:class:`PipelineConfig`, ``pipeline.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..config import ConfigBase
from ..devices import autocast_off
from ..errors import ConfigError
from ..geometry.camera import camera_translation, default_focal, project
from ..geometry.crops import PreprocessConfig, make_heatmaps
from ..geometry.joints import GRAPH_JOINTS, J30_NAMES
from ..geometry.rotations import rot6d_to_axis_angle
from .body import ROOT_JOINT

FORMAT_VERSION = 1


@dataclass(frozen=True)
class PipelineConfig(ConfigBase):
    """What a weights directory holds and how the pipeline runs it.

    Attributes:
        format_version: version of this on-disk format (currently 1).
        pose_decoder: "vposer" (official release checkpoints) or "vqvae" (the paper's prior); must
            match ``pose_decoder/config.json``. The pipeline never guesses.
        preprocess: crop/heatmap parameters (release values by default).
        focal_per_image: use each person's own image for the focal length sqrt(W^2 + H^2). The release
            used the first sample of a batch for the whole batch; with same-size images (as in its
            evaluation) both agree.
        source: free-form provenance (e.g. the converted checkpoint's file name).
        untrained: true for randomly initialised weights (selftest, tests); results are meaningless.
    """

    format_version: int = FORMAT_VERSION
    pose_decoder: Literal["vposer", "vqvae"] = "vposer"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    focal_per_image: bool = True
    source: str = ""
    untrained: bool = False

    def __post_init__(self):
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(
                f"pipeline.json format_version {self.format_version} is not supported by this version "
                f"(expects {FORMAT_VERSION}); re-convert the weights with this version of dpmesh"
            )


@dataclass
class DPMeshOutput:
    """One forward of :class:`DPMesh` over B persons. Float32 except ``features`` (network dtype).

    Attributes:
        features: (B, M, 8, 8) merged backbone features (M = 2048 full size; the NKR target).
        joint_img: (B, 15, 3) regressor graph joints in [0, 1]: x, y over the crop, z = root-relative
            depth / 2 m + 0.5.
        global_orient: (B, 3) root rotation, axis-angle (radians), crop camera.
        body_pose: (B, 23, 3) SMPL joints 1..23, axis-angle (radians), parent-relative.
        betas: (B, 10) SMPL shape.
        cam: (B, 3) raw camera head output (t_x, t_y, c).
        transl: (B, 3) crop-camera translation T = (t_x, t_y, 2.5·f/256·sigmoid(c)), metres.
        vertices: (B, 6890, 3) posed mesh in the crop camera (T included), metres.
        joints: (B, 30, 3) J30 regressed from ``vertices``, metres.
        joints_proj: (B, 30, 2) ``joints`` projected into the crop with the model focal (principal point
            at the crop centre, upstream's depth epsilon 1e-4), crop pixels.
        pose_head: the regressor's raw pose output in float32 that the pose decoder turned into
            ``body_pose``: the VPoser latent (B, 32), or the VQ logits (B, T, K) (keypoint refinement
            starts from it).
    """

    features: torch.Tensor
    joint_img: torch.Tensor
    global_orient: torch.Tensor
    body_pose: torch.Tensor
    betas: torch.Tensor
    cam: torch.Tensor
    transl: torch.Tensor
    vertices: torch.Tensor
    joints: torch.Tensor
    joints_proj: torch.Tensor
    pose_head: torch.Tensor | None = None

    @property
    def root(self) -> torch.Tensor:
        """(B, 3) root joint (pelvis, J30 row 0) in the crop camera, metres."""
        return self.joints[:, ROOT_JOINT]

    @property
    def joints_rel(self) -> torch.Tensor:
        """(B, 30, 3) joints relative to the root, metres."""
        return self.joints - self.joints[:, ROOT_JOINT:ROOT_JOINT + 1]


class DPMesh(nn.Module):
    """The composed network: heatmaps -> diffusion backbone -> regressor -> rot6d / pose decoder ->
    crop camera -> SMPL (ARCHITECTURE §3-§7).

    ``forward(images, joints32, mask, model_focal) -> DPMeshOutput``. The backbone and the regressor
    run in whatever autocast context the caller opens (fp16 on CUDA); the 6D conversion, the pose
    decoder, the camera and SMPL always run in float32 with autocast off. ``pose_decoder`` and ``body``
    are frozen and always in eval mode. :class:`~dpmesh_infer.pipeline.Pipeline` wraps it with I/O,
    batching and the photo camera; the trainer adds the choice of trainable parameters and the export.

    Raises:
        ConfigError: the components do not fit together (pose head vs decoder, feature channels,
            joint count, crop / heatmap / feature sizes), naming both sides.
    """

    def __init__(self, *, backbone, regressor, pose_decoder, body, preprocess: PreprocessConfig | None = None,
                 focal_per_image: bool = True) -> None:
        super().__init__()
        self.preprocess = preprocess or PreprocessConfig()
        self.focal_per_image = focal_per_image
        _check_components(backbone, regressor, pose_decoder, self.preprocess)
        self.backbone, self.regressor, self.pose_decoder, self.body = backbone, regressor, pose_decoder, body
        self.pose_decoder.requires_grad_(False)

    @classmethod
    def from_config(cls, config: PipelineConfig, *, backbone, regressor, pose_decoder, body) -> "DPMesh":
        """The network of a weights directory's ``pipeline.json`` (its decoder type must match)."""
        if pose_decoder.config.type != config.pose_decoder:
            raise ConfigError(f"pipeline.json names pose decoder {config.pose_decoder!r} but the pose decoder is "
                              f"a {pose_decoder.config.type!r} decoder")
        return cls(backbone=backbone, regressor=regressor, pose_decoder=pose_decoder, body=body,
                   preprocess=config.preprocess, focal_per_image=config.focal_per_image)

    def train(self, mode: bool = True) -> "DPMesh":
        super().train(mode)
        self.pose_decoder.eval()
        self.body.eval()
        return self

    def model_focal(self, image_size: torch.Tensor) -> torch.Tensor:
        """(B,) focal f = sqrt(W² + H²) the network's camera uses, from (B, 2) image sizes (W, H) px.

        With ``focal_per_image`` false every person gets the batch's first value (the release's rule).
        """
        sizes = image_size.to(torch.float32)
        f = default_focal(sizes[:, 0], sizes[:, 1])
        return f if self.focal_per_image else f[:1].expand_as(f)

    def forward(self, images: torch.Tensor, joints32: torch.Tensor, mask: torch.Tensor,
                model_focal: torch.Tensor) -> DPMeshOutput:
        """Run the network on B person crops.

        Args:
            images: (B, 3, S, S) RGB crops in [0, 1], S = ``preprocess.input_size`` (256).
            joints32: (B, 30, 2) all 30 joints on the heatmap grid (crop px / 8), unmasked.
            mask: (B, 30) bool, joints that get a heatmap (confident and inside the grid).
            model_focal: (B,) focal of the network's camera in pixels (:meth:`model_focal`).
        """
        cfg = self.preprocess
        heatmaps = make_heatmaps(joints32, mask, size=cfg.heatmap_size, sigma=cfg.heatmap_sigma)
        features = self.backbone(images, joints32, heatmaps)
        reg = self.regressor(features)
        with autocast_off(features):
            focal = model_focal.to(device=features.device, dtype=torch.float32)
            global_orient = rot6d_to_axis_angle(reg.root_pose_6d.float())
            pose_head = reg.pose.float()
            body_pose = self.pose_decoder(pose_head)
            betas = reg.betas.float()
            cam = reg.cam.float()
            transl = camera_translation(cam, focal, input_size=cfg.input_size)
            body = self.body(global_orient, body_pose, betas, transl)
            centre = torch.full((body.joints.shape[0], 2), cfg.input_size / 2.0, device=body.joints.device)
            proj = project(body.joints, focal, centre)
        return DPMeshOutput(features=features, joint_img=reg.joint_img.float(), global_orient=global_orient,
                            body_pose=body_pose, betas=betas, cam=cam, transl=transl, vertices=body.vertices,
                            joints=body.joints, joints_proj=proj, pose_head=pose_head)


def _check_components(backbone, regressor, pose_decoder, preprocess: PreprocessConfig) -> None:
    """Cross-component consistency of a DPMesh network (each mismatch names both sides)."""
    problems = []
    if regressor.config.pose_head != pose_decoder.config.type:
        problems.append(f"the regressor predicts for {regressor.config.pose_head!r} but the pose decoder is "
                        f"{pose_decoder.config.type!r}")
    if regressor.config.in_channels != backbone.config.merge_channels:
        problems.append(f"regressor in_channels {regressor.config.in_channels} != backbone merge_channels "
                        f"{backbone.config.merge_channels}")
    if backbone.config.num_joints != len(J30_NAMES):
        problems.append(f"backbone num_joints {backbone.config.num_joints} != the {len(J30_NAMES)}-joint input set")
    if regressor.config.num_joints != len(GRAPH_JOINTS):
        problems.append(f"regressor num_joints {regressor.config.num_joints} != the {len(GRAPH_JOINTS)} graph joints")
    factor = backbone.latent_factor
    if preprocess.heatmap_size * factor != preprocess.input_size:
        problems.append(f"preprocess heatmap_size {preprocess.heatmap_size} must be input_size "
                        f"{preprocess.input_size} / {factor} (the VAE latent, which the heatmaps join)")
    if regressor.config.feat_size * backbone.feature_stride != preprocess.heatmap_size:
        problems.append(f"regressor feat_size {regressor.config.feat_size} != the merged map side "
                        f"{preprocess.heatmap_size // backbone.feature_stride} (latent {preprocess.heatmap_size} / "
                        f"{backbone.feature_stride})")
    if pose_decoder.config.type == "vposer" and regressor.config.pose_latent_dim != pose_decoder.config.latent_dim:
        problems.append(f"regressor pose_latent_dim {regressor.config.pose_latent_dim} != VPoser latent_dim "
                        f"{pose_decoder.config.latent_dim}")
    if pose_decoder.config.type == "vqvae" and (regressor.config.vq_tokens, regressor.config.vq_classes) != (
            pose_decoder.config.num_tokens, pose_decoder.config.codebook_size):
        problems.append(f"regressor VQ tokens/classes {regressor.config.vq_tokens}/{regressor.config.vq_classes} != "
                        f"decoder {pose_decoder.config.num_tokens}/{pose_decoder.config.codebook_size}")
    if problems:
        raise ConfigError("the DPMesh components do not fit together: " + "; ".join(problems))
