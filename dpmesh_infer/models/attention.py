"""Cross-attention capture for the DPMesh backbone: a diffusers attention processor and its store.

DPMesh reads the head-averaged cross-attention probabilities softmax(q·kᵀ·d^-0.5) of ten UNet ``attn2``
modules (image queries × 30 joint-token keys) and feeds them, as 30 extra channels, into the merge
convs. :class:`CrossAttentionCapture` is a drop-in replacement for diffusers' ``AttnProcessor2_0`` that
computes those probabilities explicitly, in fp32 even under fp16 autocast, records their head mean in
a :class:`CaptureStore` owned by one backbone instance, and returns the usual attention output.

q and k come from ``attn.to_q`` / ``attn.to_k``; when peft LoRA wraps those Linears the adapted
projections are used, as upstream does.
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..devices import autocast_off

# The ten UNet cross-attention modules whose maps DPMesh uses (upstream 'down_cross' + 'up_cross' with
# HW <= 16*16 at a 32x32 latent): 4 in the encoder, 6 in the decoder; the mid block is excluded.
CAPTURED_ATTN2: tuple[str, ...] = (
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2",
    "down_blocks.1.attentions.1.transformer_blocks.0.attn2",
    "down_blocks.2.attentions.0.transformer_blocks.0.attn2",
    "down_blocks.2.attentions.1.transformer_blocks.0.attn2",
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.1.attentions.1.transformer_blocks.0.attn2",
    "up_blocks.1.attentions.2.transformer_blocks.0.attn2",
    "up_blocks.2.attentions.0.transformer_blocks.0.attn2",
    "up_blocks.2.attentions.1.transformer_blocks.0.attn2",
    "up_blocks.2.attentions.2.transformer_blocks.0.attn2",
)


class CaptureStore:
    """Per-backbone record of what one forward pass captured (no module-level state).

    ``maps[name]``: float32 (B, HW, N_tokens) head-averaged attention probabilities (rows sum to 1).
    ``taps[key]``: UNet feature maps recorded by the backbone's forward hooks.
    Recording happens only while ``active`` is True (inside the backbone's forward), so using the UNet
    elsewhere never leaks tensors into the store.
    """

    def __init__(self) -> None:
        self.active = False
        self.maps: dict[str, torch.Tensor] = {}
        self.taps: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        self.maps = {}
        self.taps = {}

    @contextlib.contextmanager
    def recording(self):
        """Context in which processors and hooks record; the store is emptied on entry and on exit."""
        previous = self.active
        self.clear()
        self.active = True
        try:
            yield self
        finally:
            self.active = previous
            self.clear()


class CrossAttentionCapture:
    """Attention processor: the same output as diffusers' ``AttnProcessor2_0`` plus recorded maps.

    Args:
        name: key under which this module's map is stored (its module path).
        store: the owning backbone's :class:`CaptureStore`.

    The probabilities P = softmax(q kᵀ · attn.scale) are computed in float32 with autocast disabled
    (q, k cast up); the map recorded is P averaged over heads, (B, HW, N_tokens), float32. The output
    is P (cast to v's dtype) @ v, then ``to_out`` — as in upstream's ldm CrossAttention.
    """

    def __init__(self, name: str, store: CaptureStore) -> None:
        self.name = name
        self.store = store

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, HW, d)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, h, N, d)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        scale = attn.scale if attn.scale_qk else 1.0 / math.sqrt(head_dim)
        with autocast_off(query):
            scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale  # (B, h, HW, N)
            if attention_mask is not None:
                scores = scores + attention_mask.float()
            probs = scores.softmax(dim=-1)
        if self.store.active:
            self.store.maps[self.name] = probs.mean(dim=1)

        hidden_states = torch.matmul(probs.to(value.dtype), value)  # (B, h, HW, d)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def install_capture(unet, store: CaptureStore, names: tuple[str, ...] = CAPTURED_ATTN2) -> None:
    """Give the ``attn2`` modules ``names`` of ``unet`` a :class:`CrossAttentionCapture`; keep the rest.

    Every other attention module keeps (or gets) diffusers' default fused-SDPA processor.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = {}
    wanted = {f"{n}.processor": n for n in names}
    for key in unet.attn_processors:
        procs[key] = CrossAttentionCapture(wanted[key], store) if key in wanted else AttnProcessor2_0()
    missing = sorted(set(wanted) - set(procs))
    if missing:
        raise ValueError(f"the UNet has no attention modules {missing}")
    unet.set_attn_processor(procs)


def maps_to_grid(maps: list[torch.Tensor]) -> torch.Tensor:
    """Average head-averaged maps of one resolution and lay tokens out as channels.

    Args:
        maps: tensors (B, HW, N) with the same HW = h*h (square, row-major pixels).
    Returns:
        (B, N, h, h): the unweighted mean over ``maps``.
    """
    mean = torch.stack(maps, dim=0).mean(dim=0)  # (B, HW, N)
    b, hw, n = mean.shape
    side = math.isqrt(hw)
    if side * side != hw:
        raise ValueError(f"attention map with {hw} queries is not square")
    return mean.transpose(1, 2).reshape(b, n, side, side)
