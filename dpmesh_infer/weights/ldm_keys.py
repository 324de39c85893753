"""ldm (CompVis / ControlNet) → diffusers key renaming for the SD1.5 parts of the official checkpoint.

The renaming itself is diffusers' own (``diffusers.loaders.single_file_utils``:
``convert_ldm_unet_checkpoint``, ``convert_controlnet_checkpoint``, ``convert_ldm_vae_checkpoint``).
Those functions silently skip keys they do not know and return ``None`` for keys they expect but do
not find, so they are never run on tensors here. Instead they are run on :class:`_KeyRef` stand-ins
that carry only a source key name and a shape; the result is a *plan* — for every diffusers key, the
ldm key it comes from and the indexing applied on the way (the VAE mid-block attention stores 1×1
convs that diffusers keeps as linears: ``w[:, :, 0, 0]``). The plan is checked to use every source
key exactly once and to produce no ``None``; then tensors are gathered by :func:`apply_plan`, which
works the same on real, memory-mapped and ``meta`` tensors (indexing gives views, nothing is copied).

LoRA (cloneofsimo/lora ``LoraInjectedLinear``) is handled by :func:`split_lora`: every triple
``X.linear.weight`` [+ ``X.linear.bias``] + ``X.lora_down.weight`` + ``X.lora_up.weight`` becomes a
plain ``X.weight`` [+ ``X.bias``] (renamed with the rest of the UNet) plus a LoRA pair attached to the
diffusers module that ``X.weight`` is renamed to. Coverage is detected from the triples, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping

import torch

from ..errors import WeightsError

__all__ = [
    "LDM_PREFIX", "PlanEntry", "LoraPair", "plan_ldm_to_diffusers", "apply_plan", "split_lora",
    "SD", "DUPLICATE_PREFIXES", "DDPM_BUFFERS", "REGRESSOR_MODULES", "VPOSER", "DROP_REASONS",
    "Dedupe", "dedupe", "detect_vq_variant", "classify_key",
]

Kind = Literal["unet", "controlnet", "vae"]

#: The prefix each diffusers converter expects in front of the ldm keys of its component.
LDM_PREFIX: dict[str, str] = {
    "unet": "model.diffusion_model.",
    "controlnet": "control_model.",
    "vae": "first_stage_model.",
}


class _KeyRef:
    """A tensor stand-in for diffusers' converters: a source key, a shape, and indexing applied to it."""

    __slots__ = ("key", "shape", "index")

    def __init__(self, key: str, shape: torch.Size, index: Any = None) -> None:
        self.key = key
        self.shape = torch.Size(shape)
        self.index = index

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: Any) -> "_KeyRef":
        if self.index is not None:
            raise WeightsError(f"internal error: {self.key} is indexed twice during key conversion")
        new_shape = torch.empty(self.shape, device="meta")[index].shape
        return _KeyRef(self.key, new_shape, index)


@dataclass(frozen=True)
class PlanEntry:
    """Where one diffusers tensor comes from: ``source[key][index]`` (``index`` None: as is)."""

    key: str
    index: Any = None
    shape: tuple[int, ...] = ()


def _converter(kind: Kind):
    from diffusers.loaders import single_file_utils as sfu

    if kind == "unet":
        return sfu.convert_ldm_unet_checkpoint
    if kind == "controlnet":
        return sfu.convert_controlnet_checkpoint
    return sfu.convert_ldm_vae_checkpoint


