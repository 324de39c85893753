"""The one manifest of a weights directory: every file, what it is, how a missing one is fixed, and the
one way a weights directory is written.

::

    DIR/pipeline.json                      PipelineConfig (models/dpmesh.py)
    DIR/vae/         diffusers AutoencoderKL (encoder + quant_conv)
    DIR/unet/        diffusers UNet2DConditionModel (base weights, LoRA not merged)
    DIR/unet_lora/   peft LoRA adapter of the UNet
    DIR/controlnet/  diffusers ControlNetModel (34 input channels, no hint block)
    DIR/adapter/     BackboneAdapter (joint tokens, merge convs)     config.json + model.safetensors
    DIR/regressor/   Regressor                                       config.json + model.safetensors
    DIR/pose_decoder/ VPoser or VQ-VAE decoder                       config.json + model.safetensors
    DIR/smpl/SMPL_NEUTRAL.npz              SMPL neutral (dpmesh weights import-smpl)
    DIR/smpl/SMPL_NEUTRAL.pkl              optional: the same for smplx and other SMPL tools (import-smpl --pkl)
    DIR/smpl/J_regressor_extra.npy         optional: head-top joint (row 3)
    DIR/smpl/J_regressor_h36m.npy          optional: the 17 H36M joints for dpmesh evaluate
    DIR/detectors/                         mmpose detector checkpoints (dpmesh weights fetch)

Completeness is "every file of :func:`required_files` exists"; :func:`missing_message` lists the
absent ones with the command that fixes each. :func:`write_weights_dir` is used by the converter, the
trainer's export, the stand-in builder and ``Pipeline.save_pretrained``: a staging folder is filled,
checked, and swapped into place, so ``DIR`` is always either the old or the new complete directory.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..atomic import replace_dir, staging_dir
from ..errors import ConfigError, InputError, WeightsError
from ..models.io import DIFFUSERS_FILES, OUR_FILES, PEFT_FILES

if TYPE_CHECKING:
    from ..models.dpmesh import PipelineConfig

PIPELINE_CONFIG_NAME = "pipeline.json"
SMPL_DIR = "smpl"
SMPL_FILE = "SMPL_NEUTRAL.npz"
#: The chumpy-free pickle of the same model for smplx / other SMPL tools (``import-smpl --pkl``); smplx's
#: own folder convention (``smplx.create(DIR, model_type="smpl", gender="neutral")`` reads it).
SMPL_PKL_FILE = "SMPL_NEUTRAL.pkl"
EXTRA_REGRESSOR_FILE = "J_regressor_extra.npy"
H36M_REGRESSOR_FILE = "J_regressor_h36m.npy"
#: Files that travel with SMPL when a weights directory is copied or exported (used when present).
OPTIONAL_SMPL_FILES = (EXTRA_REGRESSOR_FILE, H36M_REGRESSOR_FILE, SMPL_PKL_FILE)
DETECTORS_DIR = "detectors"


@dataclass(frozen=True)
class Component:
    """One component folder: ``folder`` holds ``files`` (config first, then weights)."""

    name: str
    folder: str
    files: tuple[str, str]
    what: str

    def paths(self, root: str | Path) -> tuple[Path, Path]:
        """(config path, weights path) of this component under the weights directory ``root``."""
        d = Path(root) / self.folder
        return d / self.files[0], d / self.files[1]


#: The network components of a weights directory, in the order they are written.
COMPONENTS: tuple[Component, ...] = (
    Component("vae", "vae", DIFFUSERS_FILES, "SD1.5 VAE encoder + quant_conv (diffusers)"),
    Component("unet", "unet", DIFFUSERS_FILES, "SD1.5 UNet base weights (diffusers)"),
    Component("unet_lora", "unet_lora", PEFT_FILES, "UNet LoRA (peft)"),
    Component("controlnet", "controlnet", DIFFUSERS_FILES, "ControlNet, 34 input channels (diffusers)"),
    Component("adapter", "adapter", OUR_FILES, "joint tokens + merge convs"),
    Component("regressor", "regressor", OUR_FILES, "transformer regressor"),
    Component("pose_decoder", "pose_decoder", OUR_FILES, "pose decoder (VPoser or VQ-VAE)"),
)
COMPONENT_BY_NAME = {c.name: c for c in COMPONENTS}

#: The commands that create each kind of file (``{dir}`` is the weights directory).
FIX_CONVERT = "dpmesh weights convert-official /path/to/3dpw_best_ckpt.pth.tar --out {dir}"
FIX_SMPL = "dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights {dir}"
FIX_DETECTOR = "dpmesh weights fetch --detector {name} --weights {dir}"


def component_dir(root: str | Path, name: str) -> Path:
    """``root/<folder of component name>``."""
    return Path(root) / COMPONENT_BY_NAME[name].folder


def backbone_folders(root: str | Path) -> dict[str, Path]:
    """The keyword arguments of ``DiffusionBackbone.from_folders`` / ``save_folders`` for ``root``."""
    from ..models.backbone import BACKBONE_PARTS

    return {name: component_dir(root, name) for name in BACKBONE_PARTS}


def smpl_file(root: str | Path) -> Path:
    """``root/smpl/SMPL_NEUTRAL.npz``."""
    return Path(root) / SMPL_DIR / SMPL_FILE


def smpl_pkl_file(root: str | Path) -> Path:
    """``root/smpl/SMPL_NEUTRAL.pkl`` (optional, for smplx)."""
    return Path(root) / SMPL_DIR / SMPL_PKL_FILE


def detectors_dir(root: str | Path) -> Path:
    """``root/detectors`` (cached, converted detector checkpoints)."""
    return Path(root) / DETECTORS_DIR


def network_files() -> list[str]:
    """Relative paths of pipeline.json and every component file (what a conversion writes)."""
    out = [PIPELINE_CONFIG_NAME]
    for c in COMPONENTS:
        out += [f"{c.folder}/{f}" for f in c.files]
    return out


def required_files(*, smpl: bool = True) -> list[str]:
    """Relative paths of every file a complete weights directory holds (SMPL included with ``smpl``)."""
    return network_files() + ([f"{SMPL_DIR}/{SMPL_FILE}"] if smpl else [])


def missing_files(root: str | Path, *, smpl: bool = True) -> list[str]:
    """The required files absent under ``root`` (empty when complete)."""
    root = Path(root)
    return [rel for rel in required_files(smpl=smpl) if not (root / rel).is_file()]


def fix_command(rel: str, root: str | Path) -> str:
    """The command that creates the missing file ``rel`` of the weights directory ``root``."""
    return (FIX_SMPL if rel.startswith(f"{SMPL_DIR}/") else FIX_CONVERT).format(dir=root)


def fix_detector_command(name: str, root: str | Path) -> str:
    return FIX_DETECTOR.format(name=name, dir=root)


def missing_message(root: Path, source: str, missing: Sequence[str], searched: Sequence[str]) -> str:
    """One message for an incomplete weights directory: each missing file, where we looked, the fixes."""
    lines = [f"weights directory {root} (from {source}) is incomplete; missing:"]
    lines += [f"    {root / m}" for m in missing]
    lines.append("  looked in: " + "; ".join(searched))
    lines.append("  fix with:")
    lines += [f"    {f}" for f in dict.fromkeys(fix_command(m, root) for m in missing)]
    lines.append("  (see weights/README.md for where to obtain each file)")
    return "\n".join(lines)


def load_pipeline_config(root: str | Path) -> PipelineConfig:
    """``root/pipeline.json`` as a :class:`PipelineConfig`.

    Raises:
        WeightsError: missing (with the command that creates it) or invalid (naming the file and the field).
    """
    from ..models.dpmesh import PipelineConfig

    path = Path(root) / PIPELINE_CONFIG_NAME
    if not path.is_file():
        raise WeightsError(f"{path} not found: {root} is not a dpmesh weights directory.\n"
                           f"  Create one with: {FIX_CONVERT.format(dir=root)}")
    try:
        return PipelineConfig.load_json(path)
    except ConfigError as e:
        raise WeightsError(f"invalid {path}: {e}") from e


def copy_smpl(smpl_npz: str | Path, dest_root: str | Path) -> None:
    """Copy a clean SMPL file to ``dest_root/smpl/SMPL_NEUTRAL.npz``, with the optional regressors
    found beside it."""
    smpl_npz, dest = Path(smpl_npz), Path(dest_root) / SMPL_DIR
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(smpl_npz, dest / SMPL_FILE)
    for name in OPTIONAL_SMPL_FILES:
        if (smpl_npz.parent / name).is_file():
            shutil.copy2(smpl_npz.parent / name, dest / name)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """InputError unless ``out`` can become a weights directory: absent, an empty folder, or ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"output directory {out} is not empty; choose another one or pass --overwrite")


