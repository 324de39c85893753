"""Component folders on disk, and strict loading.

Three folder formats: ours (``config.json`` + ``model.safetensors``, :data:`OUR_FILES`), diffusers
models (``config.json`` + ``diffusion_pytorch_model.safetensors``, :data:`DIFFUSERS_FILES`) and peft
adapters (``adapter_config.json`` + ``adapter_model.safetensors``, :data:`PEFT_FILES`).

Loading is strict: a state dict that does not match the module exactly raises
:class:`~dpmesh_infer.errors.WeightsError` listing missing and unexpected keys (and shape mismatches).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..errors import WeightsError

if TYPE_CHECKING:  # torch is imported by the functions that use it: the file names above stay cheap to import
    import torch

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
#: (config, weights) file names of each folder format.
OUR_FILES = (CONFIG_NAME, WEIGHTS_NAME)
DIFFUSERS_FILES = (CONFIG_NAME, "diffusion_pytorch_model.safetensors")
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _fmt_keys(keys: list[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, where: str) -> None:
    """Raise WeightsError unless ``state`` has exactly the keys and shapes of ``module.state_dict()``."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = [f"weights in {where} do not match the model"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt_keys(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches ({len(wrong)}): {'; '.join(wrong[:8])}")
        raise WeightsError("\n  ".join(parts))


def load_state_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], *, where: str) -> None:
    """Check then load ``state`` into ``module`` (strict, with shape check; works for meta modules too)."""
    check_state_dict(module, state, where=where)
    module.load_state_dict(dict(state), strict=True, assign=any(p.is_meta for p in module.parameters()))


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared or non-contiguous storage: store independent contiguous copies
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    save_file(clean, str(path))


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise WeightsError(f"cannot read weights file {path}: {e}") from e


def save_component(module: torch.nn.Module, config, directory: str | Path) -> Path:
    """Write ``config.json`` (a ConfigBase) and ``model.safetensors`` (the module's state dict)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config.save_json(directory / CONFIG_NAME)
    save_safetensors(module.state_dict(), directory / WEIGHTS_NAME)
    return directory


def save_diffusers_component(model, state: Mapping[str, torch.Tensor], directory: str | Path) -> Path:
    """Write a diffusers model's ``config.json`` and ``state`` as ``diffusion_pytorch_model.safetensors``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_config(directory)
    save_safetensors(state, directory / DIFFUSERS_FILES[1])
    return directory


def load_component(directory: str | Path, config_cls, build, *, what: str, device="cpu") -> torch.nn.Module:
    """Read ``<directory>/config.json`` (``config_cls``), build the module on the meta device with
    ``build(config)`` and fill it strictly from ``model.safetensors``; returns it on ``device`` in eval mode.

    Raises:
        WeightsError: a file is missing, or the weights do not match the config (keys/shapes listed).
        ConfigError: the config is invalid.
    """
    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise WeightsError(f"{what} config not found: {config_path}")
    config = config_cls.load_json(config_path)
    state = read_safetensors(directory / WEIGHTS_NAME)
    import torch

    with torch.device("meta"):
        module = build(config)
    load_state_strict(module, state, where=str(directory / WEIGHTS_NAME))
    return module.to(device).eval()
