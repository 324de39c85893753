"""``dpmesh predict`` for videos (``clip.mp4``, ``.mov``, ``.avi``, ``.mkv``, ``.webm``, or a folder of
numbered frames with ``--sequence``) and ``--rig`` for photos: the options, their checks, the progress
bar and summary. The command itself stays in :mod:`.predict`, which hands video inputs to
:func:`predict_video`; the work is done by :mod:`dpmesh_infer.video`.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import EXIT_INTERRUPTED, EXIT_TERMINATED, InputError
from .common import console, err_console

VIDEO_HELP = "Video options"
#: Samples per stored chunk of a video run when --chunk is not given (run.json records it).
DEFAULT_VIDEO_CHUNK = 8


# ---------------------------------------------------------------------------------------- options

def sequence_option():
    return typer.Option(False, "--sequence", rich_help_panel=VIDEO_HELP,
                        help="The INPUT folder is one video as numbered frames (frame_0001.png ...), not a folder "
                             "of photos.")


def sequence_fps_option():
    return typer.Option(30.0, "--sequence-fps", rich_help_panel=VIDEO_HELP, help="Frame rate of a --sequence folder.")


def fps_option():
    return typer.Option(None, "--fps", rich_help_panel=VIDEO_HELP,
                        help="Resample the video to N frames per second (each tick takes the nearest frame); "
                             "needed for variable frame rate videos.")


def every_option():
    return typer.Option(None, "--every", rich_help_panel=VIDEO_HELP, help="Use every K-th frame.")


def start_option():
    return typer.Option(None, "--start", rich_help_panel=VIDEO_HELP,
                        help="First frame: seconds (12.5, 12.5s, 1:02.5) or a frame index (300f).")


def end_option():
    return typer.Option(None, "--end", rich_help_panel=VIDEO_HELP,
                        help="End (exclusive): seconds or a frame index (900f).")


def smooth_option():
    return typer.Option("oneeuro", "--smooth", rich_help_panel=VIDEO_HELP,
                        help="Temporal smoothing per track: oneeuro (One-Euro forward and backward, no lag: "
                             "rotations on SO(3), root position, fixed betas), oneeuro-causal (one pass, lags) or "
                             "none. Raw values are kept either way.")


def smooth_min_cutoff_option():
    return typer.Option(1.0, "--smooth-min-cutoff", rich_help_panel=VIDEO_HELP,
                        help="One-Euro cutoff at rest, Hz (lower: smoother, more lag).")


def smooth_beta_option():
    return typer.Option(0.3, "--smooth-beta", rich_help_panel=VIDEO_HELP,
                        help="One-Euro speed coefficient, Hz per rad/s or m/s (higher: less lag in fast motion).")


def smooth_d_cutoff_option():
    return typer.Option(1.0, "--smooth-d-cutoff", rich_help_panel=VIDEO_HELP,
                        help="One-Euro cutoff of the speed estimate, Hz.")


def track_min_frames_option():
    return typer.Option(3, "--track-min-frames", rich_help_panel=VIDEO_HELP,
                        help="Consecutive frames a new person must be seen before it becomes a track.")


def track_max_gap_option():
    return typer.Option(1.0, "--track-max-gap", rich_help_panel=VIDEO_HELP,
                        help="Seconds a track may go unseen and keep its id (re-identification); it ends after.")


def track_min_similarity_option():
    return typer.Option(0.3, "--track-min-similarity", rich_help_panel=VIDEO_HELP,
                        help="Smallest 0.5*OKS + 0.5*box IoU accepted as the same person.")


def rig_option():
    return typer.Option(False, "--rig", help="With --out FILE.glb: write one skinned SMPL armature per person, "
                                             "posed (for retargeting in Blender).")


@dataclass(frozen=True)
class VideoArgs:
    """The video options of ``predict`` as given."""

    sequence: bool = False
    sequence_fps: float = 30.0
    fps: float | None = None
    every: int | None = None
    start: str | None = None
    end: str | None = None
    smooth: str = "oneeuro"
    smooth_min_cutoff: float = 1.0
    smooth_beta: float = 0.3
    smooth_d_cutoff: float = 1.0
    track_min_frames: int = 3
    track_max_gap: float = 1.0
    track_min_similarity: float = 0.3


def is_video_run(images: List[Path], args: VideoArgs) -> bool:
    """True when the inputs are one video file (by suffix) or a --sequence folder; InputError when a video
    is mixed with other inputs."""
    from ..video.decode import is_video_path

    videos = [p for p in images if is_video_path(p)]
    if args.sequence or videos:
        if len(images) != 1:
            raise InputError("give one video (or one --sequence folder) per run; "
                             f"got {len(images)} inputs: {', '.join(str(p) for p in images[:4])}")
        return True
    return False


def reject_for_photos(args: VideoArgs) -> None:
    """Video-only options given for photos are a usage error (never silently ignored)."""
    given = [name for name, value, default in (
        ("--fps", args.fps, None), ("--every", args.every, None), ("--start", args.start, None),
        ("--end", args.end, None), ("--sequence-fps", args.sequence_fps, 30.0), ("--smooth", args.smooth, "oneeuro"),
        ("--smooth-min-cutoff", args.smooth_min_cutoff, 1.0), ("--smooth-beta", args.smooth_beta, 0.3),
        ("--smooth-d-cutoff", args.smooth_d_cutoff, 1.0), ("--track-min-frames", args.track_min_frames, 3),
        ("--track-max-gap", args.track_max_gap, 1.0), ("--track-min-similarity", args.track_min_similarity, 0.3),
    ) if value != default]
    if given:
        raise InputError(f"{', '.join(given)} apply to videos only (INPUT clip.mp4, or a frame folder with --sequence)")


def check_rig(rig: bool, out: Path, to_folder: bool) -> None:
    if rig and (to_folder or out.suffix.lower() != ".glb"):
        raise InputError("--rig writes a skinned .glb: use it with --out FILE.glb (one image)")


def save_rig(result, pipe, out: Path) -> Path:
    """``--rig``: the posed armatures of ``result`` as ``out`` (.glb) and the parameters as ``<stem>.json``."""
    from ..atomic import write_bytes
    from ..export import save_json
    from ..render import person_colors
    from ..video.gltf import build_rig_glb, rigs_for_image

    colors = person_colors(len(result.persons))
    glb = build_rig_glb(rigs_for_image(result, colors), pipe.body.arrays, pipe.faces, K=result.K,
                        image_size=result.image_size, animate=False, extras={"image": result.source})
    write_bytes(out, glb)
    save_json(result, out.with_suffix(".json"))
    return out


# ---------------------------------------------------------------------------------------- the run

class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an interruption so that finished chunks are kept."""


