"""Every error this package raises on purpose, and the exit codes of the ``dpmesh`` commands.

One hierarchy, one table. The CLI prints only the message of a :class:`DpmeshError` (never a
traceback) and exits with the class's ``exit_code``; README.md's exit-code table is :data:`EXIT_CODES`
(a test compares them).

    DpmeshError                       1  generic failure / some inputs of a multi-input run failed
    ├── InputError                    2  usage error, bad input file or option
    │   ├── KeypointFileError            a keypoint file cannot be parsed or holds invalid values
    │   ├── ConfigError                  a configuration file or dict is invalid
    │   ├── DatasetError                 a dpmesh-dataset folder is malformed
    │   ├── UnknownDetectorError         no built-in detector of that name
    │   └── OutputConflictError          an output would overwrite an input, or is locked by another run
    ├── WeightsError                  3  weights missing, incomplete, invalid, or not matching the model
    │   ├── UntrustedCheckpointError     a checkpoint needs full unpickling and was not trusted
    │   ├── DetectorWeightsError         detector checkpoint missing, not downloadable or corrupt
    │   └── CheckpointError              a training checkpoint is truncated, corrupt or incompatible
    ├── ImageError                    4  the single input image is unusable
    ├── VideoError                    4  a video (or frame sequence) cannot be opened or decoded, has no
    │                                    video stream or no frames
    ├── NoPersonError                 4  no usable person in the single input
    └── DependencyError               5  an optional component needed for what was asked is missing
        ├── DetectorStackError           the OpenMMLab stack (mmpose) cannot be imported
        ├── CompiledOpUnavailable        an mmcv compiled op was called under the pure-Python stand-in
        └── RenderError                  no headless OpenGL backend, or a render failed
"""

from __future__ import annotations

#: Exit codes of every ``dpmesh`` command (README.md "Exit codes" documents exactly these).
EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2
EXIT_WEIGHTS = 3
EXIT_UNUSABLE_INPUT = 4
EXIT_DEPENDENCY = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success (every image done, or finished in an earlier run)",
    EXIT_PARTIAL: "some inputs failed (the others finished); or an unexpected failure",
    EXIT_USAGE: "usage error or bad input file (options, keypoints, config, dataset, output path)",
    EXIT_WEIGHTS: "weights missing or invalid (the message lists each file and the command that fixes it)",
    EXIT_UNUSABLE_INPUT: "the single input is unusable (unreadable image, no person found)",
    EXIT_DEPENDENCY: "an optional component needed for what was asked is missing (detector stack, renderer, Ray)",
    EXIT_INTERRUPTED: "interrupted with Ctrl-C (SIGINT); finished work is kept, re-run to resume",
    EXIT_TERMINATED: "terminated (SIGTERM); finished work is kept, re-run to resume",
}


class DpmeshError(Exception):
    """Base class of every error this package raises on purpose."""

    exit_code: int = EXIT_PARTIAL


class InputError(DpmeshError):
    """A user-supplied file or argument is malformed (keypoint file, config, option value)."""

    exit_code = EXIT_USAGE


class KeypointFileError(InputError):
    """A keypoint file cannot be parsed or holds invalid values."""


class ConfigError(InputError):
    """A configuration file or dict is invalid (unknown keys, wrong types)."""


class DatasetError(InputError):
    """A dpmesh-dataset folder is malformed (the message names the file, line and field)."""


class UnknownDetectorError(InputError):
    """``--detector NAME`` names no built-in detector (a usage error, not missing weights)."""


class OutputConflictError(InputError):
    """An output path is also an input of the same run, or the output folder is locked by another run."""


class WeightsError(DpmeshError):
    """Weights are missing, incomplete, or do not match the architecture."""

    exit_code = EXIT_WEIGHTS


class UntrustedCheckpointError(WeightsError):
    """A checkpoint needs full unpickling and the user did not opt in to trust it."""


class DetectorWeightsError(WeightsError):
    """A detector checkpoint is missing, cannot be downloaded, or fails its checksum."""


class CheckpointError(WeightsError):
    """A training checkpoint is truncated, corrupt, or does not match the run."""


class ImageError(DpmeshError):
    """An image cannot be read or decoded."""

    exit_code = EXIT_UNUSABLE_INPUT


class VideoError(DpmeshError):
    """A video file or frame sequence is unusable: not openable (corrupt, truncated), no video stream,
    no frames, or frames that cannot be decoded."""

    exit_code = EXIT_UNUSABLE_INPUT


class NoPersonError(DpmeshError):
    """No usable person was found in an image."""

    exit_code = EXIT_UNUSABLE_INPUT


class DependencyError(DpmeshError):
    """An optional component needed for what was asked is not installed or does not work."""

    exit_code = EXIT_DEPENDENCY


class DetectorStackError(DependencyError):
    """The OpenMMLab stack (mmengine / mmcv / mmdet / mmpose) is missing or cannot be imported."""


class CompiledOpUnavailable(DependencyError, RuntimeError):
    """An mmcv compiled op was called while only the pure-Python stand-in is installed."""


class RenderError(DependencyError):
    """No headless OpenGL backend could be started, or a render failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C (the CLI's handler raises it) so every cleanup path that keeps
    finished work runs; the command then exits with :data:`EXIT_TERMINATED` (143)."""
