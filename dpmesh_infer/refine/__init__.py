"""Keypoint refinement of the network's bodies, SMPLify-X style (``dpmesh predict --refine``).

:class:`RefineConfig` (the settings, light to import) is what ``Pipeline(..., refine=...)`` takes;
:mod:`.fit` holds the batched optimiser, :mod:`.losses` its terms, :mod:`.apply` the pipeline hook.
"""

from .config import RefineConfig

__all__ = ["RefineConfig"]
