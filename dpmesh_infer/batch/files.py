"""The files of one image's output folder (the layout is in :mod:`dpmesh_infer.batch`): their names, the
completion test, and the writer of a folder's bundle (data files, then ``people.json``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

#: In the output folder: one JSON line per image and run (`RunRecorder`).
MANIFEST_NAME = "manifest.jsonl"
#: Written last: its presence marks a finished image folder.
DONE_FILE = "people.json"
#: Written (before DONE_FILE) by runs with a renderer; a run with --render redoes folders without them.
RENDER_FILES = ("overlay.png", "side.png")
#: Files a folder run writes into each image's folder (``person_NN.obj`` besides).
OUTPUT_FILES = ("params.npz", "scene.glb", DONE_FILE) + RENDER_FILES


def finished_persons(folder: Path, require: Sequence[str] = ()) -> int | None:
    """Person count of a finished output folder (that also holds the ``require`` files), or None when
    it is not finished."""
    try:
        n = len(json.loads((folder / DONE_FILE).read_text())["persons"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return n if all((folder / name).is_file() for name in require) else None


class BundleWriter:
    """The files of one image's output folder, for results that share one face array (the OBJ face block
    and the GLB index block are built once): :meth:`write_data` then :meth:`write_done`.

    Data files are written atomically without fsync (:meth:`write_data` returns their paths); the caller
    makes them durable (:func:`dpmesh_infer.atomic.sync_files`, once per chunk) before
    :meth:`write_done` writes ``people.json``, the completion mark. So a ``people.json`` that survives a
    power loss always has its data files with it; one that does not (or that is cut) is redone.
    """

    def __init__(self, faces: np.ndarray) -> None:
        from ..writers.glb import GlbWriter
        from ..writers.obj import ObjWriter

        self.faces = np.asarray(faces)
        self.obj = ObjWriter(self.faces)
        self.glb = GlbWriter(self.faces)

    @staticmethod
    def warm_up() -> None:
        """The writers' one-time work of a process, ahead of the first image: the compiled loops
        (:func:`dpmesh_infer.writers.kernels.warm_up`, about 0.5 s of CPU) and pygltflib's import (up to
        0.3 s in a process that has torch and numba loaded: its dataclasses' ABC checks walk every loaded
        subclass). Folder runs call it on their commit thread while the first chunk is computed."""
        import pygltflib  # noqa: F401

        from ..writers.kernels import warm_up

        warm_up()

    def write_data(self, result, folder: Path, *, image: np.ndarray | None = None, renderer=None,
                   glb_photo: bool = False, glb_photo_depth: float | None = None) -> list[Path]:
        """params.npz, person_NN.obj, scene.glb and, with a ``renderer`` (and the photo ``image``),
        overlay.png and side.png; first removes the folder's completion mark and the files of an older run
        (old person meshes, renders, temporary files of a killed run). Returns the written paths."""
        from ..atomic import write_bytes
        from ..export import npz_bytes

        folder.mkdir(parents=True, exist_ok=True)
        (folder / DONE_FILE).unlink(missing_ok=True)  # redoing: the folder is unfinished until the end
        _remove_stale_outputs(folder)
        written = []
        if renderer is not None:
            write_renders(renderer, result, self.faces, image, folder / RENDER_FILES[0], folder / RENDER_FILES[1],
                          fsync=False)
            written += [folder / name for name in RENDER_FILES]
        written.append(write_bytes(folder / "params.npz", npz_bytes(result), fsync=False))
        for i, p in enumerate(result.persons):
            written.append(write_bytes(folder / f"person_{i:02d}.obj", self.obj(p.vertices), fsync=False))
        glb = self.glb(result, photo=image if glb_photo else None, photo_depth=glb_photo_depth)
        written.append(write_bytes(folder / "scene.glb", glb, fsync=False))
        return written

    @staticmethod
    def write_done(result, folder: Path, *, fsync: bool = False) -> Path:
        """people.json, the completion mark (after the data files are durable)."""
        from ..atomic import write_bytes
        from ..export import json_bytes

        return write_bytes(folder / DONE_FILE, json_bytes(result), fsync=fsync)


def _remove_stale_outputs(folder: Path) -> None:
    """Remove what an older run left in ``folder`` besides the files a run replaces anyway: its person
    meshes (``person_*.obj``: the person count may have changed), renders and temporary files of a
    killed run (``.*.tmp``). One directory listing (a new folder: one empty listing)."""
    with os.scandir(folder) as entries:
        stale = [e.path for e in entries if not e.is_dir(follow_symlinks=False) and (
            e.name in RENDER_FILES or (e.name.startswith("person_") and e.name.endswith(".obj"))
            or (len(e.name) >= 5 and e.name.startswith(".") and e.name.endswith(".tmp")))]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def write_image_outputs(result, faces: np.ndarray, folder: Path, *, image: np.ndarray | None = None,
                        renderer=None, glb_photo: bool = False, glb_photo_depth: float | None = None) -> None:
    """One image's folder, durable when it returns: params.npz, person_NN.obj, scene.glb, with a
    ``renderer`` (and the photo ``image``) overlay.png and side.png, then people.json (the completion
    mark), all atomic. ``glb_photo``: scene.glb also holds ``image`` as a textured quad at
    ``glb_photo_depth`` metres (default: behind the farthest person). Folder runs use
    :class:`BundleWriter` directly (one sync per chunk)."""
    from ..atomic import sync_files

    writer = BundleWriter(faces)
    written = writer.write_data(result, folder, image=image, renderer=renderer, glb_photo=glb_photo,
                                glb_photo_depth=glb_photo_depth)
    sync_files(written, folder)
    writer.write_done(result, folder, fsync=True)


def write_renders(renderer, result, faces: np.ndarray, image: np.ndarray, overlay_path: Path,
                  side_path: Path, *, fsync: bool = True) -> None:
    """Render the overlay over ``image`` and the side view (image size), written atomically as PNG; also
    fills every person's occlusion ratio (``visibility``, from the rendered depth of all people)."""
    from ..analysis.visibility import add_occlusion_ratios
    from ..atomic import write_bytes
    from ..render import encode_png

    add_occlusion_ratios(result, renderer, faces)

    overlay = renderer.overlay(image, result, faces)
    side = renderer.side_view(result, faces, size=(image.shape[1], image.shape[0]))
    write_bytes(overlay_path, encode_png(overlay), fsync=fsync)
    write_bytes(side_path, encode_png(side), fsync=fsync)

