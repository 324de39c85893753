"""The keypoint detectors we ship: a literal table from name to mmpose config and published weights.

Every config ships inside the installed mmpose 1.3.2 wheel (``mmpose/.mim/...``); every checkpoint URL
is copied from a metafile or source file of that same wheel (named per entry in ``source``) and
matches the mmpose model zoo (``projects/rtmo/README.md``). OpenMMLab's file names carry the first 8
hex digits of the file's sha256 (``tools/misc/publish_model.py``: ``-{sha[:8]}_{date}.pth``); that
prefix is checked after download.

Published checkpoints keep numpy arrays in ``meta`` and fail ``torch.load(weights_only=True)``. They
are converted once into a state-dict-only file that does load with ``weights_only=True``; the
conversion never runs code from the file (see :func:`convert_checkpoint`). Cache layout::

    <weights dir>/detectors/<published file name>            optional: a file you placed there by hand
    <weights dir>/detectors/<published stem>.state_dict.pth  what the detector loads

Set ``DPMESH_NO_DOWNLOAD=1`` to forbid downloads (an error then says where to put the file).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..atomic import write_with
from ..errors import DetectorWeightsError, UnknownDetectorError
from ..weights import layout

logger = logging.getLogger(__name__)

CONVERTED_SUFFIX = ".state_dict.pth"
NO_DOWNLOAD_ENV = "DPMESH_NO_DOWNLOAD"


@dataclass(frozen=True)
class ModelFiles:
    """One network: its config inside an installed package, and its published checkpoint.

    config: ``"<package>:<path under the package's .mim folder>"``; url: OpenMMLab download server;
    sha256: a full hex digest or the 8-hex prefix OpenMMLab puts in file names; source: where the URL
    was found.
    """

    config: str
    url: str
    sha256: str
    source: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def converted_name(self) -> str:
        return self.file_name.removesuffix(".pth") + CONVERTED_SUFFIX


@dataclass(frozen=True)
class DetectorSpec:
    """A named detector. kind "bottomup": one network finds people and keypoints (RTMO); "topdown": a
    person detector (``person``, mmdet) then a pose network on each box (``pose``).
    input_size (w, h) of the pose network's input in pixels."""

    name: str
    kind: Literal["bottomup", "topdown"]
    pose: ModelFiles
    person: ModelFiles | None
    input_size: tuple[int, int]
    notes: str

    def files(self) -> tuple[ModelFiles, ...]:
        return (self.pose,) if self.person is None else (self.person, self.pose)


_RTMO = "https://download.openmmlab.com/mmpose/v1/projects/rtmo/"
_RTMO_CFG = "mmpose:configs/body_2d_keypoint/rtmo/body7/"
_RTMO_SRC = "mmpose 1.3.2 .mim/configs/body_2d_keypoint/rtmo/body7/rtmo_body7.yml (also projects/rtmo/README.md)"
_BODY7 = ("Trained on body7 (AI Challenger, COCO, CrowdPose, MPII, sub-JHMDB, Halpe, PoseTrack18); "
          "outputs the 17 COCO keypoints.")  # fmt: skip

