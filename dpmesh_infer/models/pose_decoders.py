"""Pose decoders: regressor pose output → SMPL body pose (B, 23, 3) axis-angle (joints 1..23).

Two decoders, chosen by ``pose_decoder/config.json`` (:class:`PoseDecoderConfig`, ``type``):

- ``"vposer"`` — :class:`VPoserDecoder`, the VPoser v1 decoder in the released DPMesh checkpoints:
  latent z (B, 32) → 21 body rotations (6D, column convention) → axis-angle, then the two hand joints
  (SMPL 22, 23) are zero. Keys ``bodyprior_dec_fc1.*``, ``bodyprior_dec_fc2.*``, ``bodyprior_dec_out.*``
  (official ``vposer.vposer.bodyprior_dec_*`` with the prefix removed; the VPoser encoder is unused).
- ``"vqvae"`` — :class:`VQVAEDecoder`, the paper's PCT-style VQ-VAE decoder: logits (B, 48, 2048) →
  softmax @ codebook → token-MLP 48→23 → Linear 256→32 → MLP-Mixer → LayerNorm → Linear 32→9 → 23 raw
  3×3 matrices → nearest rotation → axis-angle. Keys keep upstream's names (``codebook``,
  ``decoder_token_mlp``, ``decoder_start``, ``decoder.i.*``, ``decoder_layer_norm``, ``recover_embed``).

:class:`VQVAEPosePrior` is the trainable VQ-VAE (encoder + EMA quantiser) whose ``pose_decoder``
attribute *is* a :class:`VQVAEDecoder` (same keys, shared codebook), so a trained prior exports with
``save_pose_decoder(prior.pose_decoder, dir)``.

The decoders are frozen in DPMesh and upstream forces them into eval mode; keep them in ``eval()``
(VPoser's dropout 0.1 is active in training mode, as upstream's module would be).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigBase
from ..errors import ConfigError
from ..geometry.rotations import matrix_to_axis_angle, orthonormalise, rot6d_to_matrix
from .io import load_component, save_component

__all__ = [
    "PoseDecoderConfig",
    "VPoserDecoder",
    "VQVAEDecoder",
    "VQVAEPosePrior",
    "VQVAEPriorOutput",
    "MixerBlock",
    "build_pose_decoder",
    "load_pose_decoder",
    "save_pose_decoder",
]

SMPL_BODY_JOINTS = 23  # SMPL joints 1..23 (everything but the root)


@dataclasses.dataclass(frozen=True)
class PoseDecoderConfig(ConfigBase):
    """Pose decoder architecture. Defaults: VPoser v1 (released checkpoints) / DPMesh's VQ-VAE sizes.

    VPoser fields: ``latent_dim``, ``hidden_dim``, ``num_body_joints`` (the rest of the 23 are zero),
    ``vposer_dropout``. VQ-VAE decoder fields: ``num_tokens``, ``codebook_size``, ``token_dim``,
    ``num_joints``, ``dec_*``, ``mixer_dropout``, ``orthonormalise`` (upstream fed the raw matrices to
    the axis-angle conversion; we project onto SO(3) first by default). ``enc_*`` and ``ema_decay`` are
    used only by :class:`VQVAEPosePrior` (training) and travel with the weights for reference.
    """

    type: Literal["vposer", "vqvae"] = "vposer"
    latent_dim: int = 32
    hidden_dim: int = 512
    num_body_joints: int = 21
    vposer_dropout: float = 0.1
    num_tokens: int = 48
    codebook_size: int = 2048
    token_dim: int = 256
    num_joints: int = 23
    dec_num_blocks: int = 1
    dec_hidden_dim: int = 32
    dec_token_inter_dim: int = 64
    dec_hidden_inter_dim: int = 64
    enc_num_blocks: int = 4
    enc_hidden_dim: int = 512
    enc_token_inter_dim: int = 64
    enc_hidden_inter_dim: int = 512
    mixer_dropout: float = 0.0
    ema_decay: float = 0.9
    orthonormalise: bool = True

    def __post_init__(self) -> None:
        if self.type not in ("vposer", "vqvae"):
            raise ConfigError(f"PoseDecoderConfig: type {self.type!r} is not 'vposer' or 'vqvae'")
        ints = [f.name for f in dataclasses.fields(self) if f.type in ("int", int)]
        bad = [n for n in ints if not isinstance(getattr(self, n), int) or getattr(self, n) < 1]
        if bad:
            raise ConfigError(f"PoseDecoderConfig: {bad} must be positive integers")
        if self.num_body_joints > SMPL_BODY_JOINTS or self.num_joints > SMPL_BODY_JOINTS:
            raise ConfigError(f"PoseDecoderConfig: at most {SMPL_BODY_JOINTS} body joints")
        for name in ("vposer_dropout", "mixer_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"PoseDecoderConfig: {name} must be in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("PoseDecoderConfig: ema_decay must be in [0, 1)")


def _pad_to_smpl(body_pose: torch.Tensor) -> torch.Tensor:
    """(B, n, 3) → (B, 23, 3) with zero rotations appended (hands for VPoser)."""
    missing = SMPL_BODY_JOINTS - body_pose.shape[1]
    if missing == 0:
        return body_pose
    return torch.cat([body_pose, body_pose.new_zeros(body_pose.shape[0], missing, 3)], dim=1)


class VPoserDecoder(nn.Module):
    """VPoser v1 decoder. ``forward(z (B, latent_dim)) -> body_pose (B, 23, 3)`` axis-angle (radians).

    h = leaky_relu(fc1(z), 0.2) → dropout → leaky_relu(fc2(h), 0.2) → out(h) (B, 6·21) → per joint a
    (3, 2) row-major 6D block → rotation (columns b1, b2, b3) → axis-angle (torchgeometry route);
    SMPL joints 22 and 23 (hands) are zero.
    """

    def __init__(self, config: PoseDecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.bodyprior_dec_fc1 = nn.Linear(config.latent_dim, config.hidden_dim)
        self.bodyprior_dec_fc2 = nn.Linear(config.hidden_dim, config.hidden_dim)
        self.bodyprior_dec_out = nn.Linear(config.hidden_dim, config.num_body_joints * 6)
        self.dropout = nn.Dropout(config.vposer_dropout)

    def rotation_matrices(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, latent_dim) → (B, num_body_joints, 3, 3) body rotations (float32 at least)."""
        h = self.dropout(F.leaky_relu(self.bodyprior_dec_fc1(z), negative_slope=0.2))
        h = F.leaky_relu(self.bodyprior_dec_fc2(h), negative_slope=0.2)
        out = self.bodyprior_dec_out(h)
        return rot6d_to_matrix(out.reshape(z.shape[0], self.config.num_body_joints, 6))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"VPoserDecoder expects a latent (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        return _pad_to_smpl(matrix_to_axis_angle(self.rotation_matrices(z)))


