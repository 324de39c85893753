"""What every request of the demo shares: the weights status, one pipeline (loaded once), one renderer,
the keypoint detectors, a lock around the model, and the folder that holds the runs' outputs.

The pipeline is loaded by :meth:`DemoService.load` (``dpmesh demo`` calls it before the server starts);
a missing or invalid weights directory does not stop the demo: :attr:`DemoService.status` then holds
the message the page shows (each missing file and the command that creates it). The renderer and the
detectors are created on first use and kept; a renderer that cannot start is remembered, and runs go
on without the pictures (with a message saying why).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DpmeshError, InputError, WeightsError

logger = logging.getLogger(__name__)

#: What the page and every run say about stand-in weights (``pipeline.json`` ``"untrained": true``).
UNTRAINED_NOTE = (
    "These weights are UNTRAINED stand-ins (random initialisation, e.g. from `dpmesh selftest --keep`): "
    "the meshes are meaningless. The demo shows the whole pipeline working, not the model's quality."
)
#: The same, short, at the top of every run's messages.
UNTRAINED_RUN_NOTE = "Untrained stand-in weights: these meshes are meaningless (random initialisation)."
#: How to get weights (shown with a missing weights directory).
GET_WEIGHTS_HINT = (
    "To try the demo without real weights: `dpmesh selftest --keep DIR`, then "
    "`dpmesh demo --weights DIR/weights` (untrained stand-ins: meaningless meshes)."
)
#: Default number of photos one run accepts.
DEFAULT_MAX_IMAGES = 8
#: Default number of finished runs whose outputs are kept on disk (older ones are deleted).
DEFAULT_KEEP_RUNS = 32


@dataclass(frozen=True)
class WeightsStatus:
    """The weights the demo runs on.

    Attributes:
        ready: a pipeline is loaded and runs can start.
        untrained: the weights are untrained stand-ins (``pipeline.json`` says so).
        root: the weights directory that was used or looked at (None when none was found).
        source: how it was chosen ("--weights", "$DPMESH_WEIGHTS", "user cache"), or "".
        summary: one line: what is loaded, or what is wrong.
        message: the whole story (every missing file, where it looked, the fixes), as the CLI prints it.
        missing: the required files absent from ``root`` (relative paths).
        fixes: the commands that fix it (each once).
    """

    ready: bool
    untrained: bool = False
    root: Path | None = None
    source: str = ""
    summary: str = ""
    message: str = ""
    missing: tuple[str, ...] = ()
    fixes: tuple[str, ...] = ()

    def problem(self) -> str:
        """What a run says when the weights are not usable: the summary, the fixes, the stand-in hint."""
        fixes = "".join(f"\n    {f}" for f in self.fixes)
        return (f"No usable weights: {self.summary}." + (f"\nFix with:{fixes}" if fixes else "")
                + f"\n{GET_WEIGHTS_HINT}")


@dataclass
class DemoService:
    """Shared state of the demo server. All model work of a run happens under :attr:`lock` (re-entrant).

    Args:
        weights: weights directory (None: ``$DPMESH_WEIGHTS``, then the user cache).
        device, dtype: as ``Pipeline.from_pretrained`` ("auto" = CUDA with fp16 when available).
        max_pixels: refuse larger photos (None: the CLI's default, 100 M pixels or ``$DPMESH_MAX_PIXELS``).
        max_images: most photos in one run.
        det_config, det_checkpoint: your own mmpose detector (else the named built-in ones).
        work_dir: where run outputs go (None: a new temporary folder, removed by :meth:`close`).
        keep_runs: finished runs kept on disk; older ones are deleted when a new run starts.
        render: draw the overlay and side view (pyrender); False skips them without a message.
    """

    weights: str | os.PathLike | None = None
    device: str = "auto"
    dtype: str = "auto"
    max_pixels: int | None = None
    max_images: int = DEFAULT_MAX_IMAGES
    det_config: str | os.PathLike | None = None
    det_checkpoint: str | os.PathLike | None = None
    work_dir: str | os.PathLike | None = None
    keep_runs: int = DEFAULT_KEEP_RUNS
    render: bool = True
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise InputError("--max-images must be at least 1")
        if self.keep_runs < 1:
            raise InputError("keep_runs must be at least 1")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise InputError("--max-pixels must be a positive number of pixels")
        if (self.det_config is None) != (self.det_checkpoint is None):
            raise InputError("give both --det-config and --det-checkpoint, or neither")
        self._own_work_dir = self.work_dir is None
        self._work = Path(tempfile.mkdtemp(prefix="dpmesh-demo-")) if self.work_dir is None else Path(self.work_dir)
        self._work.mkdir(parents=True, exist_ok=True)
        self._status: WeightsStatus | None = None
        self._pipe = None
        self._renderer = None
        self._render_error: str | None = None
        self._detectors: dict[str, object] = {}
        self._runs = 0

    # ------------------------------------------------------------------ weights and the pipeline

    @property
    def work(self) -> Path:
        """The folder of this server's outputs (runs/, examples/)."""
        return self._work

    @property
    def status(self) -> WeightsStatus:
        """The weights status (loads the pipeline on first access)."""
        if self._status is None:
            self.load()
        return self._status

    @property
    def pipe(self):
        """The loaded :class:`~dpmesh_infer.pipeline.Pipeline` (WeightsError when the status is not ready)."""
        if not self.status.ready:
            raise WeightsError(self.status.problem())
        return self._pipe

    def load(self) -> WeightsStatus:
        """Find and load the weights once. A weights problem becomes the status message (the page shows
        it); a bad ``device``/``dtype`` raises InputError (a usage error of ``dpmesh demo``)."""
        from ..pipeline import Pipeline
        from ..weights.layout import FIX_CONVERT, FIX_SMPL, fix_command, missing_files, missing_message
        from ..weights.resolve import ENV_VAR, resolve_weights_dir

        with self.lock:
            if self._status is not None:
                return self._status
            try:
                loc = resolve_weights_dir(self.weights)
            except WeightsError as e:
                if self.weights is not None:
                    where = Path(self.weights).expanduser()
                    summary = f"the weights directory {where} (given with --weights) does not exist"
                    fixes = (FIX_CONVERT.format(dir=where), FIX_SMPL.format(dir=where))
                else:
                    summary = f"no weights directory found (--weights, ${ENV_VAR}, ~/.cache/dpmesh)"
                    fixes = (FIX_CONVERT.format(dir="DIR"), FIX_SMPL.format(dir="DIR"),
                             "then: dpmesh demo --weights DIR")
                self._status = WeightsStatus(ready=False, summary=summary, message=str(e), fixes=fixes)
                return self._status
            missing = missing_files(loc.path)
            if missing:
                self._status = WeightsStatus(
                    ready=False, root=loc.path, source=loc.source, missing=tuple(missing),
                    summary=(f"the weights directory {loc.path} ({loc.source}) is incomplete: {len(missing)} "
                             f"required file{'s' if len(missing) != 1 else ''} missing"),
                    message=missing_message(loc.path, loc.source, missing, loc.searched),
                    fixes=tuple(dict.fromkeys(fix_command(m, loc.path) for m in missing)))
                return self._status
            t0 = time.perf_counter()
            try:
                pipe = Pipeline.from_pretrained(loc.path, device=self.device, dtype=self.dtype)
            except WeightsError as e:
                self._status = WeightsStatus(ready=False, root=loc.path, source=loc.source, message=str(e),
                                             summary=f"the weights in {loc.path} cannot be loaded: "
                                                     f"{str(e).splitlines()[0]}")
                return self._status
            self._pipe = pipe
            untrained = bool(pipe.config.untrained)
            seconds = time.perf_counter() - t0
            what = f"weights {loc.path} ({loc.source}) on {pipe.device.type}, loaded in {seconds:.1f} s"
            self._status = WeightsStatus(ready=True, untrained=untrained, root=loc.path, source=loc.source,
                                         summary=what, message=f"{UNTRAINED_NOTE} ({what})" if untrained else what)
            logger.info("demo: %s", what)
            return self._status

    # ------------------------------------------------------------------ renderer and detectors

    def renderer(self):
        """(the shared :class:`~dpmesh_infer.render.Renderer` or None, why there is none or None)."""
        if not self.render:
            return None, None
        if self._renderer is None and self._render_error is None:
            try:
                from ..render import Renderer

                self._renderer = Renderer()
            except DpmeshError as e:  # RenderError: no pyrender / OpenGL backend
                self._render_error = str(e)
                logger.warning("demo: rendering unavailable: %s", e)
        return self._renderer, self._render_error

    def disable_renderer(self, why: str) -> None:
        """Stop rendering after a render failed (later runs say why)."""
        self._render_error = why
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    @property
    def detector_names(self) -> list[str]:
        """Names offered on the page: the built-in detectors, or ``custom`` with --det-config."""
        if self.det_config is not None:
            return ["custom"]
        from ..detect.detectors import DETECTORS

        return list(DETECTORS)

    def detector(self, name: str, thresholds):
        """The :class:`~dpmesh_infer.detect.mmpose_detector.KeypointDetector` ``name`` (built once, kept),
        with ``thresholds`` set for this run. Raises DetectorWeightsError, DetectorStackError, InputError."""
        from ..detect.mmpose_detector import KeypointDetector

        if self.det_config is not None:
            name = "custom"
        det = self._detectors.get(name)
        if det is None:
            dev = "cuda" if self.pipe.device.type == "cuda" else "cpu"
            if self.det_config is not None:
                det = KeypointDetector.from_files(self.det_config, self.det_checkpoint, dev)
            else:
                det = KeypointDetector.from_name(name, self.status.root, dev)
            self._detectors[name] = det
        det.thresholds = thresholds
        return det

    # ------------------------------------------------------------------ run folders

    def new_run_dir(self) -> Path:
        """A new, empty folder for one run's outputs; the oldest runs beyond ``keep_runs`` are removed."""
        runs = self._work / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        self._runs += 1
        old = sorted(p for p in runs.iterdir() if p.is_dir())
        for p in old[: max(0, len(old) - self.keep_runs + 1)]:
            shutil.rmtree(p, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"{time.strftime('%Y%m%d-%H%M%S')}-{self._runs:05d}-", dir=runs))

    def close(self) -> None:
        """Close the renderer; remove the outputs when the folder is this service's own temporary one."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._own_work_dir:
            shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> "DemoService":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
