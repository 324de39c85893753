"""dpmesh_infer: 3D human meshes (SMPL) from photos of crowded, occluded scenes, built on DPMesh.

Importing the package is cheap: heavy dependencies (diffusers, smplx, mmpose, pyrender) are imported
by the stage that needs them. Public names are resolved lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Pipeline", "PipelineOutput", "Person", "load_image", "__version__"]


def __getattr__(name: str):
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    if name in ("PipelineOutput", "Person"):
        from . import outputs

        return getattr(outputs, name)
    if name == "load_image":
        from .images import load_image

        return load_image
    raise AttributeError(f"module 'dpmesh_infer' has no attribute {name!r}")
