"""The layout of a weights directory: every file, where it comes from, and how to fix a missing one."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, WeightsError
from ..models.dpmesh import PipelineConfig

PIPELINE_CONFIG_NAME = "pipeline.json"

#: Component sub-folders of a weights directory (see docs/CONTRACTS.md and weights/README.md).
COMPONENTS = ("vae", "unet", "unet_lora", "controlnet", "adapter", "regressor", "pose_decoder")


def load_pipeline_config(weights_dir: str | Path) -> PipelineConfig:
    path = Path(weights_dir) / PIPELINE_CONFIG_NAME
    if not path.is_file():
        raise WeightsError(
            f"{path} not found: {weights_dir} is not a dpmesh weights directory.\n"
            "  Create one with: dpmesh weights convert-official /path/to/3dpw_best_ckpt.pth.tar --out "
            f"{weights_dir}"
        )
    try:
        return PipelineConfig.load_json(path)
    except ConfigError as e:
        raise WeightsError(f"invalid {path}: {e}") from e
