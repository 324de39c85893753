"""The ``dpmesh`` command line (typer + rich).

Every expected failure is a :class:`~dpmesh_infer.errors.DpmeshError`: the CLI prints its message
(no traceback) and exits with the error's code: 2 bad input/usage, 3 weights missing or invalid,
4 the single input is unusable (unreadable image, no person found), 1 some inputs failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .. import __version__
from .common import err_console, handle_errors, setup_logging
from ..errors import DpmeshError, ImageError, InputError, NoPersonError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="3D human meshes (SMPL) from photos of crowded scenes, with DPMesh.")
weights_app = typer.Typer(no_args_is_help=True, help="Convert, import and inspect weights.")
app.add_typer(weights_app, name="weights")

console = Console()


_setup_logging = setup_logging


def _version(value: bool):
    if value:
        console.print(f"dpmesh {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """dpmesh: 3D human meshes from crowd photos."""


# ---------------------------------------------------------------------------------------- predict

@app.command()
@handle_errors
def predict(
    images: List[Path] = typer.Argument(..., metavar="INPUT...",
                                        help="Image files, folders (searched recursively) or glob patterns "
                                             "(quote them: 'photos/**/*.jpg')."),
    keypoints: Optional[Path] = typer.Option(None, "--keypoints", "-k",
                                             help="Keypoint file (COCO keypoint results JSON, OpenPose JSON "
                                                  "or `dpmesh detect` output). Default: run the detector."),
    out: Path = typer.Option(..., "--out", "-o",
                             help="Output: FILE.npz / .obj / .ply / .glb / .json for one image, or a folder "
                                  "(one sub-folder per image with people.json, params.npz, person_NN.obj, "
                                  "scene.glb; plus manifest.jsonl)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w",
                                           help="Weights directory (default: $DPMESH_WEIGHTS, then "
                                                "~/.cache/dpmesh)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    dtype: str = typer.Option("auto", help="Network dtype: auto (fp16 on CUDA, fp32 on CPU), fp16, bf16, fp32."),
    focal: Optional[str] = typer.Option(None, "--focal", metavar="PIXELS|exif",
                                        help="Focal length of the output camera: pixels, or 'exif' to use the "
                                             "photo's EXIF FocalLengthIn35mmFilm (default sqrt(W^2+H^2), as the "
                                             "model was trained; also when the tag is absent)."),
    fov: Optional[float] = typer.Option(None, "--fov", metavar="DEGREES",
                                        help="Horizontal field of view instead of --focal: f = W/2 / tan(fov/2)."),
    batch_size: int = typer.Option(16, help="Persons per network batch."),
    chunk: int = typer.Option(8, "--chunk", help="Folder runs: images loaded, detected and reconstructed together "
                                                 "(their persons share network batches); written chunk by chunk."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Folder runs: redo images whose output folder is "
                                                              "already finished (default: skip them, i.e. resume)."),
    render: bool = typer.Option(False, "--render", help="Also render the people (pyrender, headless EGL or OSMesa): "
                                "overlay.png over the photo and side.png per image folder, or <stem>_overlay.png "
                                "and <stem>_side.png beside a single --out file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table (errors still shown)."),
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
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-vv for debug)."),
):
    """Reconstruct every person of the INPUT images and write meshes and parameters.

    Keypoints come from --keypoints, or else from the mmpose detector (RTMO by default). With a folder
    as --out, finished images are skipped on a re-run (--overwrite redoes them) and one bad image never
    stops the run. Exit codes: 0 all done, 1 some images failed, 2 usage error, 3 weights missing,
    4 the single input is unusable."""
    _setup_logging(verbose, quiet)
    from ..export import SUFFIXES

    if max_pixels is not None:
        if max_pixels < 1:
            raise InputError("--max-pixels must be a positive number of pixels")
        os.environ["DPMESH_MAX_PIXELS"] = str(max_pixels)  # read by images.load_image in this process

    suffix = out.suffix.lower()
    to_folder = suffix == "" or out.is_dir()
    if not to_folder and suffix not in SUFFIXES:
        raise InputError(f"--out {out}: use a folder or a file ending in {', '.join(SUFFIXES)}")
    if (det_config is None) != (det_checkpoint is None):
        raise InputError("give both --det-config and --det-checkpoint, or neither")
    from ..focal import parse_focal_options

    focal = parse_focal_options(focal, fov)
    det_opts = dict(detector=detector, det_config=det_config, det_checkpoint=det_checkpoint, det_thr=det_thr,
                    kpt_thr=kpt_thr, max_people=max_people)
    if to_folder:
        _predict_folder(images, out, keypoints=keypoints, weights=weights, device=device, dtype=dtype, focal=focal,
                        batch_size=batch_size, chunk=chunk, overwrite=overwrite, quiet=quiet, det_opts=det_opts,
                        render=render)
        return
    _predict_file(images, out, keypoints=keypoints, weights=weights, device=device, dtype=dtype, focal=focal,
                  batch_size=batch_size, det_opts=det_opts, render=render)


def _load_pipeline(weights, device, dtype):
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(weights, device=device, dtype=dtype)
    if pipe.config.untrained:
        err_console.print("[yellow]warning:[/] these weights are UNTRAINED (random init): meshes are meaningless")
    return pipe


def _predict_file(images: List[Path], out: Path, *, keypoints, weights, device, dtype, focal, batch_size,
                  det_opts, render=False) -> None:
    """One image -> one output file (and its .json beside a mesh)."""
    from ..keypoint_files import read_keypoints
    from ..export import save_result

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        err = ImageError if len(images) == 1 else InputError
        raise err(f"image not found: {', '.join(missing)}")
    if len(images) > 1:
        raise InputError(f"--out {out} is a single file but {len(images)} images were given; pass a folder")
    kpset = read_keypoints(keypoints) if keypoints is not None else None
    f_px, f_source = focal.for_path(images[0])
    pipe = _load_pipeline(weights, device, dtype)
    if kpset is not None:
        result = pipe([str(p) for p in images], keypoints=kpset, focal=[f_px], batch_size=batch_size)
    else:
        result = _predict_with_detector(pipe, images, weights, focal=[f_px], batch_size=batch_size, **det_opts)
    res = result[0]
    res.focal_source = f_source
    for idx, reason in res.skipped:
        err_console.print(f"{images[0].name}: person {idx} skipped: {reason}")
    if not res.persons:
        raise NoPersonError(f"{images[0]}: no person could be reconstructed ({len(res.skipped)} skipped, see above)")
    written = save_result(res, result.faces, out)
    if render:
        _render_file(images[0], res, result.faces, out)
    n = result.num_persons
    console.print(f"{n} person{'s' if n != 1 else ''} from 1 image -> {written}")


def _predict_folder(images: List[Path], out: Path, *, keypoints, weights, device, dtype, focal, batch_size, chunk,
                    overwrite, quiet, det_opts, render=False) -> None:
    """Folder run (see dpmesh_infer.batch): resumable, manifest, progress bar, summary, exit 0/1/4."""
    from ..batch import BatchRunner, DetectorKeypoints, FileKeypoints, check_writable, plan_batch
    from ..keypoint_files import read_keypoints

    if chunk < 1 or batch_size < 1:
        raise InputError("--chunk and --batch-size must be at least 1")
    single = len(images) == 1 and images[0].is_file()
    if single:
        load_error = _check_single_image(images[0])
        if load_error is not None:
            raise load_error
    plan = plan_batch([str(p) for p in images], out, overwrite=overwrite, render=render)
    check_writable(out)
    if plan.non_images:
        shown = plan.non_images[:20]
        err_console.print(f"skipping {len(plan.non_images)} non-image file(s): "
                          + ", ".join(str(p) for p in shown) + (" ..." if len(plan.non_images) > 20 else ""),
                          highlight=False, markup=False)
    kp_source = pipe = None
    if plan.todo:
        kpset = read_keypoints(keypoints) if keypoints is not None else None
        pipe = _load_pipeline(weights, device, dtype)
        kp_source = FileKeypoints(kpset) if kpset is not None else DetectorKeypoints(
            _make_detector(pipe, weights, **det_opts))
    total = len(plan.todo) + len(plan.finished)
    renderer = _make_renderer() if render and plan.todo else None  # once per run, before any image
    try:
        with _BatchProgress(total, quiet) as progress:
            runner = BatchRunner(pipe, kp_source, chunk=chunk, batch_size=batch_size, focal=focal,
                                 on_record=progress.update, renderer=renderer)
            summary = runner.run(plan)
    finally:
        if renderer is not None:
            renderer.close()
    for rec in summary.failed if not single else []:
        err_console.print(f"failed: {rec.image.name}: {rec.error}", highlight=False, markup=False)
    if not quiet:
        console.print(_summary_table(summary, out))
    if summary.interrupted:
        err_console.print("interrupted: finished images are kept; run the same command again to resume")
        raise typer.Exit(130)
    if single and summary.failed:
        raise ImageError(f"{images[0]}: {summary.failed[0].error}")
    raise typer.Exit(1 if summary.failed else 0)


def _make_renderer():
    """The headless renderer of --render (pyrender is imported only here); RenderError if none works."""
    from ..render import Renderer

    return Renderer()


def _render_file(image_path: Path, res, faces, out: Path) -> None:
    """--render with a single --out file: <stem>_overlay.png and <stem>_side.png beside it."""
    from ..batch import write_renders
    from ..images import load_image

    with _make_renderer() as renderer:
        write_renders(renderer, res, faces, load_image(image_path), out.with_name(f"{out.stem}_overlay.png"),
                      out.with_name(f"{out.stem}_side.png"))


def _check_single_image(path: Path):
    """For a one-image run: the ImageError that makes it unusable (exit 4), or None."""
    from ..images import load_image

    try:
        load_image(path)
    except ImageError as e:
        return e
    return None


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
            ("persons (this run)", summary.new_persons), ("seconds", f"{summary.seconds:.1f}"),
            ("images/s", f"{computed / dt:.2f}"), ("persons/s", f"{summary.new_persons / dt:.2f}")]
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def _make_detector(pipe, weights, *, detector, det_config, det_checkpoint, det_thr, kpt_thr, max_people):
    from ..detect.mmpose_detector import KeypointDetector, Thresholds

    th = Thresholds(det_thr=det_thr, kpt_thr=kpt_thr, max_people=max_people)
    dev = "cuda" if pipe.device.type == "cuda" else "cpu"
    if det_config is not None:
        return KeypointDetector.from_files(det_config, det_checkpoint, dev, thresholds=th)
    return KeypointDetector.from_name(detector, pipe_weights_dir(weights), dev, progress=True, thresholds=th)


def _predict_with_detector(pipe, images: List[Path], weights, *, focal, batch_size, **det_opts):
    """Detect keypoints with mmpose (batched over images), then run the pipeline on the same arrays."""
    from ..batch import DetectorKeypoints
    from ..images import load_image

    arrays = [load_image(p) for p in images]
    found = DetectorKeypoints(_make_detector(pipe, weights, **det_opts))(images, arrays)
    for img, kp in zip(images, found):
        for msg in kp.dropped:
            err_console.print(f"{img.name}: {msg}", highlight=False, markup=False)
    result = pipe(arrays, keypoints=[kp.persons for kp in found], focal=focal, batch_size=batch_size)
    for img, res in zip(images, result):
        res.source = str(img)
    return result


def pipe_weights_dir(weights) -> Path:
    from ..weights.resolve import resolve_weights_dir

    return resolve_weights_dir(weights).path


# ---------------------------------------------------------------------------------------- weights

@weights_app.command("convert-official")
@handle_errors
def convert_official_cmd(
    checkpoint: Path = typer.Argument(..., help="Release checkpoint, e.g. 3dpw_best_ckpt.pth.tar."),
    out: Path = typer.Option(..., "--out", "-o", help="Weights directory to create."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint",
                                          help="Allow full unpickling if weights_only loading fails. "
                                               "Runs code from the file: only for files you trust."),
    overwrite: bool = typer.Option(False, help="Replace an existing non-empty output directory."),
    half: bool = typer.Option(False, "--half", help="Store float16 weights (half the size)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
):
    """Convert an official DPMesh release checkpoint into a dpmesh weights directory."""
    _setup_logging(verbose)
    import torch

    from ..weights.convert_official import convert_official

    with console.status("converting (a 5.5 GB checkpoint takes a few minutes)..."):
        report = convert_official(checkpoint, out, trust_pickle=trust_checkpoint, overwrite=overwrite,
                                  dtype=torch.float16 if half else None)
    console.print(str(report))
    console.print(f"next: dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights {out}")


@weights_app.command("import-smpl")
@handle_errors
def import_smpl_cmd(
    smpl_file: Path = typer.Argument(..., help="SMPL neutral model you downloaded (.pkl or .npz)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights directory (default: "
                                           "$DPMESH_WEIGHTS, then ~/.cache/dpmesh)."),
    extra_regressor: Optional[Path] = typer.Option(None, help="Optional J_regressor_extra.npy (head top)."),
):
    """Validate the SMPL neutral model and store a clean (chumpy-free) copy in the weights directory."""
    from ..weights.resolve import resolve_weights_dir
    from ..weights.smpl import import_smpl

    loc = resolve_weights_dir(weights, must_exist=False)
    path = import_smpl(smpl_file, loc.path, extra_regressor=extra_regressor)
    console.print(f"SMPL stored at {path}")


@weights_app.command("check")
@handle_errors
def check_cmd(
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights directory."),
):
    """Check that a weights directory is complete and loads (strictly) on the CPU."""
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(weights, device="cpu")
    n = sum(p.numel() for m in (pipe.backbone, pipe.regressor, pipe.pose_decoder) for p in m.parameters())
    console.print(f"ok: {n / 1e6:.1f} M parameters, pose decoder {pipe.config.pose_decoder}"
                  + (" [yellow](untrained)[/]" if pipe.config.untrained else ""))


# ---------------------------------------------------------------------------------------- train

from .train import train_app  # noqa: E402  (the training commands live with the trainer)

app.add_typer(train_app, name="train")

from .data import data_app  # noqa: E402  (`dpmesh data ...`; converters are imported when run)

app.add_typer(data_app, name="data")


# ---------------------------------------------------------------------------------------- evaluate

@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory (dpmesh-dataset format, with GT SMPL)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights directory (default: "
                                           "$DPMESH_WEIGHTS, then ~/.cache/dpmesh)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report JSON file or existing folder "
                                       "(default: ./<dataset name>-eval.json)."),
    split: Optional[List[str]] = typer.Option(None, "--split", help="Split to evaluate (repeatable; default all)."),
    inputs: str = typer.Option("auto", "--inputs", help="auto (detector keypoints of the dataset where a person "
                               "has them, else GT keypoints), detected (only those; error if missing) or gt."),
    h36m_regressor: Optional[Path] = typer.Option(None, "--h36m-regressor", help="J_regressor_h36m_correct.npy "
                                                  "(17x6890); default <weights>/smpl/J_regressor_h36m.npy."),
    smpl_male: Optional[Path] = typer.Option(None, "--smpl-male", help="Male SMPL model for male GT: .pkl, or a "
                                             "folder / .npz written by `dpmesh weights import-smpl`."),
    smpl_female: Optional[Path] = typer.Option(None, "--smpl-female", help="Female SMPL model, as --smpl-male."),
    allow_neutral_gt: bool = typer.Option(False, "--allow-neutral-gt", help="Build male/female GT with the neutral "
                                          "body when their model is not given (noted in the report)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(16, help="Persons per network batch."),
    chunk: int = typer.Option(8, "--chunk", help="Images per pipeline call."),
    per_person: bool = typer.Option(False, "--per-person", help="Also write every person's metrics to the JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True),
):
    """MPJPE / PA-MPJPE / MPVE (mm) per split and subset tag against the dataset's GT SMPL meshes.

    Exit codes: 0 done (persons the pipeline skipped are listed as failures), 2 bad option or dataset,
    3 weights, H36M regressor or a needed gendered SMPL model missing."""
    _setup_logging(verbose, quiet)
    from rich.progress import Progress

    from ..evaluate import evaluate_command

    with Progress(console=err_console, disable=quiet, transient=True) as bar:
        task = bar.add_task("evaluate", total=None)
        report, path = evaluate_command(
            weights, data, out=out, splits=split, inputs=inputs, h36m_regressor=h36m_regressor, smpl_male=smpl_male,
            smpl_female=smpl_female, allow_neutral_gt=allow_neutral_gt, device=device, batch_size=batch_size,
            chunk=chunk, per_person=per_person, progress=lambda done, total: bar.update(task, completed=done,
                                                                                        total=total))
    console.print(report.rich_table())
    for f in report.failures:
        err_console.print(f"not reconstructed: {f.split} {f.image} person {f.person}: {f.reason}", markup=False,
                          highlight=False)
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"report: {path}", highlight=False, markup=False)


# ---------------------------------------------------------------------------------------- doctor

@app.command()
@handle_errors
def doctor(
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights directory (default: "
                                           "$DPMESH_WEIGHTS, then ~/.cache/dpmesh)."),
):
    """Check the installation: Python, torch/CUDA/fp16, packages, detector stack, renderers, weights.

    Exit codes: 0 ready, 3 weights missing (everything is still reported), 1 a core package is broken."""
    from ..doctor import run_doctor

    raise typer.Exit(run_doctor(weights, console=console))


# ---------------------------------------------------------------------------------------- selftest

@app.command()
@handle_errors
def selftest(
    keep: Optional[Path] = typer.Option(None, help="Keep the generated weights and outputs in this folder."),
):
    """Run the whole pipeline on generated, UNTRAINED weights and a synthetic image: proves the install."""
    from ..selftest import run_selftest

    ok = run_selftest(keep=keep, console=console)
    raise typer.Exit(0 if ok else 1)


@weights_app.command("fetch")
@handle_errors
def fetch_cmd(
    detector: str = typer.Option(..., "--detector", "-d", help="Detector name (see `dpmesh weights list-detectors`)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weights directory (default: "
                                           "$DPMESH_WEIGHTS, then ~/.cache/dpmesh)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a download progress bar."),
):
    """Download a keypoint detector's published weights into DIR/detectors (converted for safe loading)."""
    from ..detect.detectors import fetch_detector
    from ..weights.resolve import resolve_weights_dir

    wdir = resolve_weights_dir(weights, must_exist=False).path
    for path in fetch_detector(detector, wdir, progress=progress):
        console.print(f"ok: {path}", highlight=False, markup=False)


def _mount_detector() -> None:
    """`dpmesh detect` and `dpmesh weights list-detectors` (the mmpose stack is imported only when run)."""
    from .detect import detect_cmd, list_detectors_cmd

    app.command("detect")(detect_cmd)
    weights_app.command("list-detectors")(list_detectors_cmd)


_mount_detector()


def main() -> None:  # console-script entry point
    try:
        app()
    except DpmeshError as e:  # raised outside a command (e.g. in a callback)
        err_console.print(f"error: {e}")
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