DETECTORS: dict[str, DetectorSpec] = {
    "rtmo-l": DetectorSpec(
        name="rtmo-l",
        kind="bottomup",
        pose=ModelFiles(
            config=_RTMO_CFG + "rtmo-l_16xb16-600e_body7-640x640.py",
            url=_RTMO + "rtmo-l_16xb16-600e_body7-640x640-b37118ce_20231211.pth",
            sha256="b37118ce",
            source=_RTMO_SRC,
        ),
        person=None,
        input_size=(640, 640),
        notes="Default for crowds. RTMO-l, one-stage (no person detector; cost barely grows with the "
        "number of people). COCO val AP 0.748. " + _BODY7,
    ),
    "rtmo-m": DetectorSpec(
        name="rtmo-m",
        kind="bottomup",
        pose=ModelFiles(
            config=_RTMO_CFG + "rtmo-m_16xb16-600e_body7-640x640.py",
            url=_RTMO + "rtmo-m_16xb16-600e_body7-640x640-39e78cc4_20231211.pth",
            sha256="39e78cc4",
            source=_RTMO_SRC,
        ),
        person=None,
        input_size=(640, 640),
        notes="RTMO-m, one-stage. COCO val AP 0.726. " + _BODY7,
    ),
    "rtmo-s": DetectorSpec(
        name="rtmo-s",
        kind="bottomup",
        pose=ModelFiles(
            config=_RTMO_CFG + "rtmo-s_8xb32-600e_body7-640x640.py",
            url=_RTMO + "rtmo-s_8xb32-600e_body7-640x640-dac2bf74_20231211.pth",
            sha256="dac2bf74",
            source=_RTMO_SRC,
        ),
        person=None,
        input_size=(640, 640),
        notes="RTMO-s, one-stage, fastest. COCO val AP 0.686. " + _BODY7,
    ),
    "rtmdet-m+rtmpose-m": DetectorSpec(
        name="rtmdet-m+rtmpose-m",
        kind="topdown",
        person=ModelFiles(
            config="mmpose:demo/mmdetection_cfg/rtmdet_m_640-8xb32_coco-person.py",
            url="https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/"
            "rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth",
            sha256="235e8209",
            source="mmpose 1.3.2 mmpose/apis/inferencers/utils/default_det_models.py (default 'human' detector)",
        ),
        pose=ModelFiles(
            config="mmpose:configs/body_2d_keypoint/rtmpose/body8/rtmpose-m_8xb256-420e_body8-256x192.py",
            url="https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/"
            "rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504.pth",
            sha256="e48f03d0",
            source="mmpose 1.3.2 .mim/configs/body_2d_keypoint/rtmpose/body8/rtmpose_body8-coco.yml",
        ),
        input_size=(192, 256),
        notes="Top-down: RTMDet-m person detector (COCO + Objects365, needs mmdet) then RTMPose-m on each "
        "box (body7, COCO-17 output). Cost grows with the number of people; better on large, "
        "well-separated people.",
    ),
}

DEFAULT_DETECTOR = "rtmo-l"


def get_spec(name: str) -> DetectorSpec:
    try:
        return DETECTORS[name]
    except KeyError:
        raise UnknownDetectorError(
            f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)} "
            "(or give --det-config and --det-checkpoint)"
        ) from None


def config_path(ref: str) -> Path:
    """``"mmpose:configs/..."`` -> the file inside the installed package's ``.mim`` folder.

    Finds the package without importing it. Raises DetectorWeightsError if it is not installed.
    """
    import importlib.util

    package, _, rel = ref.partition(":")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        from .mmpose_compat import INSTALL_HINT, DetectorStackError

        raise DetectorStackError(f"{package} is not installed (needed for the config {ref}).\n  {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / ".mim" / rel
    if not path.is_file():
        raise DetectorWeightsError(f"config {rel} not found in the installed {package} ({path}); "
                                   "is it the version install.sh installs?")  # fmt: skip
    return path


# --------------------------------------------------------------------------- cache / download


def detectors_dir(weights_dir: str | os.PathLike) -> Path:
    """Where converted detector checkpoints are cached: ``DIR/detectors``."""
    return layout.detectors_dir(Path(weights_dir).expanduser())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, files: ModelFiles) -> None:
    """Raise DetectorWeightsError unless sha256(path) starts with ``files.sha256``."""
    digest = _sha256(path)
    if not digest.startswith(files.sha256.lower()):
        raise DetectorWeightsError(
            f"{path}: checksum mismatch (sha256 {digest}, expected {files.sha256}...). The file is "
            f"incomplete or not {files.file_name}; delete it and download again from {files.url}"
        )


def _missing_message(files: ModelFiles, dest_dir: Path, why: str, detector: str | None) -> str:
    fetch = layout.fix_detector_command(detector or "NAME", dest_dir.parent)
    return (
        f"detector weights {files.file_name} are not in {dest_dir} and {why}.\n"
        f"  Download {files.url}\n"
        f"  and put it at {dest_dir / files.file_name}\n"
        f"  (or run '{fetch}' where the internet is reachable and copy {dest_dir} here; "
        f"or pass your own --det-config and --det-checkpoint)."
    )


def _download(url: str, dest: Path, *, progress: bool) -> None:
    """Stream ``url`` into ``dest`` (which must not be the final path: the caller renames it)."""
    req = urllib.request.Request(url, headers={"User-Agent": "dpmesh-infer"})
    with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        if progress:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), transient=False) as bar:  # fmt: skip
                task = bar.add_task(f"downloading {dest.name.split('.part')[0].lstrip('.')}", total=total)
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(task, advance=len(chunk))
        else:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)


