"""Convert an official DPMesh release checkpoint (``*_best_ckpt.pth.tar``) into our weights format.

The official file is a flat pickled state dict of the DDP-wrapped upstream model (``module.`` prefix,
ldm key names, duplicated subtrees, cloneofsimo LoRA triples, VPoser, SMPL buffers, an unused CLIP
text tower; see ``upstream-dpmesh.md`` §5 and ``official_checkpoint_layout.json``). Conversion runs in
stages, each usable on its own:

1. :func:`load_official_checkpoint` — ``torch.load(weights_only=True, mmap=True)``; refuses files that
   need full unpickling unless trusted; unwraps ``{'network': ...}`` / ``{'state_dict': ...}``.
2. :func:`map_official_state_dict` — strips ``module.``, verifies and removes duplicate subtrees,
   drops unused tensors (each with a stated reason), renames ldm → diffusers with diffusers' own
   converters (:mod:`.ldm_keys`), splits LoRA into peft ``lora_A``/``lora_B``, and sorts the rest into
   our components. Every source key ends up mapped, dropped for a reason, or a verified duplicate; any
   other key is refused. Works on ``meta`` tensors (nothing is copied: results are views).
3. :func:`verify_mapped` — builds every target module on the ``meta`` device from the configs and
   checks the key sets and shapes exactly (the same checks the loaders apply).
4. :func:`write_mapped` — writes the folder (``docs/CONTRACTS.md``) component by component into
   ``<out>.tmp-XXXX`` and renames it into place at the end.

:func:`convert_official` runs all four and returns a :class:`ConversionReport`.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch

from ..atomic import check_writable_dir
from ..errors import InputError, UntrustedCheckpointError, WeightsError
from ..inputs import path_problem, refuse_overwriting_inputs
from ..models.dpmesh import PipelineConfig
from .layout import COMPONENTS, FIX_SMPL, SMPL_DIR, check_output_dir
from .ldm_keys import (
    DROP_REASONS,
    SD,
    VPOSER,
    LoraPair,
    apply_plan,
    classify_key,
    dedupe,
    detect_vq_variant,
    plan_ldm_to_diffusers,
    split_lora,
)

__all__ = [
    "ConversionTarget",
    "ConversionReport",
    "MappedCheckpoint",
    "convert_official",
    "load_official_checkpoint",
    "map_official_state_dict",
    "verify_mapped",
    "write_mapped",
    "DROP_REASONS",
]

COMPONENT_ORDER = tuple(c.name for c in COMPONENTS)


# --------------------------------------------------------------------------------------- target
@dataclasses.dataclass(frozen=True)
class ConversionTarget:
    """The architecture a checkpoint is converted into. :meth:`release` = the released DPMesh model.

    ``backbone.lora_rank``/``lora_alpha`` and ``joint_token_layers`` are taken from the checkpoint
    (see :func:`map_official_state_dict`); the other fields must match it.
    """

    backbone: Any  # backbone.BackboneConfig
    regressor: Any  # regressor.RegressorConfig
    pose_decoder: Any  # pose_decoders.PoseDecoderConfig
    unet: Mapping[str, Any]
    controlnet: Mapping[str, Any]
    vae: Mapping[str, Any]

    @classmethod
    def release(cls) -> "ConversionTarget":
        """Full-size SD1.5 + release regressor (VPoser head) + VPoser v1 decoder."""
        from ..models import sd15
        from ..models.backbone import BackboneConfig
        from ..models.pose_decoders import PoseDecoderConfig
        from ..models.regressor import RegressorConfig

        return cls(BackboneConfig(), RegressorConfig(), PoseDecoderConfig(type="vposer"),
                   sd15.unet_config(), sd15.controlnet_config(), sd15.vae_config())


# --------------------------------------------------------------------------------------- report
@dataclasses.dataclass
class ConversionReport:
    """What a conversion did. ``str(report)`` is a short human summary (printed by the CLI).

    Attributes:
        source: the checkpoint file (None when mapping an in-memory state dict).
        output: the written weights directory (None before writing).
        mapped: component → number of tensors written.
        dropped: reason → source keys dropped for it (keys without ``module.``).
        duplicates: "dup.* = canonical.*" → number of duplicate keys removed.
        duplicates_check: "data" (compared: same storage or torch.equal), "shape" (meta tensors: shapes
            only) or "skipped".
        lora_rank, lora_targets: detected LoRA rank and number of LoRA-wrapped Linears.
        unwrapped: "network"/"state_dict" when the state dict was inside such a dict, else None.
        module_prefix: whether keys carried the DDP ``module.`` prefix.
        ignored_top_level: other entries next to the unwrapped state dict (e.g. "epoch", "optimizer").
        dtype: dtype the floating-point tensors were written in (None: as stored).
        notes: further remarks.
    """

    source: Path | None = None
    output: Path | None = None
    mapped: dict[str, int] = dataclasses.field(default_factory=dict)
    dropped: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    duplicates: dict[str, int] = dataclasses.field(default_factory=dict)
    duplicates_check: str = "skipped"
    lora_rank: int = 0
    lora_targets: int = 0
    unwrapped: str | None = None
    module_prefix: bool = False
    ignored_top_level: list[str] = dataclasses.field(default_factory=list)
    dtype: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def num_mapped(self) -> int:
        return sum(self.mapped.values())

    @property
    def num_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def __str__(self) -> str:
        src = self.source.name if self.source else "state dict"
        head = f"Converted {src}" + (f" -> {self.output}" if self.output else " (not written)")
        lines = [head]
        comps = ", ".join(f"{k} {v}" for k, v in self.mapped.items())
        lines.append(f"  mapped {self.num_mapped} tensors: {comps}")
        if self.lora_targets:
            lines.append(f"  LoRA: {self.lora_targets} Linears, rank {self.lora_rank} (alpha {self.lora_rank}, "
                         "scale 1), kept separate in unet_lora/ (not merged)")
        if self.duplicates:
            how = {"data": "verified equal", "shape": "shapes verified (no data)", "skipped": "not verified"}
            lines.append(f"  duplicates removed ({how.get(self.duplicates_check, self.duplicates_check)}): "
                         + "; ".join(f"{k} ({n})" for k, n in self.duplicates.items()))
        if self.dropped:
            lines.append(f"  dropped {self.num_dropped} tensors:")
            for reason, keys in self.dropped.items():
                lines.append(f"    {len(keys):5d}  {reason}")
        if self.dtype:
            lines.append(f"  floating-point tensors written as {self.dtype}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


@dataclasses.dataclass
class MappedCheckpoint:
    """Result of :func:`map_official_state_dict`: our components' state dicts (views of the source)."""

    components: dict[str, dict[str, torch.Tensor]]
    target: ConversionTarget
    lora_pairs: dict[str, LoraPair]  # diffusers module path -> ldm LoRA triple
    report: ConversionReport
    sources: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # comp -> our key -> source key


