"""Shared helpers for tests and self-checks: generated stand-ins for files that cannot ship here.

Nothing in this module is used by the inference path. Everything is deterministic given ``seed``.

Sections (keep them separate; each builder owns its own functions):

- Synthetic SMPL: :func:`make_synthetic_smpl_arrays`, :func:`write_synthetic_smpl_pkl`,
  :func:`write_synthetic_smpl_npz`. The real SMPL model is licensed and can never be downloaded by
  tests; these produce a body-shaped stand-in with the exact array shapes of the official file.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np

# =================================================================================================
# Synthetic SMPL
# =================================================================================================

#: Rest-pose joint positions (24, 3) in metres, SMPL frame (x = body left, y up, z forward),
#: roughly those of the real neutral SMPL template. The feet are near y = -1.2 and the head top near
#: y = +0.55, so the body is about 1.75 m tall.
SYNTHETIC_REST_JOINTS = np.array(
    [
        [0.000, -0.220, 0.020],  # 0 pelvis
        [0.060, -0.310, 0.010],  # 1 L_hip
        [-0.060, -0.310, 0.010],  # 2 R_hip
        [0.000, -0.110, -0.010],  # 3 spine1
        [0.100, -0.690, 0.010],  # 4 L_knee
        [-0.100, -0.690, 0.010],  # 5 R_knee
        [0.000, 0.030, 0.000],  # 6 spine2
        [0.080, -1.090, -0.030],  # 7 L_ankle
        [-0.080, -1.090, -0.030],  # 8 R_ankle
        [0.000, 0.080, 0.020],  # 9 spine3
        [0.120, -1.150, 0.090],  # 10 L_foot
        [-0.120, -1.150, 0.090],  # 11 R_foot
        [0.000, 0.290, -0.010],  # 12 neck
        [0.070, 0.190, 0.000],  # 13 L_collar
        [-0.070, 0.190, 0.000],  # 14 R_collar
        [0.000, 0.360, 0.040],  # 15 head
        [0.170, 0.230, -0.020],  # 16 L_shoulder
        [-0.170, 0.230, -0.020],  # 17 R_shoulder
        [0.430, 0.210, -0.040],  # 18 L_elbow
        [-0.430, 0.210, -0.040],  # 19 R_elbow
        [0.680, 0.220, -0.040],  # 20 L_wrist
        [-0.680, 0.220, -0.040],  # 21 R_wrist
        [0.760, 0.210, -0.050],  # 22 L_hand
        [-0.760, 0.210, -0.050],  # 23 R_hand
    ],
    dtype=np.float64,
)

#: SMPL kinematic tree: parent of each of the 24 joints (-1 for the root).
SMPL_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], dtype=np.int64
)

# Special vertices placed on the synthetic head so that face keypoints and the head top are plausible.
_HEAD_CENTRE = np.array([0.0, 0.45, 0.02])
_SPECIAL_VERTICES = {
    331: _HEAD_CENTRE + [0.0, 0.0, 0.10],  # nose (front is +z)
    2802: _HEAD_CENTRE + [0.035, 0.03, 0.085],  # L eye
    6262: _HEAD_CENTRE + [-0.035, 0.03, 0.085],  # R eye
    3489: _HEAD_CENTRE + [0.08, 0.0, 0.0],  # L ear
    3990: _HEAD_CENTRE + [-0.08, 0.0, 0.0],  # R ear
    411: _HEAD_CENTRE + [0.0, 0.10, 0.0],  # head top
}
_RING_SIZE = 16  # vertices per joint whose mean is exactly the rest joint (J_regressor rows)


def make_synthetic_smpl_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """A body-shaped stand-in for the SMPL neutral model, with the official array shapes.

    Returns plain arrays (float64 unless noted), keyed like the official file:

    - ``v_template`` (6890, 3) metres: vertices scattered around the 23 bones of
      :data:`SYNTHETIC_REST_JOINTS` (limb radius 4-12 cm) plus a head sphere; ~1.75 m tall.
    - ``shapedirs`` (6890, 3, 10): component 0 scales the body about the pelvis (3 % per unit),
      the others are small random offsets (about 3 mm per unit).
    - ``posedirs`` (6890, 3, 207): small random pose correctives (about 1 mm per unit).
    - ``J_regressor`` (24, 6890): each row averages a symmetric ring of 16 vertices around its joint,
      so the regressed rest joints equal :data:`SYNTHETIC_REST_JOINTS`; rows sum to 1.
    - ``weights`` (6890, 24): skinning weights, Gaussian in the distance to the joints, 4 non-zero
      per row, rows sum to 1.
    - ``kintree_table`` (2, 24) int64: row 0 = parents with the root parent stored as 4294967295
      exactly like the official file (uint32 -1), row 1 = 0..23.
    - ``f`` (13776, 3) uint32: triangles with distinct vertex indices (random topology).

    The face-keypoint vertices 331, 2802, 6262, 3489, 3990 and the head-top vertex 411 sit on the
    head at plausible places.
    """
    rng = np.random.default_rng(seed)
    n_v, n_j = 6890, 24
    joints = SYNTHETIC_REST_JOINTS
    v = np.zeros((n_v, 3))
    free = np.ones(n_v, dtype=bool)
    for idx, pos in _SPECIAL_VERTICES.items():
        v[idx] = pos
        free[idx] = False

    # Joint rings: symmetric offsets so that the mean is exactly the joint.
    j_reg = np.zeros((n_j, n_v))
    candidates = rng.permutation(np.flatnonzero(free))
    ring_ids = candidates[: n_j * _RING_SIZE].reshape(n_j, _RING_SIZE)
    for j in range(n_j):
        half = rng.normal(size=(_RING_SIZE // 2, 3))
        half *= 0.03 / np.linalg.norm(half, axis=1, keepdims=True)
        v[ring_ids[j]] = joints[j] + np.concatenate([half, -half])
        j_reg[j, ring_ids[j]] = 1.0 / _RING_SIZE
    free[ring_ids.ravel()] = False

    # Remaining vertices: around bones (child joint c and its parent) and a head sphere.
    rest = np.flatnonzero(free)
    n_head = 600
    head_ids, bone_ids = rest[:n_head], rest[n_head:]
    d = rng.normal(size=(n_head, 3))
    v[head_ids] = _HEAD_CENTRE + 0.1 * d / np.linalg.norm(d, axis=1, keepdims=True)
    child = rng.integers(1, n_j, size=bone_ids.size)
    t = rng.uniform(0.0, 1.0, size=bone_ids.size)[:, None]
    axis_pts = joints[SMPL_PARENTS[child]] + t * (joints[child] - joints[SMPL_PARENTS[child]])
    radius = np.where(np.isin(child, [1, 2, 3, 6, 9]), 0.12, np.where(child >= 18, 0.04, 0.07))
    d = rng.normal(size=(bone_ids.size, 3))
    v[bone_ids] = axis_pts + radius[:, None] * d / np.linalg.norm(d, axis=1, keepdims=True)

    # Skinning weights: Gaussian in the distance to each joint, top 4 kept, rows sum to 1.
    dist2 = ((v[:, None, :] - joints[None, :, :]) ** 2).sum(-1)
    logits = -dist2 / (2 * 0.08**2)
    keep = np.argsort(-logits, axis=1)[:, :4]
    w = np.zeros((n_v, n_j))
    sel = np.take_along_axis(logits, keep, axis=1)
    sel = np.exp(sel - sel.max(axis=1, keepdims=True))
    np.put_along_axis(w, keep, sel / sel.sum(axis=1, keepdims=True), axis=1)

    shapedirs = rng.normal(scale=0.003, size=(n_v, 3, 10))
    shapedirs[:, :, 0] = 0.03 * (v - joints[0])
    posedirs = rng.normal(scale=0.001, size=(n_v, 3, 207))

    kintree = np.stack([SMPL_PARENTS, np.arange(n_j)]).astype(np.int64)
    kintree[0, 0] = 4294967295
    faces = np.stack([rng.choice(n_v, size=3, replace=False) for _ in range(13776)]).astype(np.uint32)
    return {
        "v_template": v,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": j_reg,
        "weights": w,
        "kintree_table": kintree,
        "f": faces,
    }


_FAKE_CHUMPY_CH = textwrap.dedent(
    '''
    """Test stand-in for chumpy.ch: only what pickling a Ch needs (state layout of chumpy's Ch)."""
    import numpy as np


    class Ch(object):
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

        def __getstate__(self):
            # chumpy pickles its __dict__ minus the weak-reference bookkeeping (_parents, _cache)
            return dict(self.__dict__)

        def __setstate__(self, d):
            self.__dict__.update(d)
    '''
)


@contextlib.contextmanager
def _fake_chumpy() -> Iterator[Any]:
    """Make ``import chumpy.ch`` resolve to a throw-away package for the duration of the block."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "chumpy" or k.startswith("chumpy.")}
    with tempfile.TemporaryDirectory(prefix="fake_chumpy_") as tmp:
        pkg = Path(tmp) / "chumpy"
        pkg.mkdir()
        (pkg / "__init__.py").write_text("from .ch import Ch\n", encoding="utf-8")
        (pkg / "ch.py").write_text(_FAKE_CHUMPY_CH, encoding="utf-8")
        sys.path.insert(0, tmp)
        try:
            import chumpy.ch  # noqa: PLC0415  (the fake one)

            yield chumpy.ch
        finally:
            sys.path.remove(tmp)
            for k in [k for k in sys.modules if k == "chumpy" or k.startswith("chumpy.")]:
                del sys.modules[k]
            sys.modules.update(saved)


def write_synthetic_smpl_pkl(
    path: str | Path, with_chumpy: bool = True, *, seed: int = 0, protocol: int = 2
) -> Path:
    """Write a synthetic SMPL neutral model laid out like the official ``.pkl``.

    With ``with_chumpy`` (default) the file mirrors ``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``:
    ``shapedirs`` is a ``chumpy.ch.Ch`` object (pickled through a temporary fake ``chumpy``
    package, so the file references ``chumpy.ch.Ch`` exactly like real files; the package is gone
    afterwards), ``J_regressor`` and ``J_regressor_prior`` are ``scipy.sparse.csc_matrix``, ``f``
    is uint32, the root parent in ``kintree_table`` is 4294967295, and the extra entries of the
    official file are present (``J``, ``weights_prior``, ``vert_sym_idxs``, ``bs_style``,
    ``bs_type``, ``pose_training_info``). Without it, every entry is a plain ndarray (like files
    that were already cleaned of chumpy). ``protocol`` 2 is what Python-2 era files use.
    """
    import scipy.sparse as sp

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = make_synthetic_smpl_arrays(seed)
    if not with_chumpy:
        with open(path, "wb") as fh:
            pickle.dump(arrays, fh, protocol=protocol)
        return path

    data: dict[str, Any] = dict(arrays)
    data["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
    data["J_regressor_prior"] = sp.csc_matrix(arrays["J_regressor"])
    data["weights_prior"] = arrays["weights"].copy()
    data["J"] = arrays["J_regressor"] @ arrays["v_template"]
    data["vert_sym_idxs"] = np.arange(6890, dtype=np.int64)[::-1].copy()
    data["bs_style"] = "lbs"
    data["bs_type"] = "lrotmin"
    data["pose_training_info"] = {"num_subjects": 1, "data_type": "synthetic", "lambdas": [1.0, 0.5]}
    with _fake_chumpy() as ch:
        data["shapedirs"] = ch.Ch(arrays["shapedirs"])
        with open(path, "wb") as fh:
            pickle.dump(data, fh, protocol=protocol)
    return path


def write_synthetic_smpl_npz(
    weights_dir: str | Path, *, seed: int = 0, extra_regressor: bool = False
) -> Path:
    """Write ``weights_dir/smpl/SMPL_NEUTRAL.npz`` (our clean format) from the synthetic model.

    With ``extra_regressor``, also writes ``weights_dir/smpl/J_regressor_extra.npy`` (9, 6890) whose
    row 3 (head top) averages four vertices around the synthetic head top. Returns the npz path.
    """
    from .weights.smpl import EXTRA_REGRESSOR_FILENAME, smpl_folder, validate_smpl_arrays, write_smpl_npz

    arrays = validate_smpl_arrays(make_synthetic_smpl_arrays(seed), where="synthetic SMPL")
    folder = smpl_folder(weights_dir)
    out = write_smpl_npz(arrays, folder)
    if extra_regressor:
        extra = np.zeros((9, 6890))
        extra[3, [411, 331, 3489, 3990]] = [0.7, 0.1, 0.1, 0.1]
        for r in (0, 1, 2, 4, 5, 6, 7, 8):
            extra[r, 100 + r] = 1.0
        np.save(folder / EXTRA_REGRESSOR_FILENAME, extra)
    return out


#: H36M joint -> SMPL joint whose synthetic J_regressor row stands in for it (pelvis, R hip, R knee,
#: R ankle, L hip, L knee, L ankle, spine, thorax, neck/nose, head, L shoulder, L elbow, L wrist,
#: R shoulder, R elbow, R wrist).
_H36M_FROM_SMPL = (0, 2, 5, 8, 1, 4, 7, 3, 9, 12, 15, 16, 18, 20, 17, 19, 21)


def write_synthetic_h36m_regressor(folder: str | Path, *, seed: int = 0) -> Path:
    """Write ``folder/J_regressor_h36m.npy`` (17, 6890) for the synthetic body: each H36M joint is the
    synthetic J_regressor row of the nearest SMPL joint (a stand-in for smoke runs of ``dpmesh
    evaluate``; NOT the real H36M regressor, whose numbers it does not reproduce)."""
    j = make_synthetic_smpl_arrays(seed)["J_regressor"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "J_regressor_h36m.npy"
    np.save(path, np.asarray(j[list(_H36M_FROM_SMPL)], dtype=np.float64), allow_pickle=False)
    return path


# =================================================================================================
# Tiny checkpoint in the official release format (tests of weights/convert_official.py)
# =================================================================================================
#
# The diffusers -> ldm renaming below is written from the naming rules of the two code bases (CompVis
# ``openaimodel.UNetModel`` / ``cldm.ControlNet`` / ``ldm`` VAE ``Encoder`` vs diffusers), independently
# of the converter, which uses diffusers' own ldm -> diffusers functions. Converting the tiny
# checkpoint back must therefore reproduce the tiny diffusers weights exactly.

import dataclasses  # noqa: E402  (this section's own import)

_RESNET_LDM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP_LDM = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                 "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
                 "controlnet_mid_block": "middle_block_out.0"}
_VAE_ATTN_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet_rest_to_ldm(rest: str) -> str:
    head, tail = rest.split(".", 1)
    return f"{_RESNET_LDM[head]}.{tail}"


def diffusers_unet_key_to_ldm(key: str, layers_per_block: int, up_block_types: tuple[str, ...] = ()) -> str:
    """ldm name of a diffusers UNet2DConditionModel / ControlNetModel key (SD1.x layout).

    ldm numbers the UNet's layers flat: ``input_blocks`` = conv_in, then per down block
    ``layers_per_block`` (resnet[, attention]) layers and a downsampler; ``middle_block`` = resnet,
    attention, resnet; ``output_blocks`` = per up block ``layers_per_block + 1`` (resnet[, attention]
    [, upsampler]) layers. Inside a layer, index 0 is the resnet (or the downsampler ``op``), 1 the
    attention (or the upsampler when there is no attention), 2 the upsampler after an attention.
    ControlNet zero convs: ``controlnet_down_blocks.i`` -> ``zero_convs.i.0``.
    """
    import re

    n = layers_per_block
    for d, ldm in _UNET_TOP_LDM.items():
        if key.startswith(d + "."):
            return ldm + key[len(d):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        layer = b * (n + 1) + j + 1
        return (f"input_blocks.{layer}.0.{_resnet_rest_to_ldm(rest)}" if kind == "resnets"
                else f"input_blocks.{layer}.1.{rest}")
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (n + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet_rest_to_ldm(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        layer = b * (n + 1) + j
        return (f"output_blocks.{layer}.0.{_resnet_rest_to_ldm(rest)}" if kind == "resnets"
                else f"output_blocks.{layer}.1.{rest}")
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        slot = 2 if up_block_types[b].startswith("CrossAttn") else 1
        return f"output_blocks.{b * (n + 1) + n}.{slot}.conv.{m[2]}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
        return f"zero_convs.{m[1]}.0.{m[2]}"
    raise KeyError(f"no ldm name for diffusers UNet key {key!r}")


def diffusers_vae_key_to_ldm(key: str) -> tuple[str, bool]:
    """(ldm name, conv1x1) of a diffusers AutoencoderKL encoder-side key; conv1x1: the ldm tensor is the
    diffusers linear weight with two trailing unit dimensions (mid-block attention q/k/v/proj_out)."""
    import re

    simple = {"encoder.conv_in": "encoder.conv_in", "encoder.conv_out": "encoder.conv_out",
              "encoder.conv_norm_out": "encoder.norm_out", "quant_conv": "quant_conv",
              "post_quant_conv": "post_quant_conv"}
    for d, ldm in simple.items():
        if key.startswith(d + "."):
            return ldm + key[len(d):], False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}", False
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}", False
    if m := re.fullmatch(r"encoder\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.mid.block_{int(m[1]) + 1}.{m[2]}", False
    if m := re.fullmatch(r"encoder\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)",
                         key):
        return f"encoder.mid.attn_1.{_VAE_ATTN_LDM[m[1]]}.{m[2]}", m[1] != "group_norm" and m[2] == "weight"
    raise KeyError(f"no ldm name for diffusers VAE key {key!r}")


@dataclasses.dataclass
class TinyOfficialCheckpoint:
    """What :func:`make_tiny_official_checkpoint` wrote.

    Attributes:
        path: the checkpoint file.
        state: the flat state dict as written (with ``module.`` unless disabled; before any wrapper).
            Duplicated subtrees are the same tensor objects (as in the release).
        expected: our components' state dicts that converting must reproduce exactly (keys as in
            ``docs/CONTRACTS.md``: "vae", "unet", "unet_lora", "controlnet", "adapter", "regressor",
            "pose_decoder").
        target: the :class:`~dpmesh_infer.weights.convert_official.ConversionTarget` of the tiny model.
        backbone, regressor, pose_decoder: the source modules (eval mode).
    """

    path: Path
    state: dict
    expected: dict
    target: Any
    backbone: Any
    regressor: Any
    pose_decoder: Any


def make_tiny_official_checkpoint(path: str | Path, *, seed: int = 0, wrapper: str | None = None,
                                  module_prefix: bool = True, position_ids: bool = False) -> TinyOfficialCheckpoint:
    """Write a tiny checkpoint laid out exactly like an official DPMesh release file.

    Built from tiny random modules (``tiny.tiny_configs()``: SD1.5 structure at small widths, LoRA
    rank 4 with non-zero ``lora_B``, non-zero ControlNet zero-convs) and renamed to ldm names with
    :func:`diffusers_unet_key_to_ldm` / :func:`diffusers_vae_key_to_ldm`. Contents, as in the release:
    ``module.`` prefix; ``backbone.sd_model.{model.diffusion_model, control_model (34-channel input,
    no hint block), first_stage_model (encoder, quant_conv, post_quant_conv)}``; LoRA triples
    ``X.linear.{weight,bias}`` + ``X.lora_down.weight`` + ``X.lora_up.weight``; the duplicated
    subtrees ``backbone.unet.unet.*`` and ``backbone.encoder_vq.*`` (same tensors, saved once); DDPM
    buffers; a few CLIP text-tower tensors; ``backbone.outmodules.*``, ``kp_lifting.*``; the regressor;
    VPoser encoder (with BatchNorm stats) + decoder; SMPL ``human_model_layer.th_*`` buffers (tiny).

    Args:
        wrapper: None (flat, as released) or "network"/"state_dict" (``{wrapper: state, "epoch": 0}``).
        module_prefix: add ``module.`` (DDP) to every key.
        position_ids: add the CLIP ``embeddings.position_ids`` buffer (transformers < 4.31 saved it).
    """
    import torch
    from peft.utils import get_peft_model_state_dict

    from .backbone import ADAPTER_NAME, DiffusionBackbone
    from .pose_decoders import build_pose_decoder
    from .regressor import Regressor
    from .tiny import tiny_configs
    from .weights.convert_official import ConversionTarget

    b_cfg, r_cfg, d_cfg, unet_cfg, cn_cfg, vae_cfg = tiny_configs("vposer")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=gen) * scale

    bb = DiffusionBackbone.build(b_cfg, unet_cfg, cn_cfg, vae_cfg)
    with torch.no_grad():  # zero-initialised parts must matter for the test
        for name, p in bb.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(rnd(*p.shape))
        for m in list(bb.controlnet.controlnet_down_blocks) + [bb.controlnet.controlnet_mid_block]:
            m.weight.copy_(rnd(*m.weight.shape))
            m.bias.copy_(rnd(*m.bias.shape))
    regressor = Regressor(r_cfg).eval()
    decoder = build_pose_decoder(d_cfg).eval()
    expected = {
        "vae": dict(bb.vae.state_dict()),
        "unet": bb.unet_base_state_dict(),
        "unet_lora": get_peft_model_state_dict(bb.unet, adapter_name=ADAPTER_NAME),
        "controlnet": dict(bb.controlnet.state_dict()),
        "adapter": dict(bb.adapter.state_dict()),
        "regressor": dict(regressor.state_dict()),
        "pose_decoder": dict(decoder.state_dict()),
    }
    expected = {c: {k: v.detach().clone() for k, v in s.items()} for c, s in expected.items()}

    sd: dict[str, torch.Tensor] = {}
    lpb, up_types = unet_cfg["layers_per_block"], tuple(unet_cfg["up_block_types"])
    lora_modules = {k[: -len(".lora_A.weight")] for k in expected["unet_lora"] if k.endswith(".lora_A.weight")}
    unet_p = "backbone.sd_model.model.diffusion_model."
    for k, v in expected["unet"].items():
        module, leaf = k.rsplit(".", 1)
        if module in lora_modules:
            x = diffusers_unet_key_to_ldm(module + ".weight", lpb, up_types)[: -len(".weight")]
            sd[f"{unet_p}{x}.linear.{leaf}"] = v
        else:
            sd[unet_p + diffusers_unet_key_to_ldm(k, lpb, up_types)] = v
    for module in sorted(lora_modules):
        x = diffusers_unet_key_to_ldm(module + ".weight", lpb, up_types)[: -len(".weight")]
        sd[f"{unet_p}{x}.lora_down.weight"] = expected["unet_lora"][module + ".lora_A.weight"]
        sd[f"{unet_p}{x}.lora_up.weight"] = expected["unet_lora"][module + ".lora_B.weight"]
    for k, v in expected["controlnet"].items():
        sd["backbone.sd_model.control_model." + diffusers_unet_key_to_ldm(k, cn_cfg["layers_per_block"])] = v
    vae_keys = {}
    for k, v in expected["vae"].items():
        ldm, conv = diffusers_vae_key_to_ldm(k)
        vae_keys["first_stage_model." + ldm] = v[:, :, None, None] if conv else v
    lat = vae_cfg["latent_channels"]
    vae_keys["first_stage_model.post_quant_conv.weight"] = rnd(lat, lat, 1, 1)
    vae_keys["first_stage_model.post_quant_conv.bias"] = rnd(lat)
    for k, v in vae_keys.items():
        sd["backbone.sd_model." + k] = v

    t_steps = 10
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                 "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                 "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                 "posterior_mean_coef1", "posterior_mean_coef2", "logvar"):
        sd["backbone.sd_model." + name] = torch.rand(t_steps, generator=gen)
    clip = "backbone.sd_model.cond_stage_model.transformer."
    sd[clip + "embeddings.token_embedding.weight"] = rnd(16, 8)
    sd[clip + "embeddings.position_embedding.weight"] = rnd(7, 8)
    sd[clip + "encoder.layers.0.self_attn.q_proj.weight"] = rnd(8, 8)
    sd[clip + "final_layer_norm.weight"] = rnd(8)
    sd[clip + "final_layer_norm.bias"] = rnd(8)
    if position_ids:
        sd[clip + "embeddings.position_ids"] = torch.arange(7).unsqueeze(0)

    for k in [k for k in sd if k.startswith("backbone.sd_model.")]:  # same module registered twice
        sd["backbone.unet.unet." + k[len("backbone.sd_model."):]] = sd[k]
    for k, v in vae_keys.items():
        sd["backbone.encoder_vq." + k[len("first_stage_model."):]] = v

    for k, v in expected["adapter"].items():
        sd[("backbone." + k) if k.startswith("outmodules.") else k] = v
    sd.update(expected["regressor"])
    for k, v in expected["pose_decoder"].items():
        sd["vposer.vposer." + k] = v
    hid, lat_dim = d_cfg.hidden_dim, d_cfg.latent_dim
    enc = {"bodyprior_enc_fc1.weight": rnd(hid, 63), "bodyprior_enc_fc1.bias": rnd(hid),
           "bodyprior_enc_fc2.weight": rnd(hid, hid), "bodyprior_enc_fc2.bias": rnd(hid),
           "bodyprior_enc_mu.weight": rnd(lat_dim, hid), "bodyprior_enc_mu.bias": rnd(lat_dim),
           "bodyprior_enc_logvar.weight": rnd(lat_dim, hid), "bodyprior_enc_logvar.bias": rnd(lat_dim)}
    for bn, c in (("bodyprior_enc_bn1", 63), ("bodyprior_enc_bn2", hid)):
        enc.update({f"{bn}.weight": 1 + rnd(c), f"{bn}.bias": rnd(c), f"{bn}.running_mean": rnd(c),
                    f"{bn}.running_var": 1 + rnd(c).abs(), f"{bn}.num_batches_tracked": torch.tensor(7)})
    for k, v in enc.items():
        sd["vposer.vposer." + k] = v
    n_v = 20
    sd.update({"human_model_layer.th_betas": rnd(1, 10), "human_model_layer.th_shapedirs": rnd(n_v, 3, 10),
               "human_model_layer.th_posedirs": rnd(n_v, 3, 207), "human_model_layer.th_v_template": rnd(1, n_v, 3),
               "human_model_layer.th_J_regressor": rnd(24, n_v), "human_model_layer.th_weights": rnd(n_v, 24),
               "human_model_layer.th_faces": torch.randint(0, n_v, (10, 3), generator=gen)})

    sd = {k: v.detach() for k, v in sd.items()}
    if module_prefix:
        sd = {"module." + k: v for k, v in sd.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 0}, path)
    target = ConversionTarget(b_cfg, r_cfg, d_cfg, unet_cfg, cn_cfg, vae_cfg)
    bb.eval()
    return TinyOfficialCheckpoint(path, sd, expected, target, bb, regressor, decoder)


# --------------------------------------------------------------------------- random detector weights


def write_random_rtmo_checkpoint(path: str | Path, *, name: str = "rtmo-s", seed: int = 0):
    """Build a random-init RTMO from mmpose's shipped config (its own init: finite outputs) and save its
    state dict as a checkpoint at ``path``. Needs the OpenMMLab stack. Returns (model, path, config path)."""
    import logging
    import warnings

    import torch

    from .detect import detectors as D
    from .detect.mmpose_compat import import_mmpose

    import_mmpose()
    from mmengine.logging import MMLogger
    from mmpose.apis import init_model

    MMLogger.get_current_instance().setLevel(logging.ERROR)
    cfg = D.config_path(D.DETECTORS[name].pose.config)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = init_model(str(cfg), None, device="cpu")
        model.init_weights()
    path = Path(path)
    torch.save({"state_dict": model.state_dict()}, path)
    return model, path, cfg