class _MLP(nn.Module):
    """Linear → GELU → Dropout → Linear → Dropout (keys ``ff.0``, ``ff.3``)."""

    def __init__(self, dim: int, inter_dim: int, dropout: float) -> None:
        super().__init__()
        self.ff = nn.Sequential(nn.Linear(dim, inter_dim), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(inter_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class MixerBlock(nn.Module):
    """PCT MLP-Mixer block on (B, tokens, hidden): out = x + y + z.

    y = token-MLP(LN1(x)) applied along the token axis; z = channel-MLP(LN2(x + y)). Keys:
    ``layernorm1``, ``MLP_token.ff.{0,3}``, ``layernorm2``, ``MLP_channel.ff.{0,3}`` (upstream names).
    """

    def __init__(self, hidden_dim: int, hidden_inter_dim: int, tokens: int, token_inter_dim: int,
                 dropout: float) -> None:
        super().__init__()
        self.layernorm1 = nn.LayerNorm(hidden_dim)
        self.MLP_token = _MLP(tokens, token_inter_dim, dropout)
        self.layernorm2 = nn.LayerNorm(hidden_dim)
        self.MLP_channel = _MLP(hidden_dim, hidden_inter_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.MLP_token(self.layernorm1(x).transpose(1, 2)).transpose(1, 2)
        z = self.MLP_channel(self.layernorm2(x + y))
        return x + y + z


class VQVAEDecoder(nn.Module):
    """VQ-VAE pose decoder. ``forward(logits (B, T, K)) -> body_pose (B, 23, 3)`` axis-angle (radians).

    Buffers: ``codebook`` (K, token_dim). T = num_tokens (48), K = codebook_size (2048).
    """

    def __init__(self, config: PoseDecoderConfig) -> None:
        super().__init__()
        c = self.config = config
        self.register_buffer("codebook", torch.randn(c.codebook_size, c.token_dim))
        self.decoder_token_mlp = nn.Linear(c.num_tokens, c.num_joints)
        self.decoder_start = nn.Linear(c.token_dim, c.dec_hidden_dim)
        self.decoder = nn.ModuleList([
            MixerBlock(c.dec_hidden_dim, c.dec_hidden_inter_dim, c.num_joints, c.dec_token_inter_dim, c.mixer_dropout)
            for _ in range(c.dec_num_blocks)])
        self.decoder_layer_norm = nn.LayerNorm(c.dec_hidden_dim)
        self.recover_embed = nn.Linear(c.dec_hidden_dim, 9)

    def decode_features(self, token_feat: torch.Tensor) -> torch.Tensor:
        """Token features (B, T, token_dim) → raw (B, num_joints, 3, 3) matrices (row-major 9-vectors)."""
        x = self.decoder_token_mlp(token_feat.transpose(1, 2)).transpose(1, 2)  # (B, J, token_dim)
        x = self.decoder_start(x)
        for block in self.decoder:
            x = block(x)
        x = self.recover_embed(self.decoder_layer_norm(x))
        return x.reshape(x.shape[0], x.shape[1], 3, 3)

    def rotation_matrices(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, T, K) → (B, num_joints, 3, 3): softmax @ codebook, decode, orthonormalise if configured."""
        probs = torch.softmax(logits.float(), dim=-1)
        raw = self.decode_features(probs.to(self.codebook.dtype) @ self.codebook)
        return orthonormalise(raw) if self.config.orthonormalise else raw

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        if logits.ndim != 3 or tuple(logits.shape[1:]) != (c.num_tokens, c.codebook_size):
            raise ValueError(f"VQVAEDecoder expects logits (B, {c.num_tokens}, {c.codebook_size}), "
                             f"got {tuple(logits.shape)}")
        return _pad_to_smpl(matrix_to_axis_angle(self.rotation_matrices(logits)))


@dataclasses.dataclass
class VQVAEPriorOutput:
    """Result of :meth:`VQVAEPosePrior.forward`.

    Attributes:
        raw_matrices: (B, J, 3, 3) decoded, not orthonormalised (the reconstruction target space).
        indices: (B, T) int64 codebook index per token.
        commitment_loss: scalar MSE(encoder features, their quantised values.detach()).
    """

    raw_matrices: torch.Tensor
    indices: torch.Tensor
    commitment_loss: torch.Tensor


class VQVAEPosePrior(nn.Module):
    """Trainable PCT-style VQ-VAE over SMPL body rotations (23 joints × 9), for AMASS pre-training.

    Encoder: ``start_embed`` (9 → enc_hidden) → ``encoder`` (enc_num_blocks Mixer blocks) →
    ``encoder_layer_norm`` → ``token_mlp`` (J → T on the token axis) → ``feature_embed``
    (enc_hidden → token_dim). Quantiser: nearest codebook entry (squared L2), straight-through
    gradient, commitment loss; in training mode the codebook follows an EMA (decay ``ema_decay``)
    with Laplace-smoothed cluster sizes (buffers ``ema_cluster_size``, ``ema_w``), summed over
    processes when ``torch.distributed`` is initialised. Decoder: ``pose_decoder`` (a
    :class:`VQVAEDecoder`, which owns the ``codebook``).
    """

    def __init__(self, config: PoseDecoderConfig) -> None:
        super().__init__()
        if config.type != "vqvae":
            raise ConfigError("VQVAEPosePrior needs a PoseDecoderConfig with type 'vqvae'")
        c = self.config = config
        self.start_embed = nn.Linear(9, c.enc_hidden_dim)
        self.encoder = nn.ModuleList([
            MixerBlock(c.enc_hidden_dim, c.enc_hidden_inter_dim, c.num_joints, c.enc_token_inter_dim, c.mixer_dropout)
            for _ in range(c.enc_num_blocks)])
        self.encoder_layer_norm = nn.LayerNorm(c.enc_hidden_dim)
        self.token_mlp = nn.Linear(c.num_joints, c.num_tokens)
        self.feature_embed = nn.Linear(c.enc_hidden_dim, c.token_dim)
        self.register_buffer("ema_cluster_size", torch.zeros(c.codebook_size))
        self.register_buffer("ema_w", torch.randn(c.codebook_size, c.token_dim))
        self.pose_decoder = VQVAEDecoder(c)

    @property
    def codebook(self) -> torch.Tensor:
        """(K, token_dim), owned by ``pose_decoder``."""
        return self.pose_decoder.codebook

    def encode(self, rotmats: torch.Tensor) -> torch.Tensor:
        """Body rotations (B, J, 3, 3) or (B, J, 9) row-major → continuous token features (B, T, token_dim)."""
        x = self.start_embed(rotmats.reshape(rotmats.shape[0], self.config.num_joints, 9))
        for block in self.encoder:
            x = block(x)
        x = self.encoder_layer_norm(x)
        x = self.token_mlp(x.transpose(1, 2)).transpose(1, 2)
        return self.feature_embed(x)

    def nearest_codes(self, feat: torch.Tensor) -> torch.Tensor:
        """(..., token_dim) → (...) int64 index of the nearest codebook entry (squared L2)."""
        flat = feat.reshape(-1, feat.shape[-1]).float()
        cb = self.codebook.float()
        dist = flat.pow(2).sum(1, keepdim=True) + cb.pow(2).sum(1) - 2 * flat @ cb.t()
        return dist.argmin(dim=1).reshape(feat.shape[:-1])

    @torch.no_grad()
    def _ema_update(self, flat_feat: torch.Tensor, one_hot: torch.Tensor) -> None:
        counts = one_hot.sum(0)
        dw = one_hot.t() @ flat_feat
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(dw)
        decay, k = self.config.ema_decay, self.config.codebook_size
        size = self.ema_cluster_size * decay + (1 - decay) * counts
        n = size.sum()
        size = (size + 1e-5) / (n + k * 1e-5) * n
        self.ema_cluster_size.copy_(size)
        self.ema_w.mul_(decay).add_((1 - decay) * dw)
        self.codebook.copy_(self.ema_w / self.ema_cluster_size[:, None])

    def quantise(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise (B, T, D) features with the current codebook; EMA-update it when training.

        Returns:
            quantised (B, T, D) with straight-through gradient, indices (B, T), commitment loss.
        """
        idx = self.nearest_codes(feat.detach())
        quant = self.codebook[idx].to(feat.dtype)  # looked up before the update, as upstream
        if self.training:
            one_hot = F.one_hot(idx.reshape(-1), self.config.codebook_size).to(self.codebook.dtype)
            self._ema_update(feat.detach().reshape(-1, feat.shape[-1]).to(self.codebook.dtype), one_hot)
        loss = F.mse_loss(quant.detach(), feat)
        return feat + (quant - feat).detach(), idx, loss

    def forward(self, rotmats: torch.Tensor) -> VQVAEPriorOutput:
        """Encode → quantise → decode body rotations (B, J, 3, 3)."""
        quant, idx, loss = self.quantise(self.encode(rotmats))
        return VQVAEPriorOutput(self.pose_decoder.decode_features(quant), idx, loss)


def build_pose_decoder(config: PoseDecoderConfig) -> VPoserDecoder | VQVAEDecoder:
    """The decoder class named by ``config.type``, randomly initialised."""
    return VPoserDecoder(config) if config.type == "vposer" else VQVAEDecoder(config)


def save_pose_decoder(decoder: VPoserDecoder | VQVAEDecoder, directory: str | Path) -> Path:
    """Write ``<directory>/config.json`` + ``model.safetensors`` (our ``pose_decoder/`` component)."""
    return save_component(decoder, decoder.config, directory)


def load_pose_decoder(directory: str | Path, *, device: torch.device | str = "cpu") -> VPoserDecoder | VQVAEDecoder:
    """Read ``<directory>/config.json`` and load ``model.safetensors`` strictly; returns it in eval mode.

    Raises:
        WeightsError: a file is missing or the weights do not match the config (keys/shapes listed).
        ConfigError: the config is invalid.
    """
    return load_component(directory, PoseDecoderConfig, build_pose_decoder, what="pose decoder", device=device)