def write_weights_dir(out_dir: str | Path, fill: Callable[[Path], object], *, overwrite: bool = True,
                      require_smpl: bool = True, keep_smpl: bool = False) -> Path:
    """Write a weights directory atomically: ``fill(staging)`` writes the files into a fresh staging
    folder next to ``out_dir``, which is checked for completeness and then swapped into place.

    Args:
        fill: writes the files (any of the layout above) into the folder it is given.
        overwrite: replace an existing, non-empty ``out_dir`` (else :class:`InputError`).
        require_smpl: the result must hold ``smpl/SMPL_NEUTRAL.npz`` (False for a conversion, which
            has no SMPL; it is imported separately).
        keep_smpl: when ``fill`` wrote no ``smpl/`` folder, carry over the existing directory's.

    Raises:
        InputError: ``out_dir`` is a file, or is not empty and ``overwrite`` is false.
        WeightsError: ``fill`` left required files out (a bug in the caller; the staging folder is removed).
    """
    out = Path(out_dir).expanduser()
    check_output_dir(out, overwrite)
    tmp = staging_dir(out)
    try:
        fill(tmp)
        if keep_smpl and not (tmp / SMPL_DIR).exists() and (out / SMPL_DIR).is_dir():
            shutil.copytree(out / SMPL_DIR, tmp / SMPL_DIR)
        missing = missing_files(tmp, smpl=require_smpl)
        if missing:
            raise WeightsError(f"writing {out} left out {', '.join(missing)}")
        return replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
