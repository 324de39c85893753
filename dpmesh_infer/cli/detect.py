"""Typer commands of the keypoint detector: ``detect``, ``fetch-detector``, ``list-detectors``.

``app`` is a typer sub-app; the main ``dpmesh`` app mounts its commands. Errors are DpmeshError
subclasses: the message is printed (no traceback) and the process exits with the class's exit code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from .common import handle_errors
from ..devices import resolve_device
from ..errors import ImageError, InputError
from ..detect.detectors import DEFAULT_DETECTOR, DETECTORS

app = typer.Typer(help="2D keypoint detection (mmpose).", no_args_is_help=True, add_completion=False)


@app.command("detect")
@handle_errors
def detect_cmd(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Images, folders (recursive) or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Keypoint JSON to write (reusable with predict --keypoints)."),
    detector: str = typer.Option(DEFAULT_DETECTOR, "--detector", help=f"One of: {', '.join(DETECTORS)}."),
    det_config: Optional[Path] = typer.Option(None, "--det-config", help="Your own mmpose config (instead of --detector)."),
    det_checkpoint: Optional[Path] = typer.Option(None, "--det-checkpoint", help="Checkpoint for --det-config."),
    person_config: Optional[Path] = typer.Option(None, "--person-config",
                                                 help="mmdet person detector config (top-down --det-config only)."),
    person_checkpoint: Optional[Path] = typer.Option(None, "--person-checkpoint", help="Checkpoint for --person-config."),
    det_thr: float = typer.Option(0.3, "--det-thr", help="Minimum person score."),
    kpt_thr: float = typer.Option(0.3, "--kpt-thr", help="Keypoint score counted as confident."),
    min_keypoints: int = typer.Option(4, "--min-keypoints", help="Confident keypoints a person needs."),
    max_people: Optional[int] = typer.Option(None, "--max-people", help="Keep at most this many people per image."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights dir (detectors cached in DIR/detectors)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per forward pass."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every person dropped and why."),
) -> None:
    """Detect COCO-17 keypoints of every person and write them to a JSON file."""
    from rich.console import Console
    from rich.markup import escape

    from ..detect.mmpose_detector import KeypointDetector, Thresholds
    from ..detect.run import run_detect

    console = Console(stderr=True, soft_wrap=True)
    dev = str(resolve_device(device))
    th = Thresholds(det_thr=det_thr, kpt_thr=kpt_thr, min_keypoints=min_keypoints, max_people=max_people)
    if (det_config is None) != (det_checkpoint is None):
        raise InputError("give both --det-config and --det-checkpoint, or neither")
    if person_config is not None and det_config is None:
        raise InputError("--person-config/--person-checkpoint go with --det-config/--det-checkpoint")
    if det_config is not None:
        det = KeypointDetector.from_files(det_config, det_checkpoint, dev, person_config=person_config,
                                          person_checkpoint=person_checkpoint, thresholds=th,
                                          batch_size=batch_size)  # fmt: skip
    else:
        det = KeypointDetector.from_name(detector, weights, dev, progress=progress, thresholds=th,
                                         batch_size=batch_size)  # fmt: skip
    if progress:
        from rich.progress import Progress

        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(f"detecting ({det.name}, {dev})", total=None)
            summary = run_detect(inputs, out, det, det_thr=det_thr, kpt_thr=kpt_thr, max_people=max_people,
                                 min_keypoints=min_keypoints,
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))  # fmt: skip
    else:
        summary = run_detect(inputs, out, det, det_thr=det_thr, kpt_thr=kpt_thr, max_people=max_people,
                             min_keypoints=min_keypoints)  # fmt: skip
    console.print(f"{summary.people} people in {summary.images} image(s) -> {summary.out}", highlight=False)
    if summary.dropped:
        console.print(f"{len(summary.dropped)} people dropped by the thresholds"
                      + ("" if verbose else " (--verbose lists them)"), highlight=False)  # fmt: skip
        if verbose:
            for name, reason in summary.dropped:
                console.print(f"  {name}: {reason}", highlight=False, markup=False)
    for name, msg in summary.failed:
        console.print(f"[red]failed:[/] {escape(msg)}", highlight=False)
    if summary.failed:
        if summary.images == 0 and len(summary.failed) == 1:
            raise ImageError(summary.failed[0][1])
        raise typer.Exit(1)


@app.command("fetch-detector")
@handle_errors
def fetch_detector_cmd(
    name: str = typer.Argument(DEFAULT_DETECTOR, help=f"One of: {', '.join(DETECTORS)}."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Weights dir (default: $DPMESH_WEIGHTS, then the user cache)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a download progress bar."),
) -> None:
    """Download a detector's published weights into DIR/detectors and convert them for safe loading."""
    from rich.console import Console

    from ..weights.resolve import resolve_weights_dir
    from ..detect.detectors import fetch_detector

    wdir = resolve_weights_dir(weights, must_exist=False).path
    for path in fetch_detector(name, wdir, progress=progress):
        Console(soft_wrap=True).print(f"ok: {path}", highlight=False, markup=False)


@app.command("list-detectors")
@handle_errors
def list_detectors_cmd() -> None:
    """List the built-in detectors with their configs and weight URLs."""
    from rich.console import Console

    console = Console(soft_wrap=True)
    for spec in DETECTORS.values():
        default = " (default)" if spec.name == DEFAULT_DETECTOR else ""
        console.print(f"[bold]{spec.name}[/]{default}: {spec.kind}, input {spec.input_size[0]}x{spec.input_size[1]}",
                      highlight=False)  # fmt: skip
        console.print(f"  {spec.notes}", highlight=False, markup=False)
        for f in spec.files():
            console.print(f"  config  {f.config}\n  weights {f.url}", highlight=False, markup=False)


def main() -> None:  # pragma: no cover - for ``python -m dpmesh_infer.detect.cli``
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
