"""The composed DPMesh network and its configuration (``pipeline.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigBase
from ..errors import ConfigError
from ..geometry.crops import PreprocessConfig

FORMAT_VERSION = 1


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
