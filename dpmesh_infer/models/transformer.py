"""Transformer pieces of the JOTR-style regressor (upstream DPMesh ``common/nets/transformer.py``).

Everything here is batch-first: tokens are (B, N, C). Attention is ``nn.MultiheadAttention`` so the
parameter names (``in_proj_weight``, ``in_proj_bias``, ``out_proj.*``) match the official checkpoint.
All layers are post-norm (DETR ``normalize_before=False``) with ReLU, and positional embeddings are
added to queries and keys only, never to values.

Upstream quirks replicated on purpose (they are baked into the released weights):

- :func:`sine_position_encoding_2d` is DETR's ``PositionEmbeddingSine`` with the frequency exponent
  computed by an integer division that is always 0, so every frequency is 1.
- :class:`JointDecoder` applies its single shared ``norm`` after every layer and feeds the normalised
  output into the next layer, and grows the cross-attention memory with features sampled from the 3D
  volume at the current joint estimates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "inverse_sigmoid",
    "sine_position_encoding_2d",
    "sinusoid_table",
    "EncoderLayer",
    "DecoderLayer",
    "TransformerEncoder",
    "JointDecoder",
    "Transformer",
]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """log(x / (1 − x)) after clamping x to [0, 1] and both x and 1 − x to ≥ eps (upstream's eps 1e-5).

    Computed in float32 at least: 1e-5 is below fp16's normal range.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def sine_position_encoding_2d(height: int, width: int, channels: int, *, device=None) -> torch.Tensor:
    """Upstream's 2D ``PositionEmbeddingSine(channels // 2, normalize=True)``, degenerate form included.

    y = (row + 1) / (height + 1e-6) · 2π and x = (col + 1) / (width + 1e-6) · 2π (float32, as upstream).
    Upstream meant dim_t = 10000^(2⌊i/2⌋ / F) but computed the exponent with a truncating integer
    division, which is 0 for every i < F; so **all F = channels/2 frequencies are 1**. Channels
    0..F−1 are sin(y), cos(y), sin(y), … (interleaved); channels F..2F−1 the same for x.

    Returns:
        (height·width, channels) float32, tokens in row-major (h w) order.
    """
    num_feats = channels // 2
    ones = torch.ones(1, height, width, dtype=torch.float32, device=device)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    scale = 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * scale
    i = torch.arange(num_feats, dtype=torch.float32, device=device)
    dim_t = 10000.0 ** torch.div(2 * (i // 2), num_feats, rounding_mode="trunc")  # == 1 everywhere
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).reshape(height * width, 2 * num_feats)


def sinusoid_table(n_position: int, d_hid: int) -> torch.Tensor:
    """Standard 1D sinusoid table (upstream ``PositionalEncoding1D``), computed in float64.

    angle(p, j) = p / 10000^(2⌊j/2⌋ / d_hid); sin on even j, cos on odd j.

    Returns:
        (n_position, d_hid) float32.
    """
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(d_hid, dtype=torch.float64)
    exponent = 2 * torch.div(j, 2, rounding_mode="floor") / d_hid
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer: x = norm1(x + attn(x+pos, x+pos, x)); x = norm2(x + ffn(x))."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """src, pos: (B, N, C) → (B, N, C)."""
        q = k = _with_pos(src, pos)
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, src, need_weights=False)[0]))
        src2 = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer (self-attention, cross-attention, FFN; pos on queries/keys only)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt, memory, pos, query_pos):
        """tgt, query_pos: (B, Q, C); memory, pos: (B, M, C) → (B, Q, C)."""
        q = k = _with_pos(tgt, query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, tgt, need_weights=False)[0]))
        tgt2 = self.multihead_attn(_with_pos(tgt, query_pos), _with_pos(memory, pos), memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` with an optional final LayerNorm (keys ``layers.i.*``, ``norm.*``)."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 final_norm: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [EncoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model) if final_norm else None

    def forward(self, src: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src) if self.norm is not None else src


class JointDecoder(nn.Module):
    """JOTR decoder: parameter + joint queries, joint positions refined layer by layer, 3D sampling.

    After each layer ``i``: output = norm(output) (shared LayerNorm, fed forward); the first
    ``num_params`` tokens are stored; the joint tokens regress normalised joint positions
    (sigmoid at i = 0, then a residual in inverse-sigmoid space); the 3D volume is sampled there and the
    sampled tokens (pos = fc_pos_3d(inverse_sigmoid(joint_img))) are appended to / replace the last
    ``num_joints`` tokens of the memory for the next layer.
    """

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 num_joints: int) -> None:
        super().__init__()
        self.num_joints = num_joints
        self.layers = nn.ModuleList(
            [DecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(d_model)
        self.joint_img_regress = nn.ModuleList(
            [nn.Linear(d_model, 3)] + [nn.Linear(d_model + 3, 3) for _ in range(num_layers - 1)])
        self.fc_pos_3d = nn.Sequential(
            nn.Linear(3, d_model), nn.LayerNorm(d_model), nn.ReLU(inplace=True), nn.Linear(d_model, d_model))

    @staticmethod
    def sample_volume(volume: torch.Tensor, joint_img: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
        """Trilinear features of ``volume`` at normalised joint positions (float32).

        Args:
            volume: (B, C, D, H, W) features; D is the depth axis.
            joint_img: (B, J, 3) (x, y, z) in [0, 1]; x → W, y → H, z → D after the warp z^exponent.
            exponent: scalar depth-warp exponent (already clamped).
        Returns:
            (B, J, C): grid_sample(align_corners=True, zero padding) at (2x−1, 2y−1, 2z^exponent−1).
        """
        joint_img = joint_img.float()
        grid = torch.cat([joint_img[..., :2] * 2 - 1, torch.pow(joint_img[..., 2:], exponent.float()) * 2 - 1], -1)
        sampled = F.grid_sample(volume.float(), grid[:, None, None], mode="bilinear", align_corners=True)
        return sampled[:, :, 0, 0].transpose(1, 2)

    def forward(self, tgt, memory, pos, query_pos, volume, exponent, num_params: int):
        """Run all layers.

        Args:
            tgt, query_pos: (B, P + J, C) initial queries and their positional embeddings.
            memory, pos: (B, M, C) encoded image tokens and their positional embeddings.
            volume: (B, C, D, H, W) refined 3D feature volume.
            exponent: scalar depth warp.
            num_params: P, the number of parameter tokens before the J joint tokens.
        Returns:
            hs: (L, B, P, C) normalised parameter tokens after each layer;
            joint_img: (B, J, 3) float32 final joint positions in [0, 1].
        """
        out = tgt
        inter = []
        joint_img = None
        n_layers = len(self.layers)
        for idx, layer in enumerate(self.layers):
            out = self.norm(layer(out, memory, pos, query_pos))
            inter.append(out[:, :num_params])
            joint_hs = out[:, num_params:]
            if idx == 0:
                joint_img = torch.sigmoid(self.joint_img_regress[0](joint_hs).float())
            else:
                inv = inverse_sigmoid(joint_img)
                offset = self.joint_img_regress[idx](torch.cat([joint_hs, inv.to(joint_hs.dtype)], dim=-1))
                joint_img = torch.sigmoid(inv + offset.float())
            if idx == n_layers - 1:
                break  # upstream also samples after the last layer, but nothing reads that memory
            feat = self.sample_volume(volume, joint_img, exponent).to(memory.dtype)
            inv = inverse_sigmoid(joint_img).to(self.fc_pos_3d[0].weight.dtype)
            feat_pos = self.fc_pos_3d(inv).to(pos.dtype)
            keep = memory.shape[1] if idx == 0 else memory.shape[1] - self.num_joints
            memory = torch.cat([memory[:, :keep], feat], dim=1)
            pos = torch.cat([pos[:, :keep], feat_pos], dim=1)
        return torch.stack(inter), joint_img


class Transformer(nn.Module):
    """Encoder (no final norm) + :class:`JointDecoder`, with learned initial targets.

    Keys: ``encoder.layers.i.*``, ``decoder.*``, ``smpl_tgt`` (C), ``kp_tgt`` (C). The initial target is
    ``smpl_tgt`` repeated for every parameter token and ``kp_tgt`` repeated for every joint token.
    """

    def __init__(self, *, d_model: int, nhead: int, enc_layers: int, dec_layers: int, dim_feedforward: int,
                 dropout: float, num_joints: int) -> None:
        super().__init__()
        self.encoder = TransformerEncoder(enc_layers, d_model, nhead, dim_feedforward, dropout, final_norm=False)
        self.decoder = JointDecoder(dec_layers, d_model, nhead, dim_feedforward, dropout, num_joints)
        for p in self.parameters():  # upstream init (DETR _reset_parameters), before the targets exist
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.smpl_tgt = nn.Parameter(torch.zeros(d_model))
        self.kp_tgt = nn.Parameter(torch.zeros(d_model))
        self.num_joints = num_joints

    def forward(self, src, pos, query_pos, volume, exponent, num_params: int):
        """src, pos: (B, M, C); query_pos: (B, P + J, C) → hs (L, B, P, C), joint_img (B, J, 3)."""
        b = src.shape[0]
        tgt = torch.cat([self.smpl_tgt.expand(b, num_params, -1), self.kp_tgt.expand(b, self.num_joints, -1)], 1)
        memory = self.encoder(src, pos)
        return self.decoder(tgt, memory, pos, query_pos, volume, exponent, num_params)