def plan_ldm_to_diffusers(
    kind: Kind, shapes: Mapping[str, torch.Size | tuple[int, ...]], config: Mapping[str, Any]
) -> dict[str, PlanEntry]:
    """Rename one SD component's ldm keys to diffusers keys with diffusers' own converter.

    Args:
        kind: "unet", "controlnet" or "vae".
        shapes: ldm key (relative to the component, e.g. ``input_blocks.0.0.weight``) → shape.
        config: the diffusers config dict of the component (``dpmesh_infer.models.sd15``).
    Returns:
        diffusers key → :class:`PlanEntry` (ldm key, indexing, resulting shape).
    Raises:
        WeightsError: a source key was not used by the converter (it does not belong to this
            architecture), was used twice, or the converter expected a key that is not there.
    """
    prefix = LDM_PREFIX[kind]
    refs = {prefix + k: _KeyRef(k, torch.Size(s)) for k, s in shapes.items()}
    if not refs:
        raise WeightsError(f"the checkpoint has no {kind} weights (no keys under {prefix!r})")
    out = _converter(kind)(dict(refs), dict(config))
    plan: dict[str, PlanEntry] = {}
    missing: list[str] = []
    used: dict[str, str] = {}
    twice: list[str] = []
    for dkey, ref in out.items():
        if ref is None:
            missing.append(dkey)
            continue
        if not isinstance(ref, _KeyRef):
            raise WeightsError(f"internal error: {kind} converter produced {type(ref).__name__} for {dkey}")
        if ref.key in used:
            twice.append(f"{ref.key} -> {used[ref.key]} and {dkey}")
        used[ref.key] = dkey
        plan[dkey] = PlanEntry(ref.key, ref.index, tuple(ref.shape))
    unused = sorted(set(shapes) - set(used))
    problems = []
    if unused:
        problems.append(f"{len(unused)} {kind} key(s) that the SD1.5 {kind} layout does not have: "
                        + ", ".join(prefix + k for k in unused[:12]) + (" ..." if len(unused) > 12 else ""))
    if missing:
        problems.append(f"{len(missing)} diffusers {kind} weight(s) with no source key: "
                        + ", ".join(sorted(missing)[:12]) + (" ..." if len(missing) > 12 else ""))
    if twice:
        problems.append(f"{kind} key(s) used twice: " + "; ".join(twice[:6]))
    if problems:
        raise WeightsError("cannot convert the checkpoint's " + kind + ":\n  " + "\n  ".join(problems))
    return plan


