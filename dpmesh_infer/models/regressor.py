"""JOTR-style transformer regressor: backbone features (B, 2048, 8, 8) → SMPL parameters.

This is upstream DPMesh's ``common/model.py:Model`` minus the backbone, the pose decoder and SMPL
(see ``docs/CONTRACTS.md`` and ``upstream-dpmesh.md`` §3). State-dict keys are exactly the official
checkpoint's with ``module.`` removed (``down_linear``, ``conv2d_to_3d``, ``conv_3d_coord.0``,
``exponent``, ``spose_shape_cam_param``, ``query.weight``, ``pos_embed_1d.pos_table``,
``transformer.*``, ``refine_3d.*``, ``cascade_{root_pose,pose,shaoe,cam}_out.*``; the typo "shaoe" is
upstream's).

Computation (all batched):

1. 3D branch: ``conv2d_to_3d`` (1×1, in_channels → d_model·depth_bins) viewed as (B, C, D, H, W) with
   channel index c·D + d; cat depth anchors [Z, Y, X] (r = arange/n, Z = r^clamp(exponent, 1, 20));
   ``conv_3d_coord.0`` (1×1×1, C+3 → C); flatten in (d h w) order; ``refine_3d`` (post-norm encoder,
   ff ``refine_feedforward``, final LayerNorm) with the 1D sinusoid ``pos_embed_1d.pos_table``.
2. 2D branch: ``down_linear`` (1×1, in_channels → C) → H·W tokens with the degenerate sine encoding.
3. :class:`~dpmesh_infer.models.transformer.Transformer` with P parameter queries + J joint queries
   (query_pos = cat(``spose_shape_cam_param``, ``query.weight``)).
4. Cascade heads over the L decoder layers: out₀ = fc₀(h₀), outᵢ = outᵢ₋₁ + fcᵢ([hᵢ, outᵢ₋₁]).

Token layout: token 0 feeds the root head (and the pose head for VPoser), tokens 1..P−3 are the VQ
pose tokens (``pose_head="vqvae"`` only), token P−2 is shape, token P−1 is camera.

Precision: runs under fp16/bf16 autocast. The joint-position recurrence (sigmoid / inverse sigmoid
with eps 1e-5), the depth warp z^exponent and ``grid_sample`` are always computed in float32.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..config import ConfigBase
from ..errors import ConfigError
from .io import load_component, save_component
from .transformer import Transformer, TransformerEncoder, sine_position_encoding_2d, sinusoid_table

__all__ = ["RegressorConfig", "RegressorOutput", "Regressor", "load_regressor", "save_regressor"]


@dataclasses.dataclass(frozen=True)
class RegressorConfig(ConfigBase):
    """Architecture of the regressor. Defaults are the released DPMesh model (VPoser head).

    ``conv2d_to_3d`` maps ``in_channels`` → ``d_model · depth_bins`` (2048 → 256·8 upstream, equal only
    by coincidence), so ``in_channels`` is free. The refine encoder's position table has
    ``depth_bins · feat_size²`` rows (512 upstream), so the input map must be feat_size × feat_size.
    """

    in_channels: int = 2048
    d_model: int = 256
    nhead: int = 8
    enc_layers: int = 2
    dec_layers: int = 4
    dim_feedforward: int = 2048
    refine_layers: int = 2
    refine_feedforward: int = 1024
    num_joints: int = 15
    depth_bins: int = 8
    feat_size: int = 8
    dropout: float = 0.1
    pose_head: Literal["vposer", "vqvae"] = "vposer"
    pose_latent_dim: int = 32
    vq_tokens: int = 48
    vq_classes: int = 2048
    num_betas: int = 10

    def __post_init__(self) -> None:
        positive = ["in_channels", "d_model", "nhead", "enc_layers", "dec_layers", "dim_feedforward",
                    "refine_layers", "refine_feedforward", "num_joints", "depth_bins", "feat_size",
                    "pose_latent_dim", "vq_tokens", "vq_classes", "num_betas"]
        bad = [n for n in positive if not isinstance(getattr(self, n), int) or getattr(self, n) < 1]
        if bad:
            raise ConfigError(f"RegressorConfig: {bad} must be positive integers")
        if self.d_model % self.nhead:
            raise ConfigError(f"RegressorConfig: d_model {self.d_model} is not divisible by nhead {self.nhead}")
        if self.d_model % 4:
            raise ConfigError(f"RegressorConfig: d_model {self.d_model} must be a multiple of 4 "
                              "(the 2D sine encoding interleaves sin/cos over d_model/2 channels per axis)")
        if self.pose_head not in ("vposer", "vqvae"):
            raise ConfigError(f"RegressorConfig: pose_head {self.pose_head!r} is not 'vposer' or 'vqvae'")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"RegressorConfig: dropout {self.dropout} is not in [0, 1)")

    @property
    def num_param_tokens(self) -> int:
        """P: 3 (root+pose, shape, camera) for VPoser; vq_tokens + 3 for the VQ-VAE head."""
        return 3 if self.pose_head == "vposer" else self.vq_tokens + 3

    @property
    def pose_dim(self) -> int:
        """Width of the pose head's output per token: the latent size or the number of VQ classes."""
        return self.pose_latent_dim if self.pose_head == "vposer" else self.vq_classes


