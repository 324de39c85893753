"""``dpmesh occlusion-map``: PARE-style occlusion-sensitivity maps of the people of one photo."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ImageError, InputError
from .common import (
    console,
    device_option,
    err_console,
    handle_errors,
    quiet_option,
    setup_logging,
    verbose_option,
    weights_option,
)

app = typer.Typer()


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@app.command("occlusion-map")
@handle_errors
def occlusion_map_cmd(
    image: Path = typer.Argument(..., help="The photo."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: person_NN/ (occlusion.npz, crop_<group>.png, "
                             "photo_<group>.png, summary.png) and occlusion.json."),
    keypoints: Optional[Path] = typer.Option(None, "--keypoints", "-k", help="Keypoint file (as for predict). "
                                             "Default: run the detector."),
    person: Optional[List[int]] = typer.Option(None, "--person", help="Person index in the keypoints "
                                               "(repeatable; default every person)."),
    patch: int = typer.Option(40, "--patch", help="Occluder side, pixels of the 256x256 crop."),
    stride: int = typer.Option(10, "--stride", help="Occluder step, crop pixels. Crops per person: "
                               "((256 - patch) // stride + 1)^2 (484 for 40/10, 121 for 40/20)."),
    fill: float = typer.Option(0.5, "--fill", help="Occluder grey value in [0, 1]."),
    drop_occluded_keypoints: bool = typer.Option(False, "--drop-occluded-keypoints", help="Also remove the "
                                                 "keypoints under the occluder (what a detector would lose)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Occluded crops per network batch."),
    weights: Optional[Path] = weights_option(),
    device: str = device_option(),
    dtype: str = typer.Option("auto", help="Network dtype: auto (fp16 on CUDA, fp32 on CPU), fp16, bf16, fp32."),
    detector: str = typer.Option("rtmo-l", "--detector", help="Keypoint detector when no --keypoints is given."),
    det_thr: float = typer.Option(0.3, "--det-thr", help="Minimum person detection score."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Refuse larger images."),
    quiet: bool = quiet_option("No progress bar."),
    verbose: int = verbose_option(),
):
    """Slide a grey square over each person's crop and map how much each joint group's 3D pose changes.

    Every occluder position is one network forward (the crops go through in batches): on a CPU with
    full-size weights that is about 14 s per crop, so a time estimate is printed first. The errors are
    root-relative 3D joint errors (mm) against the unoccluded prediction. Exit codes: 0 done, 2 bad
    option or keypoint file, 3 weights missing, 4 unusable image or no person, 5 matplotlib or the
    detector stack missing."""
    setup_logging(verbose, quiet)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..analysis.occlusion import OcclusionConfig, grid_shape
    from ..analysis.occlusion_run import SUMMARY_FILE, run_occlusion_maps
    from ..batch import check_writable
    from ..images import load_image
    from ..keypoint_files import read_keypoints
    from ..pipeline import Pipeline

    cfg = OcclusionConfig(patch=patch, stride=stride, batch_size=batch_size, fill=fill,
                          drop_occluded_keypoints=drop_occluded_keypoints)  # ConfigError: exit 2
    if not image.is_file():
        raise ImageError(f"image not found: {image}")
    for given in [image] + ([keypoints] if keypoints is not None else []):  # no output overwrites an input
        src = given.resolve()
        if src == (out / SUMMARY_FILE).resolve() or (src.parent.parent == out.resolve()
                                                     and src.parent.name.startswith("person_")):
            raise InputError(f"{given} lies where the output goes (--out {out}); choose another --out")
    kpset = read_keypoints(keypoints) if keypoints is not None else None
    rgb = load_image(image, max_pixels=max_pixels)
    check_writable(out)
    pipe = Pipeline.from_pretrained(weights, device=device, dtype=dtype)
    if pipe.config.untrained:
        err_console.print("[yellow]warning:[/] these weights are UNTRAINED (random init): the maps are meaningless")
    if kpset is not None:
        people = kpset.lookup(str(image))
        if people is None:
            raise InputError(f"{kpset.source} has no keypoints for image {image}")
    else:
        people = _detect(pipe, weights, detector, det_thr, image, rgb)

    size = pipe.config.preprocess.input_size
    rows, cols = grid_shape(size, patch, stride)  # InputError when the occluder is larger than the crop
    console.print(f"occluder {patch} px, stride {stride} px on the {size} px crop: {rows} x {cols} = {rows * cols} "
                  f"network forwards per person (batches of {batch_size}) on {pipe.device.type}",
                  highlight=False, markup=False)

    def estimate(i: int, seconds: float, n: int) -> None:
        console.print(f"person {i}: one forward took {seconds:.2f} s; {n} crops: about {_duration(seconds * n)} "
                      f"(batched crops usually run faster)", highlight=False, markup=False)

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, disable=quiet, transient=True) as bar:
        tasks: dict[int, int] = {}

        def progress(i: int, done: int, total: int) -> None:
            if i not in tasks:
                tasks[i] = bar.add_task(f"person {i}", total=total)
            bar.update(tasks[i], completed=done)

        report = run_occlusion_maps(pipe, rgb, people, out, cfg=cfg, persons=person, image_path=str(image),
                                    on_reference=estimate, progress=progress)
    for idx, reason in report.skipped:
        err_console.print(f"person {idx} skipped: {reason}", highlight=False, markup=False)
    for m in report.maps:
        groups = m.group_errors()
        peaks = ", ".join(f"{g} {float(v.max()):.1f}" for g, v in groups.items())
        console.print(f"person {m.person_index}: peak error (mm) {peaks}  [{m.seconds:.1f} s]", highlight=False,
                      markup=False)
    console.print(f"wrote {report.summary} and {sum(len(f) for f in report.files.values())} files", highlight=False,
                  markup=False)


def _detect(pipe, weights, detector: str, det_thr: float, image: Path, rgb):
    from ..detect.mmpose_detector import KeypointDetector, Thresholds
    from ..weights.resolve import resolve_weights_dir

    dev = "cuda" if pipe.device.type == "cuda" else "cpu"
    det = KeypointDetector.from_name(detector, resolve_weights_dir(weights).path, dev, progress=True,
                                     thresholds=Thresholds(det_thr=det_thr))
    found = det.detect([rgb])
    for d in found.dropped:
        err_console.print(f"{image.name}: detection (score {d.score:.2f}) dropped: {d.reason}", highlight=False,
                          markup=False)
    return [p.to_keypoint_person() for p in found.people[0]]
