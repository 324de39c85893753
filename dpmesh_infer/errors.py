"""Typed errors. The CLI maps each class to a distinct exit code and prints only the message.

Exit codes (documented in README.md):
    0  success
    1  some inputs of a multi-input run failed (others finished)
    2  usage error / bad input file (keypoints file, config)  -> InputError
    3  weights missing or invalid                             -> WeightsError
    4  the single input is unusable (unreadable image, no person found) -> ImageError, NoPersonError
"""

from __future__ import annotations


class DpmeshError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code: int = 1


class InputError(DpmeshError):
    """A user-supplied file or argument is malformed (keypoint file, config, option value)."""

    exit_code = 2


class KeypointFileError(InputError):
    """A keypoint file cannot be parsed or holds invalid values."""


class ConfigError(InputError):
    """A configuration file or dict is invalid (unknown keys, wrong types)."""


class WeightsError(DpmeshError):
    """Weights are missing, incomplete, or do not match the architecture."""

    exit_code = 3


class UntrustedCheckpointError(WeightsError):
    """A checkpoint needs full unpickling and the user did not opt in to trust it."""


class ImageError(DpmeshError):
    """An image cannot be read or decoded."""

    exit_code = 4


class NoPersonError(DpmeshError):
    """No usable person was found in an image."""

    exit_code = 4