@dataclasses.dataclass
class RegressorOutput:
    """Raw regressor outputs (B persons).

    Attributes:
        root_pose_6d: (B, 6) global orientation, 6D column convention (``rotations.rot6d_to_matrix``).
        pose: (B, pose_latent_dim) VPoser latent, or (B, vq_tokens, vq_classes) VQ logits (pre-softmax).
        betas: (B, num_betas) SMPL shape.
        cam: (B, 3) raw camera (t_x, t_y in metres, c with t_z = 2.5·f/256·sigmoid(c)).
        joint_img: (B, num_joints, 3) float32 graph-joint positions in [0, 1]: x, y over the 256 crop,
            z root-relative depth over ±1 m.

    Under autocast the four head outputs come out in the autocast dtype; convert before SMPL.
    """

    root_pose_6d: torch.Tensor
    pose: torch.Tensor
    betas: torch.Tensor
    cam: torch.Tensor
    joint_img: torch.Tensor


class _PositionTable(nn.Module):
    """Holds the persistent ``pos_table`` buffer (upstream ``PositionalEncoding1D``)."""

    def __init__(self, n_position: int, d_hid: int) -> None:
        super().__init__()
        self.register_buffer("pos_table", sinusoid_table(n_position, d_hid))


def _cascade(d_model: int, out_dim: int, layers: int) -> nn.ModuleList:
    return nn.ModuleList([nn.Linear(d_model, out_dim)] + [nn.Linear(d_model + out_dim, out_dim)
                                                          for _ in range(layers - 1)])


def _run_cascade(hs: torch.Tensor, heads: nn.ModuleList) -> torch.Tensor:
    """hs: (L, ..., C) → out_{L−1}; out₀ = fc₀(h₀), outᵢ = outᵢ₋₁ + fcᵢ(cat(hᵢ, outᵢ₋₁))."""
    out = heads[0](hs[0])
    for i in range(1, len(heads)):
        out = out + heads[i](torch.cat([hs[i], out.to(hs.dtype)], dim=-1))
    return out