# --------------------------------------------------------------------------------------- loading
def load_official_checkpoint(src: str | os.PathLike, *, trust_pickle: bool = False,
                             report: ConversionReport | None = None) -> dict[str, torch.Tensor]:
    """Read a release checkpoint and return its flat state dict (``module.`` prefix still present).

    Loads with ``weights_only=True`` (plain tensors and containers only) and ``mmap=True`` (tensors stay
    on disk until read; files in the legacy non-zip format are read without mmap).

    Raises:
        WeightsError: the file is missing or is not a PyTorch checkpoint holding a state dict.
        UntrustedCheckpointError: the file needs full unpickling and ``trust_pickle`` is False.
    """
    path = Path(src).expanduser()
    problem = path_problem(path)  # (never opens a FIFO)
    if problem is not None:
        raise WeightsError(f"checkpoint not found: {path}" if problem == "not found"
                           else f"checkpoint {path} {problem}")

    def _load(mmap: bool):
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle, mmap=mmap)

    try:
        try:
            obj = _load(True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = _load(False)  # legacy (non-zip) serialization cannot be memory-mapped
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
        if not trust_pickle and m and _looks_like_torch_file(path):
            raise UntrustedCheckpointError(
                f"{path} cannot be loaded as plain tensors (it references {m.group(1)}): reading it would need full "
                "unpickling, which can run arbitrary code, so it is refused. The DPMesh release checkpoints load "
                "as plain tensors; this file was saved differently (see weights/README.md)."
            ) from None
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated, corrupt, or not a checkpoint: "
                           f"{type(e).__name__})") from None
    except (RuntimeError, KeyError, ValueError, EOFError, OSError, AttributeError, ImportError) as e:
        first = (str(e).splitlines() or [""])[0].split(". ")[0][:200]
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): "
                           f"{type(e).__name__}: {first}") from None
    return _unwrap(obj, where=str(path), report=report)


