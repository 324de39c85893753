"""Folder runs: many images -> one output folder per image, resumable, with a manifest.

Layout of ``OUT`` (documented in README.md)::

    OUT/manifest.jsonl            one JSON line per image and run, appended as each image finishes
    OUT/<rel>/params.npz          plain arrays (export.save_npz)
    OUT/<rel>/person_NN.obj       one mesh per person, photo camera frame (OpenCV axes)
    OUT/<rel>/scene.glb           every person, glTF camera frame
    OUT/<rel>/overlay.png         with --render: all people over the photo (shared depth buffer)
    OUT/<rel>/side.png            with --render: the people seen from the side
    OUT/<rel>/people.json         parameters (export.result_to_dict) -- written LAST

``<rel>`` is the image's path relative to the input folder (or glob base) without its suffix.

Completion: an image is finished when its ``people.json`` exists and parses. Every file is written
atomically and ``people.json`` last, so an interrupted run leaves either a finished folder or one that
is redone on the next run. A re-run skips finished images unless ``overwrite``; redoing an image first
removes its ``people.json`` (and old ``person_NN.obj``), so a folder is never half old, half new.

Images go through in chunks: the persons of all images of a chunk share network batches; the chunk's
files are written by a background thread while the next chunk is computed. One bad image (unreadable,
no keypoints, no person, a failed write) is recorded as ``failed`` and the run goes on.

Modules: :mod:`.plan` (which images, where their folders are), :mod:`.records` (records, summary,
manifest), :mod:`.keypoints` (keypoint sources), :mod:`.files` (one folder's files and their writer),
:mod:`.runner` (:class:`BatchRunner`, the local engine; the Ray engine is
:mod:`dpmesh_infer.engines.ray_data`).
"""

from .files import (
    DONE_FILE,
    MANIFEST_NAME,
    OUTPUT_FILES,
    RENDER_FILES,
    BundleWriter,
    finished_persons,
    write_image_outputs,
    write_renders,
)
from .keypoints import DetectorKeypoints, FileKeypoints, ImageKeypoints, KeypointSource
from .plan import BatchPlan, check_plan_outputs, check_writable, output_folder, plan_batch, recheck_plan
from .records import BatchSummary, ImageRecord, RunRecorder
from .runner import BatchRunner, default_writers

__all__ = [
    "DONE_FILE", "MANIFEST_NAME", "OUTPUT_FILES", "RENDER_FILES", "BatchPlan", "BatchRunner", "BatchSummary",
    "BundleWriter", "DetectorKeypoints", "FileKeypoints", "ImageKeypoints", "ImageRecord", "KeypointSource",
    "RunRecorder", "check_plan_outputs", "check_writable", "default_writers", "finished_persons",
    "output_folder", "plan_batch", "recheck_plan", "write_image_outputs", "write_renders",
]
