"""``dpmesh evaluate``: MPJPE / PA-MPJPE / MPVE against a dataset's ground-truth SMPL meshes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import (
    console,
    device_option,
    err_console,
    handle_errors,
    load_refine_config,
    quiet_option,
    refine_config_option,
    refine_option,
    setup_logging,
    verbose_option,
    weights_option,
)

app = typer.Typer()


@app.command("evaluate")
@handle_errors
def evaluate_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset directory (dpmesh-dataset format, with GT SMPL)."),
    weights: Optional[Path] = weights_option(),
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
    device: str = device_option(),
    batch_size: int = typer.Option(16, help="Persons per network batch."),
    chunk: int = typer.Option(8, "--chunk", help="Images per pipeline call."),
    per_person: bool = typer.Option(False, "--per-person", help="Also write every person's metrics to the JSON."),
    refine: bool = refine_option(),
    refine_config: Optional[Path] = refine_config_option(),
    quiet: bool = quiet_option("No progress bar."),
    verbose: int = verbose_option(),
):
    """MPJPE / PA-MPJPE / MPVE (mm) per split and subset tag against the dataset's GT SMPL meshes.

    Exit codes: 0 done (persons the pipeline skipped are listed as failures), 2 bad option or dataset,
    3 weights, H36M regressor or a needed gendered SMPL model missing."""
    setup_logging(verbose, quiet)
    from rich.progress import Progress

    from ..evaluate import evaluate_command

    with Progress(console=err_console, disable=quiet, transient=True) as bar:
        task = bar.add_task("evaluate", total=None)
        report, path = evaluate_command(
            weights, data, out=out, splits=split, inputs=inputs, h36m_regressor=h36m_regressor, smpl_male=smpl_male,
            smpl_female=smpl_female, allow_neutral_gt=allow_neutral_gt, device=device, batch_size=batch_size,
            chunk=chunk, per_person=per_person, progress=lambda done, total: bar.update(task, completed=done,
                                                                                        total=total),
            refine=load_refine_config(refine, refine_config))
    console.print(report.rich_table())
    for f in report.failures:
        err_console.print(f"not reconstructed: {f.split} {f.image} person {f.person}: {f.reason}", markup=False,
                          highlight=False)
    for w in report.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"report: {path}", highlight=False, markup=False)
