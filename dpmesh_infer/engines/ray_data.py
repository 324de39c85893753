"""Folder runs on Ray Data: ``dpmesh predict INPUT... --out DIR --engine ray``.

The pattern of Ray Data's offline batch inference: a dataset of image paths, ``map_batches`` with a
callable class (:class:`PredictWorker`) that holds one :class:`~dpmesh_infer.pipeline.Pipeline` (and the
detector, and a renderer with ``--render``) per actor, on a fixed pool of ``workers`` actors (one GPU each
when the cluster has GPUs), ``batch_size`` = ``--chunk`` images per call. Each worker runs exactly what a
local run does for one chunk (:meth:`~dpmesh_infer.batch.BatchRunner.process_images`: decode, keypoints,
crops, networks, the image folders' files with one filesystem sync, ``people.json`` last) and returns small
records (image, status, persons, error, seconds). The driver holds the output folder's lock, filters out
finished images before scheduling (the same resume rule), and appends one manifest line per returned
record (:class:`~dpmesh_infer.batch.RunRecorder`, the same writer as the local engine): workers never
touch the manifest. So ``--out`` (and the inputs) must be on a filesystem every worker can reach.

Faults: one bad image fails alone inside its worker, with the local engine's message. A worker that dies
(killed, out of memory, a crash in native code) loses only the batch it was computing: Ray restarts the
actor (``max_restarts=-1``) and retries that batch (``max_task_retries`` = :data:`TASK_RETRIES`); a batch
that still fails is dropped (``max_errored_blocks=-1``) and its images are recorded ``failed`` (or ``done``
when the worker had written them completely before it was lost), so the run finishes and a re-run
completes them.

``ray`` is an optional extra (``pip install "dpmesh-infer[ray]"``, or ``bash install.sh``) imported only
here, only when a run asks for this engine.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..batch import (
    BatchPlan,
    BatchRunner,
    BatchSummary,
    BundleWriter,
    ImageRecord,
    RunRecorder,
    check_writable,
    finished_persons,
    output_folder,
    recheck_plan,
)
from ..errors import DependencyError, DpmeshError, InputError
from ..inputs import InputImage
from ..locks import RunLock

logger = logging.getLogger(__name__)

#: The command that installs the engine's dependency.
INSTALL_HINT = 'pip install "dpmesh-infer[ray]"  (or: bash install.sh)'
#: Retries of a batch whose worker died (the actor itself is restarted without limit).
TASK_RETRIES = 2
#: Test hook (tests/test_ray_engine.py): a worker given an image file of this name exits its process (as if
#: killed) before computing its batch, once per marker file: DPMESH_RAY_TEST_EXIT_MARKER is created first.
TEST_EXIT_ON = "DPMESH_RAY_TEST_EXIT_ON"
TEST_EXIT_MARKER = "DPMESH_RAY_TEST_EXIT_MARKER"
LOST_MESSAGE = ("lost with its Ray worker: the worker computing its batch died on every try "
                f"({1 + TASK_RETRIES}), or the batch failed outside the per-image checks; run again to retry it")


def import_ray():
    """``ray`` with Ray Data, or DependencyError (exit 5) with the install command."""
    try:
        import ray
        import ray.data  # noqa: F401 -- the extra is ray[data]
    except ImportError as e:
        raise DependencyError(f"--engine ray needs Ray Data, which is not installed ({e}). Install it with: "
                              f"{INSTALL_HINT}; or use the default --engine local") from e
    return ray


# --------------------------------------------------------------------------------------------- workers

@dataclass(frozen=True)
class WorkerSetup:
    """What every worker builds once, as picklable callables (module-level functions or partials of them):
    ``load_pipeline()`` -> Pipeline, ``make_keypoints(pipe)`` -> a batch.KeypointSource (the parsed keypoint
    file, or the detector), ``make_renderer()`` -> a Renderer (``--render``) or None, and the keyword
    arguments of :class:`~dpmesh_infer.batch.BatchRunner` (batch_size, focal, max_pixels, glb_photo, ...)."""

    load_pipeline: Callable[[], object]
    make_keypoints: Callable[[object], object]
    make_renderer: Callable[[], object] | None = None
    runner_options: dict = field(default_factory=dict)


def record_fields(rec: ImageRecord) -> dict:
    """The part of a record that travels from a worker to the driver (the image is the row's key)."""
    return {"status": rec.status, "persons": rec.persons, "error": rec.error,
            "skipped_persons": [[int(i), r] for i, r in rec.skipped_persons], "dropped": rec.dropped,
            "seconds": rec.seconds, "cpu_seconds": rec.cpu_seconds, "focal_source": rec.focal_source,
            "warnings": rec.warnings}


def record_from_fields(image: InputImage, out_dir: Path, fields: dict) -> ImageRecord:
    return ImageRecord(image, fields["status"], output_folder(out_dir, image), persons=fields["persons"],
                       error=fields["error"], skipped_persons=[(int(i), r) for i, r in fields["skipped_persons"]],
                       dropped=list(fields["dropped"]), seconds=dict(fields["seconds"]),
                       cpu_seconds=dict(fields.get("cpu_seconds", {})),
                       focal_source=fields["focal_source"], warnings=list(fields["warnings"]))


class PredictWorker:
    """The callable class of ``map_batches``: one pipeline, keypoint source and renderer per actor; each
    call computes and writes a batch of images and returns ``{"rel", "record"}`` (one row per image)."""

    def __init__(self, setup: WorkerSetup, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.startup_error: DpmeshError | None = None
        try:
            pipe = setup.load_pipeline()
            renderer = setup.make_renderer() if setup.make_renderer is not None else None
            self.runner = BatchRunner(pipe, setup.make_keypoints(pipe), renderer=renderer, **setup.runner_options)
            BundleWriter.warm_up()  # the writers' one-time work, at start-up rather than in the first image's write
        except DpmeshError as e:  # (weights, detector, renderer): sent to the driver with the first batch, which
            self.startup_error = e  # raises it there; an actor that died in __init__ would lose its type

    def __call__(self, batch: dict) -> dict:
        items = [InputImage(Path(str(p)), str(n), str(r)) for p, n, r in zip(batch["path"], batch["name"],
                                                                              batch["rel"])]
        if self.startup_error is not None:
            e = self.startup_error
            row = json.dumps({"startup_error": [type(e).__name__, str(e), e.exit_code]})
            return {"rel": np.array([im.rel for im in items], dtype=object),
                    "record": np.array([row] * len(items), dtype=object)}
        _test_exit_hook(items)
        try:
            records = self.runner.process_images(items, self.out_dir)
        except Exception as e:  # noqa: BLE001 -- beyond the per-image checks: the batch fails, the run goes on
            logger.exception("batch failed")
            msg = str(e) if isinstance(e, DpmeshError) else f"{type(e).__name__}: {e}"
            records = [ImageRecord(im, "failed", output_folder(self.out_dir, im), error=msg) for im in items]
        return {"rel": np.array([r.image.rel for r in records], dtype=object),
                "record": np.array([json.dumps(record_fields(r)) for r in records], dtype=object)}


def _test_exit_hook(items: list[InputImage]) -> None:
    name, marker = os.environ.get(TEST_EXIT_ON), os.environ.get(TEST_EXIT_MARKER)
    if not name or not marker or name not in {im.path.name for im in items}:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os._exit(1)


# ---------------------------------------------------------------------------------------------- driver

@dataclass(frozen=True)
class WorkerResources:
    """The actor pool: ``workers`` actors, each asking Ray for ``num_gpus`` GPUs and ``num_cpus`` CPUs."""

    workers: int
    num_gpus: float
    num_cpus: float


def plan_resources(cluster: dict, nodes: list[dict], *, workers: int | None, device: str) -> WorkerResources:
    """The pool for ``cluster`` (``ray.cluster_resources()``) and its ``nodes`` (``ray.nodes()``): one GPU
    per worker when the cluster has GPUs and ``device`` is not cpu (default: one worker per GPU); else CPU
    workers (default 1) that share the CPUs (at most one node's worth each).

    Raises:
        InputError: more workers than the cluster can place, or --device cuda on a cluster without GPUs.
    """
    gpus = int(cluster.get("GPU", 0))
    cpus = int(cluster.get("CPU", 0))
    if device.startswith("cuda:"):
        raise InputError(f"--device {device}: with --engine ray each worker gets one GPU of its own; "
                         "use --device auto or cuda")
    if device == "cuda" and gpus == 0:
        raise InputError("--device cuda: the Ray cluster has no GPU (use --device cpu, or start Ray on GPU nodes)")
    if workers is not None and workers < 1:
        raise InputError("--workers must be at least 1")
    if gpus and device != "cpu":
        n = workers if workers is not None else gpus
        if n > gpus:
            raise InputError(f"--workers {n}: each worker needs a GPU and the Ray cluster has {gpus}")
        return WorkerResources(n, 1.0, 1.0)
    n = workers if workers is not None else 1
    if n > max(cpus, 1):
        raise InputError(f"--workers {n}: each worker needs a CPU and the Ray cluster has {cpus}")
    per_node = max([int(nd.get("Resources", {}).get("CPU", 0)) for nd in nodes if nd.get("Alive", True)] or [1])
    return WorkerResources(n, 0.0, float(max(1, min(cpus // n, per_node))))


@contextmanager
def connected(ray, address: str | None, *, verbose: bool = False) -> Iterator[None]:
    """Connected to Ray for the block: an existing connection of this process is used as it is; else
    ``address`` (default ``$RAY_ADDRESS``), else a local Ray started here (shut down afterwards)."""
    level = logging.INFO if verbose else logging.ERROR
    logging.getLogger("ray.data").setLevel(level)  # (its INFO lines and warnings would cut through the progress bar)
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        check_reachable(address)
    try:
        ray.init(address=address, include_dashboard=False if address is None else None, log_to_driver=verbose,
                 logging_level=level)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise InputError(f"cannot connect to the Ray cluster at {address}: {e}") from e
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout: float = 10.0) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address must accept a TCP connection within ``timeout``
    seconds: ``ray.init`` itself keeps retrying an unreachable cluster for minutes. Other forms (``auto``,
    ``local``) are left to Ray.

    Raises:
        InputError: nothing listens there (exit 2), naming the address and where it came from.
    """
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise InputError(f"cannot reach the Ray cluster at {address} (--ray-address, else $RAY_ADDRESS): {e}. "
                         "Start it with `ray start --head`, or leave both unset for a local Ray") from e


def run_on_ray(plan: BatchPlan, setup: WorkerSetup, *, workers: int | None = None, address: str | None = None,
               device: str = "auto", chunk: int | None = None, on_record: Callable[[ImageRecord], None] | None = None,
               force_unlock: bool = False, verbose: bool = False) -> BatchSummary:
    """Run ``plan`` on Ray (module docstring): the same files, manifest and resume rule as
    :meth:`BatchRunner.run <dpmesh_infer.batch.BatchRunner.run>`; Ctrl-C / SIGTERM stop the run with
    ``summary.interrupted`` set (images the workers finish meanwhile are kept, like any finished image).

    Raises:
        DependencyError: ray is not installed (exit 5). InputError: the pool does not fit the cluster, or
        the cluster cannot be reached. OutputConflictError: another run holds the output folder. Errors a
        worker raises while it starts (weights, detector, renderer) keep their own type and exit code.
    """
    ray = import_ray()
    check_writable(plan.out_dir)
    if chunk is not None and chunk < 1:
        raise InputError("--chunk must be at least 1")
    with RunLock(plan.out_dir, force=force_unlock):
        plan = recheck_plan(plan)
        summary = BatchSummary(non_images=list(plan.non_images), ignored=list(plan.ignored))
        t0 = time.perf_counter()
        with RunRecorder(plan, summary, on_record) as recorder:
            if plan.todo:
                with connected(ray, address, verbose=verbose):
                    pool = plan_resources(ray.cluster_resources(), ray.nodes(), workers=workers, device=device)
                    batch = chunk if chunk is not None else (32 if pool.num_gpus else 8)
                    try:
                        _stream(ray, plan, setup, pool, batch, recorder)
                    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (errors.Terminated)
                        summary.interrupted = e
        summary.seconds = time.perf_counter() - t0
    return summary


def _stream(ray, plan: BatchPlan, setup: WorkerSetup, pool: WorkerResources, batch: int,
            recorder: RunRecorder) -> None:
    """Schedule ``plan.todo`` on the actor pool and record each returned row as it arrives; then the
    images no row came back for (their batch was dropped after its retries)."""
    ctx = ray.data.DataContext.get_current()
    changed = {k: v for k, v in (("enable_progress_bars", False), ("print_on_execution_start", False),
                                 ("max_errored_blocks", -1)) if hasattr(ctx, k)}
    saved = {k: getattr(ctx, k) for k in changed}
    for k, v in changed.items():
        setattr(ctx, k, v)
    remote_args: dict = {"max_restarts": -1, "max_task_retries": TASK_RETRIES}
    hook = {k: os.environ[k] for k in (TEST_EXIT_ON, TEST_EXIT_MARKER) if os.environ.get(k)}
    if hook:
        remote_args["runtime_env"] = {"env_vars": hook}
    by_rel = {im.rel: im for im in plan.todo}
    reported: set[str] = set()
    rows = None
    try:
        items = [{"path": str(im.path), "name": im.name, "rel": im.rel} for im in plan.todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch)))
        with warnings.catch_warnings():
            # max_restarts / max_task_retries have no named parameter (yet): Ray 2.60 warns that the
            # remote-args keywords go away in 2.64, hence the extra's `ray[data]<2.64`
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = ds.map_batches(PredictWorker, fn_constructor_kwargs={"setup": setup, "out_dir": str(plan.out_dir)},
                                batch_size=batch, batch_format="numpy",
                                compute=ray.data.ActorPoolStrategy(size=pool.workers, max_tasks_in_flight_per_actor=1),
                                num_gpus=pool.num_gpus or None, num_cpus=pool.num_cpus, **remote_args)
        rows = ds.iter_rows()
        for row in rows:
            rel, fields = str(row["rel"]), json.loads(str(row["record"]))
            if "startup_error" in fields:
                raise startup_error(*fields["startup_error"])
            reported.add(rel)
            recorder.record(record_from_fields(by_rel[rel], plan.out_dir, fields))
    except (KeyboardInterrupt, DpmeshError):
        raise
    except Exception as e:  # noqa: BLE001 -- a worker that cannot start, or the cluster went away
        cause = dpmesh_cause(e)
        if cause is not None:
            raise cause from None
        raise DpmeshError(f"the Ray run stopped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                          "finished images are kept, run the same command again to resume") from e
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        for k, v in saved.items():
            setattr(ctx, k, v)
    for im in plan.todo:
        if im.rel not in reported:
            recorder.record(unreported_record(im, plan.out_dir, plan.require))


def unreported_record(image: InputImage, out_dir: Path, require=()) -> ImageRecord:
    """The record of an image no worker reported: ``done`` if its folder is finished on disk (the worker
    wrote it, then was lost), else ``failed`` with :data:`LOST_MESSAGE`."""
    folder = output_folder(out_dir, image)
    n = finished_persons(folder, require)
    if n is not None:
        return ImageRecord(image, "done", folder, persons=n,
                           warnings=["finished by a Ray worker that was lost before it reported"])
    return ImageRecord(image, "failed", folder, error=LOST_MESSAGE)


def startup_error(name: str, message: str, exit_code: int) -> DpmeshError:
    """The error a worker raised while starting, rebuilt on the driver: its class from
    :mod:`dpmesh_infer.errors` (else DpmeshError), its message and exit code."""
    from .. import errors

    cls = getattr(errors, name, None)
    err = (cls if isinstance(cls, type) and issubclass(cls, DpmeshError) else DpmeshError)(message)
    err.exit_code = int(exit_code)
    return err


def dpmesh_cause(e: BaseException) -> DpmeshError | None:
    """The DpmeshError a worker raised, out of Ray's wrappers (``RayTaskError.cause``, ``__cause__``), as a
    plain instance of its class (so its message is the original one, without Ray's traceback text)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DpmeshError) and type(e).__module__.startswith("dpmesh_infer"):
            return e  # (Ray's RayTaskError(WeightsError) is a WeightsError too, of a class made by ray)
        inner = getattr(e, "cause", None)
        e = inner if isinstance(inner, BaseException) else (e.__cause__ or e.__context__)
    return None