class Regressor(nn.Module):
    """JOTR-style regressor. ``forward(feat (B, in_channels, S, S)) -> RegressorOutput``, S = feat_size."""

    def __init__(self, config: RegressorConfig) -> None:
        super().__init__()
        self.config = c = config
        self.down_linear = nn.Conv2d(c.in_channels, c.d_model, 1, 1)
        self.transformer = Transformer(d_model=c.d_model, nhead=c.nhead, enc_layers=c.enc_layers,
                                       dec_layers=c.dec_layers, dim_feedforward=c.dim_feedforward,
                                       dropout=c.dropout, num_joints=c.num_joints)
        self.pos_embed_1d = _PositionTable(c.depth_bins * c.feat_size * c.feat_size, c.d_model)
        self.spose_shape_cam_param = nn.Parameter(torch.randn(c.num_param_tokens, c.d_model))
        self.query = nn.Embedding(c.num_joints, c.d_model)
        self.cascade_root_pose_out = _cascade(c.d_model, 6, c.dec_layers)
        self.cascade_pose_out = _cascade(c.d_model, c.pose_dim, c.dec_layers)
        self.cascade_shaoe_out = _cascade(c.d_model, c.num_betas, c.dec_layers)
        self.cascade_cam_out = _cascade(c.d_model, 3, c.dec_layers)
        self.conv2d_to_3d = nn.Conv2d(c.in_channels, c.d_model * c.depth_bins, 1, 1)
        self.exponent = nn.Parameter(torch.tensor(3.0))
        self.conv_3d_coord = nn.Sequential(nn.Conv3d(c.d_model + 3, c.d_model, 1, 1))
        self.refine_3d = TransformerEncoder(c.refine_layers, c.d_model, c.nhead, c.refine_feedforward,
                                            c.dropout, final_norm=True)

    def depth_anchors(self, exponent: torch.Tensor) -> torch.Tensor:
        """(1, 3, D, S, S) float32 anchor maps [Z, Y, X]: Z = (d/D)^exponent, Y = h/S, X = w/S."""
        c = self.config
        dev = exponent.device
        rd = torch.arange(c.depth_bins, dtype=torch.float32, device=dev) / c.depth_bins
        rs = torch.arange(c.feat_size, dtype=torch.float32, device=dev) / c.feat_size
        shape = (1, 1, c.depth_bins, c.feat_size, c.feat_size)
        z = torch.pow(rd, exponent.float()).view(1, 1, -1, 1, 1).expand(shape)
        y = rs.view(1, 1, 1, -1, 1).expand(shape)
        x = rs.view(1, 1, 1, 1, -1).expand(shape)
        return torch.cat([z, y, x], dim=1)

    def forward(self, feat: torch.Tensor) -> RegressorOutput:
        """Regress SMPL parameters from backbone features.

        Args:
            feat: (B, in_channels, feat_size, feat_size) merged backbone features.
        Returns:
            :class:`RegressorOutput`.
        """
        c = self.config
        s, d, ch = c.feat_size, c.depth_bins, c.d_model
        if feat.ndim != 4 or tuple(feat.shape[1:]) != (c.in_channels, s, s):
            raise ValueError(f"Regressor expects features (B, {c.in_channels}, {s}, {s}), got {tuple(feat.shape)}")
        b = feat.shape[0]
        feat = feat.to(self.down_linear.weight.dtype)  # e.g. fp16 backbone features into an fp32 regressor

        # 3D branch: (B, C·D, S, S) → (B, C, D, S, S), channel index c·D + d
        exponent = torch.clamp(self.exponent, 1, 20)
        volume = self.conv2d_to_3d(feat).reshape(b, ch, d, s, s)
        anchors = self.depth_anchors(exponent).expand(b, -1, -1, -1, -1)
        volume = self.conv_3d_coord(torch.cat([volume, anchors.to(volume.dtype)], dim=1))
        tokens = volume.flatten(2).transpose(1, 2)  # (B, D·S·S, C) in (d h w) order
        pos_3d = self.pos_embed_1d.pos_table.unsqueeze(0).expand(b, -1, -1)
        tokens = self.refine_3d(tokens, pos_3d)
        volume = tokens.transpose(1, 2).reshape(b, ch, d, s, s)

        # 2D branch
        img = self.down_linear(feat).flatten(2).transpose(1, 2)  # (B, S·S, C) in (h w) order
        img_pos = sine_position_encoding_2d(s, s, ch, device=feat.device).to(img.dtype)
        img_pos = img_pos.unsqueeze(0).expand(b, -1, -1)
        query_pos = torch.cat([self.spose_shape_cam_param, self.query.weight], dim=0).unsqueeze(0).expand(b, -1, -1)

        hs, joint_img = self.transformer(img, img_pos, query_pos, volume, exponent, c.num_param_tokens)
        # hs: (L, B, P, C)
        root_pose_6d = _run_cascade(hs[:, :, 0], self.cascade_root_pose_out)
        pose_tokens = hs[:, :, 0] if c.pose_head == "vposer" else hs[:, :, 1:-2]
        pose = _run_cascade(pose_tokens, self.cascade_pose_out)
        betas = _run_cascade(hs[:, :, -2], self.cascade_shaoe_out)
        cam = _run_cascade(hs[:, :, -1], self.cascade_cam_out)
        return RegressorOutput(root_pose_6d=root_pose_6d, pose=pose, betas=betas, cam=cam, joint_img=joint_img)


def save_regressor(model: Regressor, directory: str | Path) -> Path:
    """Write ``<directory>/config.json`` + ``model.safetensors``."""
    return save_component(model, model.config, directory)


def load_regressor(directory: str | Path, *, device: torch.device | str = "cpu") -> Regressor:
    """Build a :class:`Regressor` from ``<directory>/config.json`` and load ``model.safetensors`` strictly.

    Raises:
        WeightsError: a file is missing, or the weights do not match the config (keys/shapes listed).
        ConfigError: the config is invalid.
    """
    return load_component(directory, RegressorConfig, Regressor, what="regressor", device=device)