def apply_plan(plan: Mapping[str, PlanEntry], source: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Gather tensors for a plan: ``{dkey: source[entry.key][entry.index]}`` (views; no copies)."""
    out: dict[str, torch.Tensor] = {}
    for dkey, entry in plan.items():
        t = source[entry.key]
        out[dkey] = t if entry.index is None else t[entry.index]
    return out


@dataclass(frozen=True)
class LoraPair:
    """One LoRA-wrapped Linear: ldm base name (no suffix) and the keys of its down/up matrices."""

    ldm_name: str  # e.g. "input_blocks.1.1.transformer_blocks.0.attn1.to_q"
    down_key: str  # "<ldm_name>.lora_down.weight" (rank × in)
    up_key: str  # "<ldm_name>.lora_up.weight"  (out × rank)
    rank: int


_LORA_SUFFIXES = (".linear.weight", ".linear.bias", ".lora_down.weight", ".lora_up.weight")


def split_lora(
    shapes: Mapping[str, torch.Size | tuple[int, ...]], *, where: str
) -> tuple[dict[str, str], list[LoraPair]]:
    """Collapse ``LoraInjectedLinear`` triples to plain Linear names.

    Args:
        shapes: ldm key → shape for one component (keys relative to the component).
        where: component name for messages.
    Returns:
        ``(renamed, pairs)``: ``renamed`` maps every non-LoRA-matrix key to its plain ldm name
        (``X.linear.weight`` → ``X.weight``, others unchanged) → original key; ``pairs`` lists the
        wrapped Linears with their LoRA matrices.
    Raises:
        WeightsError: an incomplete triple, a LoRA matrix with a bias, non-Linear LoRA (conv), or shapes
            that do not fit the wrapped Linear.
    """
    groups: dict[str, dict[str, str]] = {}
    for key in shapes:
        for suf in _LORA_SUFFIXES:
            if key.endswith(suf):
                groups.setdefault(key[: -len(suf)], {})[suf] = key
                break
    lora_keys = {k for g in groups.values() for k in g.values()}
    stray = sorted(k for k in shapes if (".lora_down." in k or ".lora_up." in k) and k not in lora_keys)
    if stray:
        raise WeightsError(f"unsupported LoRA tensors in {where} (only bias-free LoRA on Linear layers is "
                           f"supported): {', '.join(stray[:8])}")
    renamed: dict[str, str] = {}
    pairs: list[LoraPair] = []
    bad: list[str] = []
    for name, g in sorted(groups.items()):
        has = set(g)
        if not {".linear.weight", ".lora_down.weight", ".lora_up.weight"} <= has:
            bad.append(f"{name} (has {', '.join(sorted(s.lstrip('.') for s in has))})")
            continue
        w = tuple(shapes[g[".linear.weight"]])
        down = tuple(shapes[g[".lora_down.weight"]])
        up = tuple(shapes[g[".lora_up.weight"]])
        if len(w) != 2 or len(down) != 2 or len(up) != 2:
            bad.append(f"{name} (LoRA on a non-Linear layer: weight {w}, down {down}, up {up})")
            continue
        if down[1] != w[1] or up[0] != w[0] or up[1] != down[0]:
            bad.append(f"{name} (shapes do not fit: weight {w}, lora_down {down}, lora_up {up})")
            continue
        renamed[name + ".weight"] = g[".linear.weight"]
        if ".linear.bias" in g:
            renamed[name + ".bias"] = g[".linear.bias"]
        pairs.append(LoraPair(name, g[".lora_down.weight"], g[".lora_up.weight"], down[0]))
    if bad:
        raise WeightsError(f"incomplete or malformed LoRA in {where}: " + "; ".join(bad[:8])
                           + (f" ... ({len(bad) - 8} more)" if len(bad) > 8 else ""))
    for key in shapes:
        if key not in lora_keys:
            if key in renamed:
                raise WeightsError(f"{where}: {key} clashes with the plain name of a LoRA-wrapped Linear")
            renamed[key] = key
    return renamed, pairs


# =================================================================================================
# The official checkpoint's top-level layout (upstream-dpmesh.md §5.2)
# =================================================================================================
SD = "backbone.sd_model."
DUPLICATE_PREFIXES = {  # duplicate prefix -> canonical prefix (same modules registered twice upstream)
    "backbone.unet.unet.": SD,
    "backbone.encoder_vq.": SD + "first_stage_model.",
}
DDPM_BUFFERS = frozenset({
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "logvar",
})
REGRESSOR_MODULES = (  # top-level names of the regressor's parameters/submodules (upstream names)
    "down_linear", "conv2d_to_3d", "conv_3d_coord", "exponent", "spose_shape_cam_param", "query",
    "pos_embed_1d", "transformer", "refine_3d", "cascade_root_pose_out", "cascade_pose_out",
    "cascade_shaoe_out", "cascade_cam_out",
)
VPOSER = "vposer.vposer."

#: Reason (shown in the report) for each group of dropped keys.
DROP_REASONS: dict[str, str] = {
    "clip": "CLIP text encoder (cond_stage_model.*): built upstream but never used; joint tokens replace the prompt",
    "ddpm": "DDPM noise-schedule buffers: unused (one pass at t=1, no noise added)",
    "vae_decoder": "VAE decoder side (post_quant_conv, decoder): only the encoder + quant_conv are used",
    "vposer_encoder": "VPoser encoder (bodyprior_enc_*, incl. BatchNorm running stats): only the decoder is "
                      "used at inference",
    "smpl": "SMPL buffers (human_model_layer.th_*): SMPL is licensed separately; import it with "
            "`dpmesh weights import-smpl`",
}


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_meta or b.is_meta:
        return True
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


@dataclass
class Dedupe:
    """Result of :func:`dedupe`: the state dict with one copy of each duplicated subtree."""

    state: dict[str, torch.Tensor]
    removed: dict[str, int]  # "dup* = canonical*" -> number of duplicate keys removed
    promoted: dict[str, int]  # duplicate prefix -> keys used in place of a missing canonical copy
    check: str  # "data", "shape" (meta tensors) or "skipped"


def dedupe(state: Mapping[str, torch.Tensor], *, check: bool) -> Dedupe:
    """Keep one copy of ``backbone.unet.unet.*`` / ``backbone.encoder_vq.*`` (keys without ``module.``).

    With ``check``, every removed duplicate must equal the kept copy: same storage (free), else
    ``torch.equal``; for ``meta`` tensors only shape and dtype can be compared.

    Raises:
        WeightsError: a duplicate differs from the kept copy (listed).
    """
    out = {k: v for k, v in state.items() if not any(k.startswith(p) for p in DUPLICATE_PREFIXES)}
    differ: list[str] = []
    removed: dict[str, int] = {}
    promoted: dict[str, int] = {}
    meta = False
    for dup, canon in DUPLICATE_PREFIXES.items():
        n = 0
        for k, v in state.items():
            if not k.startswith(dup):
                continue
            ck = canon + k[len(dup):]
            if ck not in out:  # only the duplicate copy exists: use it as the canonical one
                out[ck] = v
                promoted[dup] = promoted.get(dup, 0) + 1
                continue
            n += 1
            if check:
                meta = meta or v.is_meta or out[ck].is_meta
                if not _same_tensor(v, out[ck]):
                    differ.append(f"{k} vs {ck}")
        if n:
            removed[f"{dup}* = {canon}*"] = n
    if differ:
        raise WeightsError(
            f"duplicated subtrees disagree ({len(differ)} tensors), so the checkpoint is not the expected "
            f"layout: {'; '.join(differ[:6])}" + (" ..." if len(differ) > 6 else "")
            + "\n  (check_duplicates=False skips this check and keeps the backbone.sd_model.* copy)")
    kind = ("shape" if meta else "data") if check and removed else "skipped"
    return Dedupe(out, removed, promoted, kind)


def detect_vq_variant(state: Mapping[str, torch.Tensor], pose_latent_dim: int) -> None:
    """Refuse the VQ-VAE variant (upstream §5.4 step 5): VQ keys, or pose head / query shapes of it.

    Raises:
        WeightsError: naming the evidence.
    """
    evidence = []
    if any(k.startswith(("vqvae.", "vq_model.")) or k.endswith("codebook") for k in state):
        evidence.append("VQ-VAE keys (vqvae.*/codebook) present")
    w = state.get("cascade_pose_out.0.weight")
    if w is not None and w.ndim == 2 and w.shape[0] != pose_latent_dim:
        evidence.append(f"cascade_pose_out.0.weight is {tuple(w.shape)} (VPoser: "
                        f"{pose_latent_dim}×{w.shape[1]})")
    p = state.get("spose_shape_cam_param")
    if p is not None and p.ndim == 2 and p.shape[0] != 3:
        evidence.append(f"spose_shape_cam_param has {p.shape[0]} rows (VPoser: 3)")
    if evidence and not any(k.startswith(VPOSER) for k in state):
        evidence.append("no vposer.vposer.* keys")
    if evidence:
        raise WeightsError(
            "this checkpoint looks like the VQ-VAE variant of DPMesh (" + "; ".join(evidence) + "). "
            "Converting it is not supported yet: the released checkpoints are VPoser-based "
            "(upstream-dpmesh.md §5.4 step 5).")


def classify_key(key: str) -> tuple[str, str] | None:
    """Where a de-duplicated key (no ``module.``) goes: ``(bucket, key inside the bucket)`` or None (unknown).

    Buckets: "unet", "controlnet", "vae" (ldm names relative to the SD part), "adapter", "regressor",
    "pose_decoder" (our key names), or "drop:<reason>" with a reason of :data:`DROP_REASONS`.
    """
    if key.startswith(SD):
        rest = key[len(SD):]
        if rest in DDPM_BUFFERS:
            return "drop:ddpm", key
        if rest.startswith("cond_stage_model."):
            return "drop:clip", key
        if rest.startswith("model.diffusion_model."):
            return "unet", rest[len("model.diffusion_model."):]
        if rest.startswith("control_model."):
            return "controlnet", rest[len("control_model."):]
        if rest.startswith(("first_stage_model.post_quant_conv.", "first_stage_model.decoder.")):
            return "drop:vae_decoder", key
        if rest.startswith("first_stage_model."):
            return "vae", rest[len("first_stage_model."):]
        return None
    if key.startswith("backbone.outmodules."):
        return "adapter", key[len("backbone."):]
    if key.startswith("kp_lifting."):
        return "adapter", key
    if key.split(".", 1)[0] in REGRESSOR_MODULES:
        return "regressor", key
    if key.startswith(VPOSER + "bodyprior_dec_"):
        return "pose_decoder", key[len(VPOSER):]
    if key.startswith(VPOSER + "bodyprior_enc_"):
        return "drop:vposer_encoder", key
    if key.startswith("human_model_layer.th_"):
        return "drop:smpl", key
    return None
