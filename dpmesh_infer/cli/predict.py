"""``dpmesh predict``: images (files, folders, globs) -> meshes and SMPL parameters.

A single ``--out FILE`` writes one image's result; a folder ``--out`` is a resumable folder run
(:mod:`dpmesh_infer.batch`). Everything heavy (torch, the pipeline, mmpose, pyrender) is imported
inside the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ImageError, InputError, NoPersonError
from . import video_options as vo
from .common import (
    console,
    device_option,
    err_console,
    handle_errors,
    interrupt_exit_code,
    load_refine_config,
    quiet_option,
    refine_config_option,
    refine_option,
    setup_logging,
    verbose_option,
    weights_option,
)

app = typer.Typer()


@dataclass(frozen=True)
class DetectorOptions:
    """The detector choice and thresholds of ``predict`` (used when no --keypoints is given)."""

    detector: str = "rtmo-l"
    det_config: Path | None = None
    det_checkpoint: Path | None = None
    det_thr: float = 0.3
    kpt_thr: float = 0.3
    max_people: int | None = None


@dataclass(frozen=True)
class RunOptions:
    """What ``predict`` was asked to do, validated (one object instead of a dozen arguments)."""

    weights: Path | None
    device: str
    dtype: str
    focal: object  # a dpmesh_infer.focal.FocalChoice
    batch_size: int | None  # None: the pipeline's default (64 on CUDA, 16 on the CPU)
    max_pixels: int | None
    render: bool
    detector: DetectorOptions
    glb_photo: bool = False  # the photo as a textured quad in scene.glb / a .glb output
    glb_photo_depth: float | None = None
    rig: bool = False  # --rig: skinned, posed armatures in the .glb (cli/video_options.py)
    refine: object = None  # a dpmesh_infer.refine.RefineConfig (--refine / --refine-config), or None
    runtime: object = None  # a dpmesh_infer.pipeline.RuntimeOptions (--compile, --plain-network), or None
    writers: int | None = None  # folder runs: writer threads (None: batch.default_writers())


@app.command()
@handle_errors
def predict(
    images: List[Path] = typer.Argument(..., metavar="INPUT...",
                                        help="Image files, folders (searched recursively) or glob patterns "
                                             "(quote them: 'photos/**/*.jpg')."),
    keypoints: Optional[Path] = typer.Option(None, "--keypoints", "-k",
                                             help="Keypoint file or folder of per-image files (COCO / cocoapi "
                                                  "results, AlphaPose, mmpose inferencer or demo output, "
                                                  "OpenPose, `dpmesh detect` output; README lists them). "
                                                  "Default: run the detector."),
    keep_box_only: bool = typer.Option(False, "--keep-box-only",
                                       help="Also reconstruct people of a --keypoints file that have no labelled "
                                            "keypoint, from their box alone (default: skip them, with the reason)."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="Output: FILE.npz / .obj / .ply / .glb / .json for one image, or a folder "
                                  "(one sub-folder per image with people.json, params.npz, person_NN.obj, "
                                  "scene.glb; plus manifest.jsonl)."),
    weights: Optional[Path] = weights_option(),
    device: str = device_option(),
    dtype: str = typer.Option("auto", help="Network dtype: auto (fp16 on CUDA, fp32 on CPU), fp16, bf16, fp32."),
    focal: Optional[str] = typer.Option(None, "--focal", metavar="PIXELS|exif",
                                        help="Focal length of the output camera: pixels, or 'exif' to use the "
                                             "photo's EXIF FocalLengthIn35mmFilm (default sqrt(W^2+H^2), as the "
                                             "model was trained; also when the tag is absent)."),
    fov: Optional[float] = typer.Option(None, "--fov", metavar="DEGREES",
                                        help="Horizontal field of view instead of --focal: f = W/2 / tan(fov/2)."),
    batch_size: Optional[int] = typer.Option(None, help="Persons per network batch (default 64 on CUDA, 16 on the "
                                                        "CPU)."),
    chunk: Optional[int] = typer.Option(None, "--chunk", help="Folder runs: images loaded, detected and reconstructed "
                                        "together (their persons share network batches), written chunk by chunk; "
                                        "default 32 on CUDA, 8 on the CPU. Videos: samples per stored chunk "
                                        "(default 8)."),
    writers: Optional[int] = typer.Option(None, "--writers", help="Folder runs: threads writing the output files "
                                          "(default min(4, CPU cores))."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the backbone (CUDA; the first batches "
                                 "take minutes to compile, the last batch is padded to --batch-size)."),
    compile_mode: Optional[str] = typer.Option(None, "--compile-mode", metavar="MODE",
                                               help="torch.compile mode with --compile: default, reduce-overhead "
                                                    "(CUDA graphs), max-autotune."),
    plain_network: bool = typer.Option(False, "--plain-network", help="Turn the fast-path switches off (live LoRA "
                                       "adapter, no channels_last, fp16 under autocast, no cudnn.benchmark): the "
                                       "reference path, for comparisons."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Folder runs: redo images whose output folder is "
                                                              "already finished (default: skip them, i.e. resume)."),
    render: bool = typer.Option(False, "--render", help="Also render the people (pyrender, headless EGL or OSMesa): "
                                "overlay.png over the photo and side.png per image folder, or <stem>_overlay.png "
                                "and <stem>_side.png beside a single --out file."),
    glb_photo: bool = typer.Option(False, "--glb-photo", help="Put the photo into scene.glb (or a .glb --out) as "
                                   "a textured quad behind the people, framed by the glTF camera."),
    glb_photo_depth: Optional[float] = typer.Option(None, "--glb-photo-depth", metavar="METRES",
                                                    help="Depth of that quad (implies --glb-photo; default 1 m "
                                                         "behind the farthest person)."),
    quiet: bool = quiet_option(),
    detector: str = typer.Option("rtmo-l", "--detector", help="Keypoint detector when no --keypoints is given "
                                 "(see `dpmesh weights list-detectors`)."),
    det_config: Optional[Path] = typer.Option(None, "--det-config", help="Your own mmpose detector config."),
    det_checkpoint: Optional[Path] = typer.Option(None, "--det-checkpoint", help="Checkpoint for --det-config."),
    det_thr: float = typer.Option(0.3, "--det-thr", help="Minimum person detection score."),
    kpt_thr: float = typer.Option(0.3, "--kpt-thr", help="Keypoint score counted as confident by the detector."),
    max_people: Optional[int] = typer.Option(None, "--max-people", help="At most this many people per image."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Refuse images with more pixels "
                                             "(decompression-bomb guard; default 100 million or "
                                             "$DPMESH_MAX_PIXELS)."),
    engine: str = typer.Option("local", "--engine", metavar="local|ray",
                               help="Folder runs: local (this process: prepare thread, networks, writer threads) "
                                    "or ray (a pool of Ray workers, one pipeline and one GPU each; needs the ray "
                                    "extra; --out and the inputs on a filesystem every worker reaches; see "
                                    "README 'Scale-out on Ray')."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", metavar="ADDR",
                                              help="--engine ray: the cluster to use (default $RAY_ADDRESS, else "
                                                   "a local Ray started for this run)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="--engine ray: model replicas (default one per "
                                          "GPU of the cluster, or 1 without GPUs)."),
    force_unlock: bool = typer.Option(False, "--force-unlock", help="Folder runs on filesystems without flock: "
                                      "remove a lock left by a run that is known to be gone (see README)."),
    refine: bool = refine_option(),
    refine_config: Optional[Path] = refine_config_option(),
    verbose: int = verbose_option(),
    # videos (cli/video_options.py) and --rig
    sequence: bool = vo.sequence_option(), sequence_fps: float = vo.sequence_fps_option(),
    fps: Optional[float] = vo.fps_option(), every: Optional[int] = vo.every_option(),
    start: Optional[str] = vo.start_option(), end: Optional[str] = vo.end_option(),
    smooth: str = vo.smooth_option(), smooth_min_cutoff: float = vo.smooth_min_cutoff_option(),
    smooth_beta: float = vo.smooth_beta_option(), smooth_d_cutoff: float = vo.smooth_d_cutoff_option(),
    track_min_frames: int = vo.track_min_frames_option(), track_max_gap: float = vo.track_max_gap_option(),
    track_min_similarity: float = vo.track_min_similarity_option(), rig: bool = vo.rig_option(),
):
    """Reconstruct every person of the INPUT images and write meshes and parameters.

    Keypoints come from --keypoints, or else from the mmpose detector (RTMO by default). With a folder
    as --out, finished images are skipped on a re-run (--overwrite redoes them) and one bad image never
    stops the run. Exit codes: 0 all done, 1 some images failed, 2 usage error, 3 weights missing,
    4 the single input is unusable, 5 a needed optional component is missing, 130/143 interrupted.

    A video (clip.mp4, .mov, .avi, .mkv, .webm) or a --sequence folder of frames is tracked over time into
    --out DIR: tracks.npz, tracks.json, scene.glb (animated skinned SMPL per track), with --render
    overlay.mp4 and side.mp4; a re-run resumes from the last finished chunk."""
    setup_logging(verbose, quiet)
    from ..export import SUFFIXES
    from ..focal import parse_focal_options

    if max_pixels is not None and max_pixels < 1:
        raise InputError("--max-pixels must be a positive number of pixels")
    for name, value in (("--chunk", chunk), ("--batch-size", batch_size), ("--writers", writers),
                        ("--workers", workers)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise InputError(f"--compile-mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
    if compile_mode is not None and not compile:
        raise InputError("--compile-mode needs --compile")
    if plain_network and compile:
        raise InputError("--plain-network and --compile do not go together")
    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "ray" and (ray_address is not None or workers is not None):
        raise InputError("--ray-address and --workers are options of --engine ray")
    suffix = out.suffix.lower()
    to_folder = suffix == "" or out.is_dir()
    if engine == "ray" and not to_folder:
        raise InputError(f"--engine ray runs folder runs: give a folder as --out, not {out.name}")
    if not to_folder and suffix not in SUFFIXES:
        raise InputError(f"--out {out}: use a folder or a file ending in {', '.join(SUFFIXES)}")
    if (det_config is None) != (det_checkpoint is None):
        raise InputError("give both --det-config and --det-checkpoint, or neither")
    if glb_photo_depth is not None and not glb_photo_depth > 0:
        raise InputError(f"--glb-photo-depth must be a positive number of metres, got {glb_photo_depth}")
    glb_photo = glb_photo or glb_photo_depth is not None
    if glb_photo and not to_folder and suffix != ".glb":
        raise InputError(f"--glb-photo puts the photo into a .glb file: use --out FILE.glb or a folder, not {out.name}")
    opts = RunOptions(weights=weights, device=device, dtype=dtype, focal=parse_focal_options(focal, fov),
                      batch_size=batch_size, max_pixels=max_pixels, render=render,
                      detector=DetectorOptions(detector, det_config, det_checkpoint, det_thr, kpt_thr, max_people),
                      glb_photo=glb_photo, glb_photo_depth=glb_photo_depth, rig=rig,
                      refine=load_refine_config(refine, refine_config),
                      runtime=_runtime_options(compile, compile_mode, plain_network), writers=writers)
    video = vo.VideoArgs(sequence, sequence_fps, fps, every, start, end, smooth, smooth_min_cutoff, smooth_beta,
                         smooth_d_cutoff, track_min_frames, track_max_gap, track_min_similarity)
    if vo.is_video_run(images, video):  # videos and frame folders: dpmesh_infer.video
        if engine == "ray":
            raise InputError("--engine ray is for photos; videos and frame sequences run with --engine local")
        if rig:
            raise InputError("--rig is for photos; a video run always writes scene.glb with animated rigs")
        vo.predict_video(images, out, keypoints=keypoints, opts=opts, chunk=chunk or vo.DEFAULT_VIDEO_CHUNK,
                         overwrite=overwrite, quiet=quiet, args=video)
        return
    vo.reject_for_photos(video)
    vo.check_rig(rig, out, to_folder)
    if to_folder:
        _predict_folder(images, out, keypoints=keypoints, opts=opts, chunk=chunk, overwrite=overwrite, quiet=quiet,
                        force_unlock=force_unlock, keep_box_only=keep_box_only,
                        engine=EngineOptions(engine, ray_address, workers, verbose > 0))
    else:
        _predict_file(images, out, keypoints=keypoints, opts=opts, keep_box_only=keep_box_only)


#: torch.compile modes --compile-mode accepts.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
#: --engine values: this process (dpmesh_infer.batch), or Ray Data (dpmesh_infer.engines.ray_data).
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """--engine and its options (--ray-address, --workers), and whether -v was given (Ray's own logs)."""

    name: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    verbose: bool = False


def _runtime_options(compile: bool, compile_mode: str | None, plain: bool):
    """The pipeline's fast-path switches from the command line (None: the device's defaults)."""
    from ..pipeline import RuntimeOptions

    if plain:
        return RuntimeOptions.plain()
    if compile:
        return RuntimeOptions(compile=True, compile_mode=compile_mode)
    return None


def _weights_candidate(opts: RunOptions) -> Path:
    """The weights directory that would be used (for output checks; it need not exist yet)."""
    from ..weights.resolve import resolve_weights_dir

    return resolve_weights_dir(opts.weights, must_exist=False).path


def _load_pipeline(opts: RunOptions):
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(opts.weights, device=opts.device, dtype=opts.dtype, refine=opts.refine,
                                    runtime=opts.runtime)
    if pipe.config.untrained:
        err_console.print("[yellow]warning:[/] these weights are UNTRAINED (random init): meshes are meaningless")
    return pipe


def _make_detector(pipe, opts: RunOptions):
    from ..detect.mmpose_detector import KeypointDetector, Thresholds
    from ..weights.resolve import resolve_weights_dir

    d = opts.detector
    th = Thresholds(det_thr=d.det_thr, kpt_thr=d.kpt_thr, max_people=d.max_people)
    dev = "cuda" if pipe.device.type == "cuda" else "cpu"
    if d.det_config is not None:
        return KeypointDetector.from_files(d.det_config, d.det_checkpoint, dev, thresholds=th)
    return KeypointDetector.from_name(d.detector, resolve_weights_dir(opts.weights).path, dev, progress=True,
                                      thresholds=th)


def _make_renderer():
    """The headless renderer of --render (pyrender is imported only here); RenderError if none works."""
    from ..render import Renderer

    return Renderer()


# ---------------------------------------------------------------------------------------- one file

def _single_file_outputs(out: Path, render: bool) -> list[Path]:
    """Every file a single-image run writes: ``out``, the parameter JSON beside a mesh, the renders."""
    from ..export import MESH_SUFFIXES

    files = [out]
    if out.suffix.lower() in MESH_SUFFIXES:
        files.append(out.with_suffix(".json"))
    if render:
        files += [out.with_name(f"{out.stem}_overlay.png"), out.with_name(f"{out.stem}_side.png")]
    return files


def _predict_file(images: List[Path], out: Path, *, keypoints: Path | None, opts: RunOptions,
                  keep_box_only: bool = False) -> None:
    """One image -> one output file (and its .json beside a mesh). Everything that can be checked is
    checked before the weights are loaded: the input, the outputs (never an input, writable), the
    keypoint file and its entry for the image, the image itself."""
    from ..atomic import check_writable_file
    from ..batch import DetectorKeypoints, write_renders
    from ..export import save_result
    from ..images import load_image
    from ..inputs import path_problem, refuse_overwriting_inputs
    from ..keypoint_files import read_keypoints

    if len(images) > 1:
        raise InputError(f"--out {out} is a single file but {len(images)} images were given; pass a folder")
    image = images[0]
    problem = path_problem(image)
    if problem is not None:
        raise InputError(f"input image {image} {problem}")
    outputs = _single_file_outputs(out, opts.render)
    inputs = [("input image", image)] + ([("keypoint file", keypoints)] if keypoints is not None else [])
    refuse_overwriting_inputs(inputs=inputs, files=outputs, protected=[("weights directory", _weights_candidate(opts))])
    for f in outputs:
        check_writable_file(f)
    kpset = read_keypoints(keypoints, keep_box_only=keep_box_only) if keypoints is not None else None
    if kpset is not None and kpset.lookup(str(image)) is None:
        raise InputError(f"{kpset.source} has no keypoints for image {image}")
    rgb = load_image(image, max_pixels=opts.max_pixels)
    pipe = _load_pipeline(opts)
    if kpset is not None:
        people = kpset
    else:
        found = DetectorKeypoints(_make_detector(pipe, opts))([image], [rgb])[0]
        for msg in found.dropped:
            err_console.print(f"{image.name}: {msg}", highlight=False, markup=False)
        people = found.persons
    result = pipe(rgb, keypoints=people, focal=opts.focal, batch_size=opts.batch_size, sources=[str(image)])
    res = result[0]
    for idx, reason in res.skipped:
        err_console.print(f"{image.name}: person {idx} skipped: {reason}", highlight=False, markup=False)
    if not res.persons:
        raise NoPersonError(f"{image}: no person could be reconstructed ({len(res.skipped)} skipped, see above)")
    if opts.render:  # before the result: rendering also fills the occlusion ratios written with it
        with _make_renderer() as renderer:
            write_renders(renderer, res, result.faces, rgb, out.with_name(f"{out.stem}_overlay.png"),
                          out.with_name(f"{out.stem}_side.png"))
    written = vo.save_rig(res, pipe, out) if opts.rig else save_result(
        res, result.faces, out, photo=rgb if opts.glb_photo else None, photo_depth=opts.glb_photo_depth)
    n = result.num_persons
    console.print(f"{n} person{'s' if n != 1 else ''} from 1 image -> {written}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------- folder runs

def _predict_folder(images: List[Path], out: Path, *, keypoints: Path | None, opts: RunOptions, chunk: int | None,
                    overwrite: bool, quiet: bool, force_unlock: bool = False, keep_box_only: bool = False,
                    engine: EngineOptions = EngineOptions()) -> None:
    """Folder run (see dpmesh_infer.batch; on Ray dpmesh_infer.engines.ray_data): resumable, locked, manifest,
    progress bar, summary, exit 0/1/4."""
    from ..batch import BatchRunner, DetectorKeypoints, FileKeypoints, check_plan_outputs, check_writable, plan_batch
    from ..images import load_image
    from ..keypoint_files import read_keypoints

    single = len(images) == 1 and images[0].is_file()
    if single:
        load_image(images[0], max_pixels=opts.max_pixels)  # an unusable single input fails now (exit 4)
    plan = plan_batch([str(p) for p in images], out, overwrite=overwrite, render=opts.render)
    check_writable(out)
    check_plan_outputs(plan, keypoints=keypoints, weights=_weights_candidate(opts))
    if plan.non_images:
        shown = plan.non_images[:20]
        err_console.print(f"skipping {len(plan.non_images)} non-image file(s): "
                          + ", ".join(str(p) for p in shown) + (" ..." if len(plan.non_images) > 20 else ""),
                          highlight=False, markup=False)
    for path, reason in plan.ignored:
        err_console.print(f"ignored: {path} {reason}", highlight=False, markup=False)
    if engine.name == "ray":
        from ..engines.ray_data import import_ray

        import_ray()  # exit 5 with the install command, before anything is loaded
    kp_source = pipe = kpset = None
    if plan.todo:
        kpset = read_keypoints(keypoints, keep_box_only=keep_box_only) if keypoints is not None else None
        if kpset is not None:
            for warning in kpset.warnings:
                err_console.print(f"warning: {warning}", highlight=False, markup=False)
            _report_unmatched(kpset, [im.name for im in plan.todo] + [im.name for im, _ in plan.finished])
    total = len(plan.todo) + len(plan.finished)
    if engine.name == "ray":
        summary = _folder_on_ray(plan, kpset, opts=opts, engine=engine, chunk=chunk, quiet=quiet,
                                 force_unlock=force_unlock)
    else:
        if plan.todo:
            pipe = _load_pipeline(opts)
            kp_source = FileKeypoints(kpset) if kpset is not None else DetectorKeypoints(_make_detector(pipe, opts))
        renderer = _make_renderer() if opts.render and plan.todo else None  # once per run, before any image
        try:
            with _BatchProgress(total, quiet) as progress:
                runner = BatchRunner(pipe, kp_source, chunk=chunk, batch_size=opts.batch_size, focal=opts.focal,
                                     on_record=progress.update, renderer=renderer, max_pixels=opts.max_pixels,
                                     glb_photo=opts.glb_photo, glb_photo_depth=opts.glb_photo_depth,
                                     writers=opts.writers)
                summary = runner.run(plan, force_unlock=force_unlock)
        finally:
            if renderer is not None:
                renderer.close()
    for rec in summary.failed if not single else []:
        err_console.print(f"failed: {rec.image.name}: {rec.error}", highlight=False, markup=False)
    if not quiet:
        console.print(_summary_table(summary, out))
    if summary.interrupted is not None:
        err_console.print("interrupted: finished images are kept; run the same command again to resume")
        raise typer.Exit(interrupt_exit_code(summary.interrupted))
    if single and summary.failed:
        raise ImageError(f"{images[0]}: {summary.failed[0].error}")
    raise typer.Exit(1 if summary.failed else 0)


def _folder_on_ray(plan, kpset, *, opts: RunOptions, engine: EngineOptions, chunk: int | None, quiet: bool,
                   force_unlock: bool):
    """The folder run on Ray: what can be checked here is checked before any worker starts (the weights
    directory, the detector's checkpoints, fetched once here), then dpmesh_infer.engines.ray_data runs it."""
    import dataclasses
    import functools

    from ..engines.ray_data import WorkerSetup, run_on_ray

    worker_opts = opts
    if plan.todo:
        worker_opts = dataclasses.replace(opts, weights=_check_weights(opts))  # the same directory on every worker
        if kpset is None and opts.detector.det_config is None:
            from ..detect.detectors import fetch_detector

            fetch_detector(opts.detector.detector, worker_opts.weights, progress=not quiet)
    setup = WorkerSetup(load_pipeline=functools.partial(_load_pipeline, worker_opts),
                        make_keypoints=functools.partial(_worker_keypoints, opts=worker_opts, kpset=kpset),
                        make_renderer=_make_renderer if opts.render else None,
                        runner_options=dict(batch_size=opts.batch_size, focal=opts.focal, max_pixels=opts.max_pixels,
                                            glb_photo=opts.glb_photo, glb_photo_depth=opts.glb_photo_depth,
                                            writers=opts.writers))
    with _BatchProgress(len(plan.todo) + len(plan.finished), quiet) as progress:
        return run_on_ray(plan, setup, workers=engine.workers, address=engine.ray_address, device=opts.device,
                          chunk=chunk, on_record=progress.update, force_unlock=force_unlock, verbose=engine.verbose)


def _check_weights(opts: RunOptions) -> Path:
    """The weights directory, checked as far as it can be without loading it (files present, pipeline.json
    valid; WeightsError, exit 3, otherwise), as an absolute path; warns when the weights are untrained."""
    from ..errors import WeightsError
    from ..weights.layout import load_pipeline_config, missing_files, missing_message
    from ..weights.resolve import resolve_weights_dir

    loc = resolve_weights_dir(opts.weights)
    missing = missing_files(loc.path)
    if missing:
        raise WeightsError(missing_message(loc.path, loc.source, missing, loc.searched))
    if load_pipeline_config(loc.path).untrained:
        err_console.print("[yellow]warning:[/] these weights are UNTRAINED (random init): meshes are meaningless")
    return loc.path.resolve()


def _worker_keypoints(pipe, *, opts: RunOptions, kpset):
    """A Ray worker's keypoint source: the parsed keypoint file, or its own detector."""
    from ..batch import DetectorKeypoints, FileKeypoints

    return FileKeypoints(kpset) if kpset is not None else DetectorKeypoints(_make_detector(pipe, opts))


def _report_unmatched(kpset, names: list) -> None:
    """Warn about keypoint-file entries (with people) that no input image matched."""
    missed = kpset.unmatched(names)
    if not missed:
        return
    shown = ", ".join(str(k) for k, _ in missed[:10]) + (", ..." if len(missed) > 10 else "")
    what = "frame numbers" if kpset.id_kind == "frame_id" and isinstance(missed[0][0], int) else (
        "image ids" if isinstance(missed[0][0], int) else "images")
    hint = (" (numeric ids match images named 000000000136.jpg or COCO_val2014_000000000136.jpg)"
            if what == "image ids" else "")
    people = sum(n for _, n in missed)
    err_console.print(f"warning: {kpset.source}: {people} {'person' if people == 1 else 'people'} under "
                      f"{len(missed)} {what if len(missed) > 1 else what[:-1]} matched no input image: {shown}{hint}",
                      highlight=False, markup=False)


class _BatchProgress:
    """Rich progress bar for folder runs (images/s, persons/s over images computed in this run)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.computed = self.persons = 0
        self._progress = None

    def __enter__(self):
        import time

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._t0 = time.perf_counter()
        if not self.quiet:
            self._progress = Progress(TextColumn("[bold]predict"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                      console=err_console, transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task("predict", total=self.total, rate="")
        return self

    def update(self, rec) -> None:
        import time

        if rec.status != "skipped":
            self.computed += 1
            self.persons += rec.persons
        if self._progress is not None:
            dt = max(time.perf_counter() - self._t0, 1e-9)
            rate = f"{self.computed / dt:.2f} images/s  {self.persons / dt:.2f} persons/s"
            self._progress.update(self._task, advance=1, rate=rate)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False


def _summary_table(summary, out: Path):
    from rich.table import Table

    computed = summary.count("done") + summary.count("failed")
    dt = max(summary.seconds, 1e-9)
    table = Table(title=f"dpmesh predict -> {out}", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    rows = [("done", summary.count("done")), ("skipped (finished before)", summary.count("skipped")),
            ("failed", summary.count("failed")), ("non-image files ignored", len(summary.non_images)),
            ("entries named like images ignored", len(summary.ignored)),
            ("persons (this run)", summary.new_persons), ("seconds", f"{summary.seconds:.1f}"),
            ("images/s", f"{computed / dt:.2f}"), ("persons/s", f"{summary.new_persons / dt:.2f}")]
    for k, v in rows:
        table.add_row(k, str(v))
    return table
