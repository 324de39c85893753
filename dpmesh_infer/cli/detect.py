"""``dpmesh detect``: 2D keypoints of every person (mmpose), written as a reusable keypoint file.

(Fetching and listing detectors are ``dpmesh weights fetch`` / ``list-detectors``.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..detect.detectors import DEFAULT_DETECTOR, DETECTORS
from ..devices import resolve_device
from ..errors import ImageError, InputError
from .common import device_option, err_console, handle_errors, weights_option

app = typer.Typer()


@app.command("detect")
@handle_errors
def detect_cmd(
    inputs: list[str] = typer.Argument(..., metavar="INPUT...", help="Images, folders (recursive) or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Keypoint JSON to write (reusable with predict --keypoints)."),
    detector: str = typer.Option(DEFAULT_DETECTOR, "--detector", help=f"One of: {', '.join(DETECTORS)}."),
    det_config: Optional[Path] = typer.Option(None, "--det-config",
                                              help="Your own mmpose config (instead of --detector)."),
    det_checkpoint: Optional[Path] = typer.Option(None, "--det-checkpoint", help="Checkpoint for --det-config."),
    person_config: Optional[Path] = typer.Option(None, "--person-config",
                                                 help="mmdet person detector config (top-down --det-config only)."),
    person_checkpoint: Optional[Path] = typer.Option(None, "--person-checkpoint",
                                                     help="Checkpoint for --person-config."),
    det_thr: float = typer.Option(0.3, "--det-thr", help="Minimum person score."),
    kpt_thr: float = typer.Option(0.3, "--kpt-thr", help="Keypoint score counted as confident."),
    min_keypoints: int = typer.Option(4, "--min-keypoints", help="Confident keypoints a person needs."),
    max_people: Optional[int] = typer.Option(None, "--max-people", help="Keep at most this many people per image."),
    weights: Optional[Path] = weights_option("Weights directory (detectors are cached in DIR/detectors; default: "
                                             "$DPMESH_WEIGHTS, then ~/.cache/dpmesh)."),
    device: str = device_option(),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per forward pass."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List every person dropped and why."),
) -> None:
    """Detect COCO-17 keypoints of every person and write them to a JSON file."""
    from rich.markup import escape

    from ..atomic import check_writable_file
    from ..detect.mmpose_detector import KeypointDetector, Thresholds
    from ..detect.run import run_detect
    from ..inputs import refuse_overwriting_inputs, scan_inputs

    console = err_console
    dev = str(resolve_device(device))
    th = Thresholds(det_thr=det_thr, kpt_thr=kpt_thr, min_keypoints=min_keypoints, max_people=max_people)
    if (det_config is None) != (det_checkpoint is None):
        raise InputError("give both --det-config and --det-checkpoint, or neither")
    if person_config is not None and det_config is None:
        raise InputError("--person-config/--person-checkpoint go with --det-config/--det-checkpoint")
    scanned = scan_inputs(inputs)  # inputs and output checked before the detector is built
    refuse_overwriting_inputs(inputs=[("input image", im.path) for im in scanned.images], files=[out])
    check_writable_file(out)
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
                                 progress=lambda done, total: bar.update(task, completed=done, total=total))
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