@contextmanager
def _sigterm_as_interrupt():
    def handler(signum, frame):
        raise _Terminated()

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def build_run_options(args: VideoArgs, *, chunk: int, batch_size: int | None, focal, render: bool, overwrite: bool,
                      fps_hint: float):
    """VideoRunOptions from the CLI values (``fps_hint``: the samples' rate, for --track-max-gap)."""
    from ..video.decode import SamplingOptions, parse_time_point
    from ..video.run import VideoRunOptions
    from ..video.smooth import OneEuroConfig
    from ..video.track import TrackerConfig

    if args.smooth not in ("oneeuro", "oneeuro-causal", "none"):
        raise InputError(f"--smooth {args.smooth!r}: use oneeuro, oneeuro-causal or none")
    if args.track_max_gap < 0:
        raise InputError("--track-max-gap must be >= 0 seconds")
    sampling = SamplingOptions(fps=args.fps, every=args.every,
                               start=None if args.start is None else parse_time_point(args.start, "--start"),
                               end=None if args.end is None else parse_time_point(args.end, "--end"))
    smoothing = None if args.smooth == "none" else OneEuroConfig(args.smooth_min_cutoff, args.smooth_beta,
                                                                  args.smooth_d_cutoff,
                                                                  zero_lag=args.smooth == "oneeuro")
    if smoothing is not None:
        smoothing.validate()
    tracker = TrackerConfig(min_hits=args.track_min_frames, max_gap=int(round(args.track_max_gap * fps_hint)),
                            min_similarity=args.track_min_similarity)
    tracker.validate()
    return VideoRunOptions(sampling=sampling, chunk=chunk, batch_size=batch_size, focal=focal, smoothing=smoothing,
                           tracker=tracker, render=render, overwrite=overwrite)


