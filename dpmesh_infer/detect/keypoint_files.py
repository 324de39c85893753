"""Compatibility alias: keypoint files are read by :mod:`dpmesh_infer.keypoint_files` (also
``dpmesh_infer.read_keypoints``)."""

from ..keypoint_files import *  # noqa: F401,F403
from ..keypoint_files import __all__  # noqa: F401