def ensure_checkpoint(files: ModelFiles, weights_dir: str | os.PathLike, *, progress: bool = True,
                      detector: str | None = None) -> Path:
    """Return the converted (state-dict-only) checkpoint of ``files``, fetching it if needed.

    Order: the converted file in the cache; else the published file placed in the cache by hand
    (checksum-verified, then converted; the original is kept); else a download (unless
    ``$DPMESH_NO_DOWNLOAD`` is set), verified, converted, and only the converted file kept.
    """
    dest_dir = detectors_dir(weights_dir)
    converted = dest_dir / files.converted_name
    if converted.is_file():
        return converted
    original = dest_dir / files.file_name
    if original.is_file():
        verify_checksum(original, files)
        convert_checkpoint(original, converted, source=files.url)
        return converted
    if os.environ.get(NO_DOWNLOAD_ENV, "").strip() not in ("", "0"):
        why = f"downloads are disabled (${NO_DOWNLOAD_ENV} is set)"
        raise DetectorWeightsError(_missing_message(files, dest_dir, why, detector))
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{files.file_name}.part-", dir=dest_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        logger.info("downloading %s", files.url)
        try:
            _download(files.url, tmp, progress=progress)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise DetectorWeightsError(_missing_message(files, dest_dir, f"the download failed ({e})", detector)) from e
        verify_checksum(tmp, files)
        convert_checkpoint(tmp, converted, source=files.url)
    finally:
        tmp.unlink(missing_ok=True)
    return converted


def fetch_detector(name: str, weights_dir: str | os.PathLike, progress: bool = True) -> list[Path]:
    """Download (if needed) and convert every checkpoint of detector ``name``; returns their paths
    (person detector first for top-down detectors). When several files are missing, one error names
    them all."""
    spec = get_spec(name)
    paths, errors = [], []
    for f in spec.files():
        try:
            paths.append(ensure_checkpoint(f, weights_dir, progress=progress, detector=name))
        except DetectorWeightsError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DetectorWeightsError("\n".join(str(e) for e in errors)) from errors[0]
    return paths


def cached_checkpoints(name: str, weights_dir: str | os.PathLike) -> list[Path | None]:
    """The converted checkpoint path of each network of ``name`` if present in the cache, else None."""
    d = detectors_dir(weights_dir)
    return [(d / f.converted_name) if (d / f.converted_name).is_file() else None for f in get_spec(name).files()]


# --------------------------------------------------------------------------- conversion


class _Inert:
    """Stands in for every non-torch global of a published checkpoint while it is read.

    Construction, state and items are swallowed: no code from the file's globals ever runs. Only
    ``state_dict`` (plain tensors, which torch's weights_only loader rebuilds itself) is kept.
    """

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass


def read_state_dict(path: str | os.PathLike) -> dict:
    """The ``state_dict`` of an OpenMMLab checkpoint (or a bare state dict), read with weights_only=True.

    Globals the file references beyond torch's own allowlist (numpy arrays in ``meta``) are mapped to
    an inert placeholder, so nothing in the file is executed. Keys get a leading ``module.`` removed.
    """
    import torch

    path = Path(path)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        with torch.serialization.safe_globals([(_Inert, n) for n in names]):
            ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # zip/pickle errors of many kinds; torch's text is not passed on (see below)
        # torch's message may suggest weights_only=False: never advise that for a file read from disk
        raise DetectorWeightsError(
            f"cannot read the detector checkpoint {path} as plain tensors ({type(e).__name__}): it is truncated, "
            "corrupt, or not an OpenMMLab checkpoint. Delete it and fetch it again (dpmesh weights fetch), or "
            "pass a checkpoint that torch.load(weights_only=True) reads."
        ) from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DetectorWeightsError(f"{path} holds no state dict of tensors (top-level keys: "
                                   f"{list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__})")  # fmt: skip
    return {k.removeprefix("module."): v for k, v in state.items()}


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, *, source: str = "") -> Path:
    """Write ``{"state_dict": ..., "meta": {"source": str}}`` (loads with weights_only=True) atomically."""
    import torch

    dst = Path(dst)
    state = read_state_dict(src)
    payload = {"state_dict": state, "meta": {"source": str(source or src), "converted_by": "dpmesh-infer"}}
    write_with(dst, lambda f: torch.save(payload, f))
    logger.info("converted %s -> %s (%d tensors)", source or src, dst, len(state))
    return dst