def predict_video(images: List[Path], out: Path, *, keypoints: Optional[Path], opts, chunk: int, overwrite: bool,
                  quiet: bool, args: VideoArgs) -> None:
    """The video branch of ``dpmesh predict`` (exit 0 done, 1 some chunks failed or frames missing,
    2 usage, 3 weights, 4 unusable video, 5 missing component, 130/143 interrupted)."""
    from ..video.decode import plan_samples
    from ..video.keypoints import read_frame_keypoints
    from ..video.run import open_video, run_identity, run_video
    from ..weights.resolve import resolve_weights_dir
    from .predict import _load_pipeline, _make_detector, _make_renderer

    source = images[0]
    if out.suffix and not out.is_dir():
        raise InputError(f"--out {out}: a video run writes a folder (tracks.npz, tracks.json, scene.glb, ...); "
                         "give a folder name")
    if args.sequence and not source.is_dir():
        raise InputError(f"--sequence: {source} is not a folder of frame images")
    info = open_video(source, sequence=args.sequence, sequence_fps=args.sequence_fps)
    probe_opts = build_run_options(args, chunk=chunk, batch_size=opts.batch_size, focal=opts.focal,
                                   render=opts.render, overwrite=overwrite, fps_hint=info.fps)
    plan = plan_samples(info, probe_opts.sampling)  # refuses VFR without --fps, empty ranges
    run_opts = build_run_options(args, chunk=chunk, batch_size=opts.batch_size, focal=opts.focal,
                                 render=opts.render, overwrite=overwrite, fps_hint=plan.fps)
    kp_file = read_frame_keypoints(keypoints, source.name) if keypoints is not None else None
    d = opts.detector
    detector_id = None if kp_file is not None else (
        f"{d.det_config}:{d.det_checkpoint}" if d.det_config else d.detector) + \
        f" det_thr={d.det_thr} kpt_thr={d.kpt_thr} max_people={d.max_people}"
    weights_dir = str(resolve_weights_dir(opts.weights).path)
    identity = run_identity(info, run_opts, keypoints_path=keypoints, detector=detector_id, weights=weights_dir)
    if not quiet:
        err_console.print(f"{source}: {info.width}x{info.height}, {info.frame_count} frames at {info.fps:.3f} fps "
                          f"-> {len(plan.samples)} samples at {plan.fps:.3f} fps, chunks of {chunk}",
                          highlight=False, markup=False)

    def load_body():
        from ..weights.smpl import load_smpl

        return load_smpl(weights_dir)

    n_chunks = -(-len(plan.samples) // chunk)
    with _VideoProgress(n_chunks, quiet) as progress, _sigterm_as_interrupt():
        try:
            summary = run_video(info, out, run_opts, load_pipeline=lambda: _load_pipeline(opts), load_body=load_body,
                                kp_file=kp_file, make_detector=lambda pipe: _make_detector(pipe, opts),
                                identity=identity, make_renderer=_make_renderer, on_chunk=progress.update)
        except _Terminated:
            err_console.print("terminated: finished chunks are kept; run the same command again to resume")
            raise typer.Exit(EXIT_TERMINATED) from None
    if summary.interrupted:
        terminated = isinstance(summary.interruption, _Terminated)
        err_console.print(f"{'terminated' if terminated else 'interrupted'}: finished chunks are kept; run the same "
                          "command again to resume")
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    for rec in summary.failed:
        err_console.print(f"chunk {rec.chunk} (frames {rec.frames[0]}-{rec.frames[1]}) failed: {rec.error}",
                          highlight=False, markup=False)
    missing = summary.missing_frames
    if missing:
        err_console.print(f"{len(missing)} frame(s) could not be decoded and have no people: "
                          f"{', '.join(map(str, missing[:12]))}{' ...' if len(missing) > 12 else ''}",
                          highlight=False, markup=False)
    if not quiet:
        console.print(_summary_table(summary, out))
    raise typer.Exit(1 if (summary.failed or missing) else 0)


class _VideoProgress:
    """Rich progress bar over chunks (samples/s, persons/s of the chunks computed in this run)."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.quiet = total, quiet
        self.samples = self.persons = 0
        self._progress = None

    def __enter__(self):
        import time

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._t0 = time.perf_counter()
        if not self.quiet:
            self._progress = Progress(TextColumn("[bold]video chunks"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err_console)
            self._progress.__enter__()
            self._task = self._progress.add_task("video", total=self.total, rate="")
        return self

    def update(self, rec) -> None:
        import time

        if rec.status == "done":
            self.samples += rec.samples[1] - rec.samples[0] + 1
            self.persons += rec.persons
        if self._progress is not None:
            dt = max(time.perf_counter() - self._t0, 1e-9)
            self._progress.update(self._task, advance=1,
                                  rate=f"{self.samples / dt:.2f} frames/s  {self.persons / dt:.2f} persons/s")

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)
        return False


def _summary_table(summary, out: Path):
    from rich.table import Table

    table = Table(title=f"dpmesh predict {summary.info.path.name} -> {out}", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    done = [r for r in summary.records if r.status == "done"]
    samples = sum(r.samples[1] - r.samples[0] + 1 for r in done)
    rows = [("chunks done", summary.count("done")), ("chunks skipped (finished before)", summary.count("skipped")),
            ("chunks failed", summary.count("failed")), ("frames computed (this run)", samples),
            ("persons (this run)", sum(r.persons for r in done)), ("tracks", summary.tracks),
            ("detections in no track", summary.untracked), ("frames not decodable", len(summary.missing_frames)),
            ("seconds", f"{summary.seconds:.1f}"), ("files", ", ".join(p.name for p in summary.files))]
    for k, v in rows:
        table.add_row(k, str(v))
    return table