def _looks_like_torch_file(path: Path) -> bool:
    """Zip archive (torch.save since 1.6) or a pickle stream (legacy format, protocol >= 2)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _unwrap(obj: Any, *, where: str, report: ConversionReport | None) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where} holds a {type(obj).__name__}, not a state dict")
    for wrapper in ("network", "state_dict"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping) and not isinstance(inner, torch.Tensor):
            if report is not None:
                report.unwrapped = wrapper
                report.ignored_top_level = sorted(str(k) for k in obj if k != wrapper)
            obj = inner
            break
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(f"{where} is not a flat state dict of tensors; non-tensor entries: {', '.join(bad[:10])}"
                           + (f" ... ({len(bad) - 10} more)" if len(bad) > 10 else ""))
    if not obj:
        raise WeightsError(f"{where} holds an empty state dict")
    return dict(obj)


# --------------------------------------------------------------------------------------- mapping

def map_official_state_dict(state: Mapping[str, torch.Tensor], *, check_duplicates: bool = True,
                            target: ConversionTarget | None = None,
                            report: ConversionReport | None = None) -> MappedCheckpoint:
    """Map an official state dict (real, memory-mapped or ``meta`` tensors) onto our components.

    Args:
        state: the flat state dict (``module.`` prefix optional).
        check_duplicates: compare the duplicated subtrees with the kept copy (cheap when they share
            storage, as in files written by ``torch.save``).
        target: the architecture (default :meth:`ConversionTarget.release`).
    Returns:
        :class:`MappedCheckpoint` with component state dicts (views; nothing copied) and the report.
    Raises:
        WeightsError: unknown keys (listed), disagreeing duplicates, an unsupported variant (VQ-VAE,
            LoRA in the ControlNet, a ControlNet hint block), or incomplete LoRA triples.
    """
    target = target or ConversionTarget.release()
    report = report or ConversionReport()
    keys = list(state)
    report.module_prefix = any(k.startswith("module.") for k in keys)
    flat = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if len(flat) != len(state):
        raise WeightsError("the checkpoint holds the same key with and without the 'module.' prefix")
    dd = dedupe(flat, check=check_duplicates)
    flat = dd.state
    report.duplicates, report.duplicates_check = dd.removed, dd.check
    for dup, n in dd.promoted.items():
        report.notes.append(f"{n} {dup}* tensor(s) had no copy under the canonical prefix and were used instead")
    detect_vq_variant(flat, target.regressor.pose_latent_dim)

    buckets: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    dropped: dict[str, list[str]] = defaultdict(list)
    unknown: list[str] = []
    for key, t in flat.items():
        c = classify_key(key)
        if c is None:
            unknown.append(key)
        elif c[0].startswith("drop:"):
            dropped[c[0][5:]].append(key)
        else:
            buckets[c[0]][c[1]] = t
    if unknown:
        raise WeightsError(
            f"the checkpoint has {len(unknown)} key(s) that are not part of the DPMesh release layout "
            "(not a DPMesh VPoser checkpoint, or a different version): "
            + ", ".join(sorted(unknown)[:15]) + (f" ... ({len(unknown) - 15} more)" if len(unknown) > 15 else ""))
    for part in ("unet", "controlnet", "vae", "adapter", "regressor", "pose_decoder"):
        if not buckets.get(part):
            raise WeightsError(f"the checkpoint has no {part} weights; not a DPMesh release checkpoint")

    components: dict[str, dict[str, torch.Tensor]] = {}
    sources: dict[str, dict[str, str]] = {}
    # --- VAE (encoder + quant_conv)
    vae = buckets["vae"]
    plan = plan_ldm_to_diffusers("vae", {k: v.shape for k, v in vae.items()}, target.vae)
    components["vae"] = apply_plan(plan, vae)
    sources["vae"] = {d: SD + "first_stage_model." + e.key for d, e in plan.items()}

    # --- ControlNet: no LoRA, no hint block
    cn = buckets["controlnet"]
    odd = sorted(k for k in cn if ".lora_down." in k or ".lora_up." in k or ".linear." in k)
    if odd:
        raise WeightsError(f"LoRA inside the ControlNet is not supported (upstream has none): {', '.join(odd[:6])}")
    hint = sorted(k for k in cn if k.startswith("input_hint_block."))
    if hint:
        raise WeightsError("the ControlNet has a hint encoder (control_model.input_hint_block.*), which DPMesh's "
                           "ControlNet does not have (heatmaps are concatenated to the latent): not a DPMesh "
                           "checkpoint")
    plan = plan_ldm_to_diffusers("controlnet", {k: v.shape for k, v in cn.items()}, target.controlnet)
    components["controlnet"] = apply_plan(plan, cn)
    sources["controlnet"] = {d: SD + "control_model." + e.key for d, e in plan.items()}

    # --- UNet base + LoRA
    unet = buckets["unet"]
    renamed, pairs = split_lora({k: v.shape for k, v in unet.items()}, where="the UNet")
    plan = plan_ldm_to_diffusers("unet", {plain: unet[orig].shape for plain, orig in renamed.items()}, target.unet)
    plan = {d: dataclasses.replace(e, key=renamed[e.key]) for d, e in plan.items()}
    components["unet"] = apply_plan(plan, unet)
    sources["unet"] = {d: SD + "model.diffusion_model." + e.key for d, e in plan.items()}
    by_source = {e.key: d for d, e in plan.items()}
    lora: dict[str, torch.Tensor] = {}
    lora_pairs: dict[str, LoraPair] = {}
    for pair in pairs:
        dkey = by_source[renamed[pair.ldm_name + ".weight"]]
        module = dkey[: -len(".weight")]
        lora[f"{module}.lora_A.weight"] = unet[pair.down_key]
        lora[f"{module}.lora_B.weight"] = unet[pair.up_key]
        lora_pairs[module] = pair
        ldm = SD + "model.diffusion_model."
        sources.setdefault("unet_lora", {}).update({f"{module}.lora_A.weight": ldm + pair.down_key,
                                                    f"{module}.lora_B.weight": ldm + pair.up_key})
    components["unet_lora"] = lora
    ranks = sorted({p.rank for p in pairs})
    if len(ranks) > 1:
        raise WeightsError(f"LoRA ranks differ between layers ({ranks}); only one rank is supported")
    if not pairs:
        raise WeightsError("the UNet has no LoRA (no *.lora_down/lora_up/linear triples); DPMesh's UNet always "
                           "carries LoRA")
    report.lora_rank, report.lora_targets = ranks[0], len(pairs)

    # --- our own components
    components["adapter"] = dict(buckets["adapter"])
    components["regressor"] = dict(buckets["regressor"])
    components["pose_decoder"] = dict(buckets["pose_decoder"])
    sources["adapter"] = {k: ("backbone." + k if k.startswith("outmodules.") else k) for k in components["adapter"]}
    sources["regressor"] = {k: k for k in components["regressor"]}
    sources["pose_decoder"] = {k: VPOSER + k for k in components["pose_decoder"]}

    two_layer = any(k.startswith("kp_lifting.0.") for k in components["adapter"])
    target = dataclasses.replace(target, backbone=dataclasses.replace(
        target.backbone, lora_rank=ranks[0], lora_alpha=ranks[0], joint_token_layers=2 if two_layer else 1))

    report.mapped = {name: len(components[name]) for name in COMPONENT_ORDER}
    report.dropped = {DROP_REASONS[r]: sorted(dropped[r]) for r in DROP_REASONS if dropped.get(r)}
    accounted = (sum(len(b) for b in buckets.values()) + sum(len(v) for v in dropped.values())
                 + sum(report.duplicates.values()))
    if accounted != len(state):
        raise RuntimeError(f"internal error: {accounted} of {len(state)} source keys accounted for")
    if len(components["unet"]) + len(lora) != len(unet):  # a triple X.linear.* + 2 LoRA -> X.* + lora_A/B
        raise RuntimeError("internal error: UNet tensors lost during renaming")
    return MappedCheckpoint(components, target, lora_pairs, report, sources)


# --------------------------------------------------------------------------------------- verification
def _meta_like(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in state.items()}


def verify_mapped(mapped: MappedCheckpoint):
    """Check every component against the target modules built on ``meta`` (keys and shapes, exactly).

    Uses the loaders' own checks (``DiffusionBackbone.load_component_states``,
    :func:`~dpmesh_infer.models.io.check_state_dict`), so a folder that passes loads. Returns the meta
    :class:`~dpmesh_infer.models.backbone.DiffusionBackbone` (its diffusers configs are written from it).

    Raises:
        WeightsError: missing / unexpected keys or wrong shapes (listed per component), or LoRA on
            Linears other than the ones the backbone wraps.
    """
    from ..models.backbone import DiffusionBackbone
    from ..models.io import check_state_dict
    from ..models.pose_decoders import build_pose_decoder
    from ..models.regressor import Regressor

    t, c = mapped.target, mapped.components
    bb = DiffusionBackbone.build(t.backbone, dict(t.unet), dict(t.controlnet), dict(t.vae), device="meta")
    expected = set(bb.lora_target_modules())
    found = set(mapped.lora_pairs)
    if found != expected:
        extra = sorted(found - expected)
        miss = sorted(expected - found)
        parts = []
        if extra:
            parts.append(f"LoRA on {len(extra)} Linear(s) the backbone does not wrap: "
                         + ", ".join(f"{m} (ldm {mapped.lora_pairs[m].ldm_name})" for m in extra[:6]))
        if miss:
            parts.append(f"no LoRA on {len(miss)} Linear(s) the backbone wraps: {', '.join(miss[:6])}")
        raise WeightsError("the checkpoint's LoRA coverage differs from DPMesh's (attn1/attn2 q/k/v/out and "
                           "ff.net.0.proj of every UNet transformer block):\n  " + "\n  ".join(parts))
    with torch.device("meta"):
        regressor = Regressor(t.regressor)
        decoder = build_pose_decoder(t.pose_decoder)
    known = {"vae": bb.vae.state_dict(), "unet": bb.unet_base_state_dict(), "controlnet": bb.controlnet.state_dict(),
             "adapter": bb.adapter.state_dict(), "regressor": regressor.state_dict(),
             "pose_decoder": decoder.state_dict()}
    extra = [f"{mapped.sources.get(comp, {}).get(k, k)} (-> {comp} {k})"
             for comp, keys in known.items() for k in sorted(set(c[comp]) - set(keys))]
    if extra:
        raise WeightsError(f"the checkpoint has {len(extra)} tensor(s) that the target architecture does not have: "
                           + "; ".join(extra[:10]) + (f" ... ({len(extra) - 10} more)" if len(extra) > 10 else ""))
    bb.load_component_states(_meta_like(c["vae"]), _meta_like(c["unet"]), _meta_like(c["unet_lora"]),
                             _meta_like(c["controlnet"]), _meta_like(c["adapter"]),
                             where={"vae": "converted vae", "unet": "converted unet", "lora": "converted unet LoRA",
                                    "cn": "converted controlnet", "adapter": "converted adapter (kp_lifting, "
                                                                             "outmodules)"})
    check_state_dict(regressor, c["regressor"], where="converted regressor")
    check_state_dict(decoder, c["pose_decoder"], where="converted pose decoder")
    return bb


# --------------------------------------------------------------------------------------- writing
def _cast(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return dict(state)
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}


def write_mapped(mapped: MappedCheckpoint, out_dir: str | os.PathLike, *, dtype: torch.dtype | None = None,
                 overwrite: bool = False, source_name: str = "", backbone=None) -> Path:
    """Write the weights folder through ``weights.layout.write_weights_dir`` (staging folder, swapped into
    place at the end).

    Components are written one at a time (peak memory ≈ the largest component, the UNet). With
    ``overwrite``, an existing non-empty ``out_dir`` is replaced; its ``smpl/`` folder (imported
    separately, never part of a checkpoint) is carried over.

    Args:
        dtype: write floating-point tensors in this dtype (e.g. ``torch.float16`` for a half-size copy);
            None keeps the stored dtype (float32 for the release files).
        backbone: the meta backbone from :func:`verify_mapped` (built here when None).
    """
    from .. import __version__
    from ..models.io import save_diffusers_component, save_safetensors
    from .layout import COMPONENT_BY_NAME, PIPELINE_CONFIG_NAME, write_weights_dir

    if any(v.is_meta for comp in mapped.components.values() for v in comp.values()):
        raise WeightsError("cannot write meta tensors (the mapping was run without data)")
    bb = backbone if backbone is not None else verify_mapped(mapped)
    t, comps = mapped.target, mapped.components
    diffusers_models = {"vae": bb.vae, "unet": bb.unet, "controlnet": bb.controlnet}
    our_configs = {"adapter": t.backbone, "regressor": t.regressor, "pose_decoder": t.pose_decoder}

    def fill(tmp: Path) -> None:
        for name in COMPONENT_ORDER:
            cfg_path, weights_path = COMPONENT_BY_NAME[name].paths(tmp)
            state = _cast(comps[name], dtype)
            if name in diffusers_models:
                save_diffusers_component(diffusers_models[name], state, cfg_path.parent)
                continue
            cfg_path.parent.mkdir(parents=True, exist_ok=True)
            if name == "unet_lora":
                bb.lora_config.save_pretrained(str(cfg_path.parent))
            else:
                our_configs[name].save_json(cfg_path)
            save_safetensors(state, weights_path)
        source = f"converted from {source_name or 'an official DPMesh checkpoint'} by dpmesh_infer {__version__}"
        PipelineConfig(pose_decoder=t.pose_decoder.type, source=source).save_json(tmp / PIPELINE_CONFIG_NAME)

    return write_weights_dir(Path(out_dir).expanduser(), fill, overwrite=overwrite, require_smpl=False,
                             keep_smpl=True)


# --------------------------------------------------------------------------------------- entry point
def convert_official(src: str | os.PathLike, out_dir: str | os.PathLike, *, trust_pickle: bool = False,
                     check_duplicates: bool = True, smpl: str = "drop", overwrite: bool = False,
                     dtype: torch.dtype | None = None, target: ConversionTarget | None = None) -> ConversionReport:
    """Convert an official DPMesh release checkpoint into a weights directory in our format.

    Args:
        src: ``3dpw_best_ckpt.pth.tar`` (or ``3dpw-oc``/``3dpw-pc``/``3dpw-crowd``).
        out_dir: the weights directory to create (must be absent or empty unless ``overwrite``).
        trust_pickle: allow full unpickling (arbitrary code!) for files from a trusted source that
            cannot be read with ``weights_only=True``.
        check_duplicates: verify that the duplicated subtrees equal the kept copy.
        smpl: what to do with the SMPL buffers inside the checkpoint; only "drop" (import SMPL with
            ``dpmesh weights import-smpl``).
        overwrite: replace a non-empty ``out_dir`` (its ``smpl/`` folder is kept).
        dtype: write floating-point tensors in this dtype (``torch.float16`` halves the size); default
            keeps float32.
        target: architecture to convert into (default: the release model).
    Returns:
        :class:`ConversionReport`.
    Raises:
        WeightsError, UntrustedCheckpointError, InputError (bad options or output directory).
    """
    if smpl != "drop":
        raise InputError(f"smpl={smpl!r} is not supported; the only option is 'drop' (import SMPL with "
                         "`dpmesh weights import-smpl`)")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    src, out = Path(src).expanduser(), Path(out_dir).expanduser()
    check_output_dir(out, overwrite)  # fail before the expensive load
    refuse_overwriting_inputs(inputs=[("checkpoint", src)], trees=[out])
    check_writable_dir(out.parent)
    report = ConversionReport(source=src, dtype=str(dtype).replace("torch.", "") if dtype else None)
    state = load_official_checkpoint(src, trust_pickle=trust_pickle, report=report)
    mapped = map_official_state_dict(state, check_duplicates=check_duplicates, target=target, report=report)
    bb = verify_mapped(mapped)
    report.output = write_mapped(mapped, out, dtype=dtype, overwrite=overwrite, source_name=src.name, backbone=bb)
    report.notes.append(f"SMPL is not converted: run `{FIX_SMPL.format(dir=report.output)}`"
                        + (" (an existing smpl/ folder was kept)" if (report.output / SMPL_DIR).is_dir() else ""))
    return report
