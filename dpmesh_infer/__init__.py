"""dpmesh_infer: 3D human meshes (SMPL) from photos of crowded, occluded scenes, built on DPMesh.

Importing the package runs nothing and imports nothing heavy: the public names below are resolved
on first use (diffusers, smplx, mmpose and pyrender are imported by the stage that needs them).

    from dpmesh_infer import Pipeline
    pipe = Pipeline.from_pretrained("~/.cache/dpmesh")
    out = pipe(["a.jpg"], keypoints=[kp_a])      # -> PipelineOutput of ImageResult of Person
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .focal import FocalChoice
    from .images import load_image
    from .keypoint_files import KeypointPerson, KeypointSet, read_keypoints
    from .models.dpmesh import PipelineConfig
    from .outputs import ImageResult, Person, PipelineOutput
    from .pipeline import Pipeline
    from .refine import RefineConfig

#: public name -> module that defines it (relative to this package)
_PUBLIC = {
    "Pipeline": ".pipeline",
    "PipelineConfig": ".models.dpmesh",
    "PipelineOutput": ".outputs",
    "ImageResult": ".outputs",
    "Person": ".outputs",
    "load_image": ".images",
    "read_keypoints": ".keypoint_files",
    "KeypointPerson": ".keypoint_files",
    "KeypointSet": ".keypoint_files",
    "FocalChoice": ".focal",
    "RefineConfig": ".refine",
}

__all__ = ["Pipeline", "PipelineConfig", "PipelineOutput", "ImageResult", "Person", "load_image", "read_keypoints",
           "KeypointPerson", "KeypointSet", "FocalChoice", "RefineConfig", "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name], __name__), name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'dpmesh_infer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
