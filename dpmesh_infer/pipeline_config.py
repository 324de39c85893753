"""The top-level ``pipeline.json`` of a weights directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .config import ConfigBase
from .errors import ConfigError, WeightsError
from .preprocess import PreprocessConfig

FORMAT_VERSION = 1
PIPELINE_CONFIG_NAME = "pipeline.json"

#: Component sub-folders of a weights directory (see docs/CONTRACTS.md and weights/README.md).
COMPONENTS = ("vae", "unet", "unet_lora", "controlnet", "adapter", "regressor", "pose_decoder")


@dataclass(frozen=True)
class PipelineConfig(ConfigBase):
    """What a weights directory holds and how the pipeline runs it.

    Attributes:
        format_version: version of this on-disk format (currently 1).
        pose_decoder: "vposer" (official release checkpoints) or "vqvae" (the paper's prior); must
            match ``pose_decoder/config.json``. The pipeline never guesses.
        preprocess: crop/heatmap parameters (release values by default).
        focal_per_image: use each person's own image for the focal length sqrt(W^2 + H^2). The release
            used the first sample of a batch for the whole batch; with same-size images (as in its
            evaluation) both agree.
        source: free-form provenance (e.g. the converted checkpoint's file name).
        untrained: true for randomly initialised weights (selftest, tests); results are meaningless.
    """

    format_version: int = FORMAT_VERSION
    pose_decoder: Literal["vposer", "vqvae"] = "vposer"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    focal_per_image: bool = True
    source: str = ""
    untrained: bool = False

    def __post_init__(self):
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(
                f"pipeline.json format_version {self.format_version} is not supported by this version "
                f"(expects {FORMAT_VERSION}); re-convert the weights with this version of dpmesh"
            )


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
