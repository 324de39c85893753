"""``dpmesh weights ...``: convert the release checkpoint, import SMPL, check a weights directory,
fetch and list the keypoint detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, handle_errors, say_ok, setup_logging, verbose_option, weights_option

app = typer.Typer(no_args_is_help=True, help="Convert, import and inspect weights.")


@app.command("convert-official")
@handle_errors
def convert_official_cmd(
    checkpoint: Path = typer.Argument(..., help="Release checkpoint, e.g. 3dpw_best_ckpt.pth.tar."),
    out: Path = typer.Option(..., "--out", "-o", help="Weights directory to create."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint",
                                          help="Allow full unpickling if weights_only loading fails. "
                                               "Runs code from the file: only for files you trust."),
    overwrite: bool = typer.Option(False, help="Replace an existing non-empty output directory."),
    half: bool = typer.Option(False, "--half", help="Store float16 weights (half the size)."),
    verbose: int = verbose_option(),
):
    """Convert an official DPMesh release checkpoint into a dpmesh weights directory."""
    setup_logging(verbose)
    import torch

    from ..weights.convert_official import convert_official
    from ..weights.layout import FIX_SMPL

    with console.status("converting (a 5.5 GB checkpoint takes a few minutes)..."):
        report = convert_official(checkpoint, out, trust_pickle=trust_checkpoint, overwrite=overwrite,
                                  dtype=torch.float16 if half else None)
    console.print(str(report), highlight=False, markup=False)
    console.print(f"next: {FIX_SMPL.format(dir=out)}", highlight=False, markup=False)


@app.command("import-smpl")
@handle_errors
def import_smpl_cmd(
    smpl_file: Path = typer.Argument(..., help="SMPL neutral model you downloaded (.pkl or .npz)."),
    weights: Optional[Path] = weights_option(),
    extra_regressor: Optional[Path] = typer.Option(None, help="Optional J_regressor_extra.npy (head top)."),
    pkl: bool = typer.Option(False, "--pkl", help="Also write a chumpy-free smpl/SMPL_NEUTRAL.pkl that smplx and "
                             "other SMPL tools load (smplx.SMPL(model_path=...), no chumpy needed)."),
):
    """Validate the SMPL neutral model and store a clean (chumpy-free) copy in the weights directory."""
    from ..weights.layout import smpl_pkl_file
    from ..weights.resolve import resolve_weights_dir
    from ..weights.smpl import import_smpl

    loc = resolve_weights_dir(weights, must_exist=False)
    path = import_smpl(smpl_file, loc.path, extra_regressor=extra_regressor, pkl=pkl)
    console.print(f"SMPL stored at {path}", highlight=False, markup=False)
    if pkl:
        console.print(f"for smplx: {smpl_pkl_file(loc.path)}  (smplx.SMPL(model_path=...) or "
                      f"smplx.create({str(loc.path)!r}, model_type='smpl', gender='neutral'))",
                      highlight=False, markup=False)


@app.command("check")
@handle_errors
def check_cmd(weights: Optional[Path] = weights_option()):
    """Check that a weights directory is complete and loads (strictly) on the CPU."""
    from ..pipeline import Pipeline

    pipe = Pipeline.from_pretrained(weights, device="cpu")
    n = sum(p.numel() for m in (pipe.backbone, pipe.regressor, pipe.pose_decoder) for p in m.parameters())
    console.print(f"ok: {n / 1e6:.1f} M parameters, pose decoder {pipe.config.pose_decoder}"
                  + (" [yellow](untrained)[/]" if pipe.config.untrained else ""))


@app.command("fetch")
@handle_errors
def fetch_cmd(
    detector: str = typer.Option(..., "--detector", "-d", help="Detector name (see `dpmesh weights list-detectors`)."),
    weights: Optional[Path] = weights_option(),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a download progress bar."),
):
    """Download a keypoint detector's published weights into DIR/detectors (converted for safe loading)."""
    from ..detect.detectors import fetch_detector
    from ..weights.resolve import resolve_weights_dir

    wdir = resolve_weights_dir(weights, must_exist=False).path
    for path in fetch_detector(detector, wdir, progress=progress):
        say_ok(str(path))


@app.command("list-detectors")
@handle_errors
def list_detectors_cmd() -> None:
    """List the built-in detectors with their configs and weight URLs."""
    from ..detect.detectors import DEFAULT_DETECTOR, DETECTORS

    for spec in DETECTORS.values():
        default = " (default)" if spec.name == DEFAULT_DETECTOR else ""
        console.print(f"[bold]{spec.name}[/]{default}: {spec.kind}, input {spec.input_size[0]}x{spec.input_size[1]}",
                      highlight=False)
        console.print(f"  {spec.notes}", highlight=False, markup=False)
        for f in spec.files():
            console.print(f"  config  {f.config}\n  weights {f.url}", highlight=False, markup=False)
