"""Import mmpose 1.3.2 on top of mmcv-lite 2.1.0, without torchvision. Used only by the detector.

``pip install mmpose`` cannot install on a fresh Python 3.11 / numpy 2 machine (see ``install.sh``), so
the product installs mmcv-lite (no compiled ops) and no torchvision. Two things then stop mmpose from
importing, and this module fixes exactly those two, in one place:

1. **Compiled ops.** ``mmcv.ops.*`` loads ``mmcv._ext`` at import time and checks that every op it
   needs is an attribute. mmcv-lite has no ``_ext``; mmpose (through mmdet's RTMO/RTMDet heads) imports
   ``mmcv.ops`` and, at run time, needs only NMS. :func:`install_ext_standin` registers a stand-in
   ``mmcv._ext`` module: ``nms`` is :func:`nms`, a pure-torch NMS with mmcv's semantics; every other
   attribute is a function that raises :class:`CompiledOpUnavailable` naming the op when called.
   Nothing is registered when a real ``mmcv._ext`` (full mmcv) is importable.
2. **torchvision.** ``mmpose.visualization`` imports ``torchvision.transforms.ToPILImage`` at import
   time (for a heatmap visualiser we never use). torchvision cannot be installed next to a CPU torch
   2.13 (the matching PyPI build is CUDA-only and its mere presence breaks ``import peft``), so a minimal
   stand-in module is placed in ``sys.modules`` only for the duration of the mmpose import, and removed
   right after. transformers caches "is torchvision available" the first time it is asked, so it is
   asked first (answer: no) and never sees the stand-in. Nothing is done when a real torchvision
   is installed.

Nothing here runs on ``import dpmesh_infer``; call :func:`import_mmpose` from the detector.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types
import warnings
from importlib import metadata

import numpy as np
import torch

from ..errors import CompiledOpUnavailable, DetectorStackError, DpmeshError

logger = logging.getLogger(__name__)

#: The OpenMMLab stack install.sh installs (distribution name -> version it was tested with).
STACK = {"mmengine": "0.10.7", "mmcv-lite": "2.1.0", "mmdet": "3.3.0", "mmpose": "1.3.2", "xtcocotools": "1.14.3"}

INSTALL_HINT = (
    "Install it with the product's install script:  bash install.sh\n"
    "  or by hand:\n"
    "    python3 -m pip install addict yapf termcolor pyyaml matplotlib json-tricks munkres pycocotools "
    "shapely terminaltables cython\n"
    "    python3 -m pip install --no-deps mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0 mmpose==1.3.2\n"
    "    python3 -m pip install --no-deps --no-build-isolation --no-binary xtcocotools xtcocotools==1.14.3"
)


# --------------------------------------------------------------------------- pure-torch NMS


def nms(bboxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
    """Greedy non-maximum suppression with the semantics of mmcv's compiled ``nms`` op.

    bboxes (N,4) [x1, y1, x2, y2]; scores (N,); a box is suppressed when its IoU with an already kept,
    higher-scoring box is > ``iou_threshold``; width/height are ``x2 - x1 + offset``. Returns the kept
    indices (K,) int64 on ``bboxes.device``, highest score first (ties keep the lower index first).
    """
    if bboxes.ndim != 2 or bboxes.shape[-1] != 4 or scores.shape != bboxes.shape[:1]:
        raise ValueError(f"nms expects bboxes (N,4) and scores (N,), got {tuple(bboxes.shape)} and "
                         f"{tuple(scores.shape)}")
    n = bboxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=bboxes.device)
    order = torch.sort(scores.detach(), descending=True, stable=True).indices
    b = bboxes.detach()[order].to(torch.float64)
    x1, y1, x2, y2 = b.unbind(-1)
    area = (x2 - x1 + offset) * (y2 - y1 + offset)
    w = (torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None]) + offset).clamp(min=0)
    h = (torch.minimum(y2[:, None], y2[None]) - torch.maximum(y1[:, None], y1[None]) + offset).clamp(min=0)
    inter = w * h
    iou = inter / (area[:, None] + area[None] - inter)
    over = (iou > iou_threshold).cpu().numpy()
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):  # boxes in score order; earlier rows are already decided
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


# --------------------------------------------------------------------------- mmcv._ext stand-in


def _unavailable_op(name: str):
    def op(*args, **kwargs):
        raise CompiledOpUnavailable(
            f"mmcv compiled op '{name}' is not available: mmcv-lite has no compiled ops and dpmesh only "
            "provides NMS. The model or config you use needs full mmcv (pip install mmcv==2.1.0, built "
            "from source); the built-in detectors (RTMO, RTMDet + RTMPose) do not."
        )

    op.__name__ = name
    return op


class _ExtStandin(types.ModuleType):
    """``mmcv._ext`` stand-in: ``nms`` is real (pure torch); any other op raises when called."""

    def __init__(self):
        super().__init__("mmcv._ext", "dpmesh stand-in for mmcv's compiled ops (only nms works)")
        self.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
        self.nms = nms

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _unavailable_op(name)


def _real_ext_available() -> bool:
    existing = sys.modules.get("mmcv._ext")
    if existing is not None:
        return not isinstance(existing, _ExtStandin)
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def install_ext_standin() -> bool:
    """Register the ``mmcv._ext`` stand-in unless a real one exists. Returns True if it is in place."""
    if isinstance(sys.modules.get("mmcv._ext"), _ExtStandin):
        return True
    if _real_ext_available():
        return False
    import mmcv

    standin = _ExtStandin()
    sys.modules["mmcv._ext"] = standin
    mmcv._ext = standin
    logger.debug("registered a stand-in mmcv._ext (pure-torch nms, no other compiled ops)")
    return True


# --------------------------------------------------------------------------- torchvision stand-in


class _TorchvisionStandin:
    """Context manager: a minimal ``torchvision.transforms.ToPILImage`` visible only inside the block."""

    NAMES = ("torchvision", "torchvision.transforms")

    def __enter__(self):
        self.active = False
        if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
            return self  # a real torchvision: leave it alone
        self._prime_transformers()
        tv = types.ModuleType("torchvision", "dpmesh stand-in used only while mmpose is imported")
        tv.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
        tv.__path__ = []
        tr = types.ModuleType("torchvision.transforms")
        tr.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)

        class ToPILImage:  # noqa: D401 - stand-in
            def __init__(self, *args, **kwargs):
                raise CompiledOpUnavailable("torchvision is not installed; mmpose's heatmap visualiser is unavailable")

        tr.ToPILImage = ToPILImage
        tv.transforms = tr
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tr})
        self.active = True
        return self

    def __exit__(self, *exc):
        if self.active:
            for name in self.NAMES:
                sys.modules.pop(name, None)
        return False

    @staticmethod
    def _prime_transformers() -> None:
        """Make transformers record 'no torchvision' now (it caches the answer on first use)."""
        if importlib.util.find_spec("transformers") is None:
            return
        try:
            from transformers.utils import import_utils
        except Exception:  # transformers broken or very old: nothing to prime
            return
        for fn in ("is_torchvision_available", "is_torchvision_v2_available"):
            if hasattr(import_utils, fn):
                getattr(import_utils, fn)()


# --------------------------------------------------------------------------- entry point

_lock = threading.Lock()
_done = False


def missing_packages() -> list[str]:
    """The distributions of :data:`STACK` that are not installed (any version)."""
    out = []
    for dist in STACK:
        try:
            metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist == "mmcv-lite" and _has_dist("mmcv"):
                continue  # full mmcv is fine too
            out.append(dist)
    return out


def _has_dist(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def import_mmpose():
    """Import mmpose (with mmdet's models registered) and return the ``mmpose`` module.

    Safe to call many times. Raises :class:`DetectorStackError` (with install instructions) when the
    OpenMMLab stack is missing or fails to import.
    """
    global _done
    with _lock:
        if _done:
            return sys.modules["mmpose"]
        missing = missing_packages()
        if missing:
            raise DetectorStackError(
                f"the keypoint detector needs the OpenMMLab stack; not installed: {', '.join(missing)}.\n"
                f"  {INSTALL_HINT}"
            )
        try:
            install_ext_standin()
            with _TorchvisionStandin(), warnings.catch_warnings():
                # mmengine imports pkg_resources (deprecated) and mmcv warns about its own layout
                warnings.filterwarnings("ignore", category=UserWarning, module=r"mmengine|mmcv|mmdet|mmpose")
                warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated")
                import mmdet  # noqa: F401  (checks the mmcv version)
                import mmpose
                import mmpose.apis  # noqa: F401
                import mmpose.models  # noqa: F401
        except DpmeshError:
            raise
        except Exception as e:  # ImportError, mmdet's version AssertionError, a broken extension, ...
            versions = ", ".join(f"{d} {_version_or_none(d)}" for d in STACK)
            raise DetectorStackError(
                f"the OpenMMLab stack does not import ({type(e).__name__}: {e}).\n"
                f"  Installed: {versions}; tested: {', '.join(f'{d} {v}' for d, v in STACK.items())}.\n  {INSTALL_HINT}"
            ) from e
        _done = True
        return mmpose


def _version_or_none(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(missing)"
