"""Video frames with PyAV (FFmpeg), or a folder of numbered frames: probe, sample, stream.

* :func:`probe` reads a video's packets once without decoding them (fast: the file is read, nothing is
  decoded) to learn every frame's presentation time, then decodes the first frame to prove the codec
  works. Frames are numbered 0, 1, ... in presentation order; times are seconds from the first frame.
* :func:`plan_samples` turns ``--start/--end`` (seconds or frames), ``--fps N`` and ``--every K`` into
  the list of :class:`Sample` s a run processes.
* :func:`iter_frames` decodes the frames of those samples in order, streaming (one frame in memory at a
  time, decoded frames that are not needed are dropped at once). It seeks to the keyframe before the
  first needed frame, so a resumed run does not decode the video from its start.

A video's display matrix (phones store portrait video as rotated landscape) is applied, like EXIF
orientation for photos. Variable frame rate videos are refused unless ``--fps N`` resamples them to a
constant rate (each output tick takes the nearest frame), since smoothing and the animation assume the
samples' times.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import InputError, VideoError
from ..inputs import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

#: File suffixes treated as videos by ``dpmesh predict`` (anything FFmpeg opens works with --video).
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
#: Frame intervals more than this fraction away from the median interval make a video "variable rate"
#: (timestamp rounding in a 1/1000 s time base is at most 3% at 30 fps).
VFR_TOLERANCE = 0.2


def is_video_path(path: str | Path) -> bool:
    """True for a file name with a video suffix (:data:`VIDEO_SUFFIXES`, case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


# ----------------------------------------------------------------------------------- time points

@dataclass(frozen=True)
class TimePoint:
    """A position on the source timeline: ``value`` seconds (unit "s") or frame ``value`` (unit "f")."""

    value: float
    unit: str

    def frame(self, times: np.ndarray) -> int:
        """Index of the first frame at or after this point (``len(times)`` when past the end)."""
        if self.unit == "f":
            return int(self.value)
        return int(np.searchsorted(times, self.value - 1e-9, side="left"))

    def __str__(self) -> str:
        return f"frame {int(self.value)}" if self.unit == "f" else f"{self.value:g} s"


_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)$")


def parse_time_point(text: str, option: str = "--start") -> TimePoint:
    """``12.5`` / ``12.5s`` / ``1:02.5`` / ``0:01:02.5`` (seconds) or ``300f`` (frame index, 0-based).

    Raises:
        InputError: anything else, or a negative value.
    """
    s = str(text).strip().lower()
    try:
        if s.endswith("f"):
            frame = int(s[:-1])
            if frame < 0:
                raise ValueError
            return TimePoint(float(frame), "f")
        m = _CLOCK.match(s)
        if m:
            h, mnt, sec = m.groups()
            return TimePoint(int(h or 0) * 3600 + int(mnt) * 60 + float(sec), "s")
        seconds = float(s[:-1] if s.endswith("s") else s)
        if not np.isfinite(seconds) or seconds < 0:
            raise ValueError
        return TimePoint(seconds, "s")
    except ValueError:
        raise InputError(f"{option} {text!r}: use seconds (12.5, 12.5s, 1:02.5) or a frame index (300f)") from None


# ----------------------------------------------------------------------------------- probing

@dataclass
class VideoInfo:
    """What :func:`probe` learnt about a video file or frame folder.

    Attributes:
        path: the file (or the frame folder).
        kind: "video" or "sequence".
        width, height: frame size in pixels, after the display rotation.
        times: (F,) float64 presentation time of every frame in seconds, first frame at 0, increasing.
        fps: nominal frame rate: 1 / median frame interval (videos), ``--sequence-fps`` (folders).
        codec: the video codec's name (None for folders).
        rotation: degrees counter-clockwise applied to decoded frames (display matrix; 0 for folders).
        frame_files: the frame images of a folder, in order.
        pts: sorted presentation timestamps (stream time base) of the frames, when they are unique and
            known (used to seek); None otherwise (then the video is decoded from its start).
        truncated: the demuxer's error when the file ended early (its readable frames are used).
    """

    path: Path
    kind: str
    width: int
    height: int
    times: np.ndarray
    fps: float
    codec: str | None = None
    rotation: int = 0
    frame_files: tuple[Path, ...] = ()
    pts: tuple[int, ...] | None = None
    truncated: str | None = None

    @property
    def frame_count(self) -> int:
        return int(len(self.times))

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one (one nominal interval after it)."""
        return float(self.times[-1] + 1.0 / self.fps) if self.frame_count else 0.0

    def intervals(self) -> np.ndarray:
        """(F-1,) seconds between consecutive frames."""
        return np.diff(self.times)

    @property
    def variable_rate(self) -> bool:
        """True when some frame interval differs from the median by more than :data:`VFR_TOLERANCE`."""
        d = self.intervals()
        if d.size < 2:
            return False
        med = float(np.median(d))
        return bool(med <= 0 or np.max(np.abs(d - med)) > VFR_TOLERANCE * med)

    def describe(self) -> dict:
        """JSON-ready summary (written into tracks.json and the run record)."""
        d = self.intervals()
        return {
            "path": str(self.path), "kind": self.kind, "width": self.width, "height": self.height,
            "frames": self.frame_count, "fps": round(self.fps, 6), "duration_s": round(self.duration, 6),
            "codec": self.codec, "rotation_deg": self.rotation, "variable_frame_rate": self.variable_rate,
            "frame_interval_s": None if d.size == 0 else
            {"min": round(float(d.min()), 6), "median": round(float(np.median(d)), 6), "max": round(float(d.max()), 6)},
            "truncated": self.truncated,
        }


def _import_av():
    try:
        import av  # noqa: PLC0415 -- PyAV is needed only for videos
    except ImportError as e:
        from ..errors import DependencyError

        raise DependencyError("video input needs PyAV (pip install av, or: pip install 'dpmesh-infer[video]', "
                              f"or bash install.sh): {e}") from e
    return av


def _open(path: Path):
    av = _import_av()
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    try:
        return av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: cannot be opened as a video (truncated, corrupt or not a video file): "
                         f"{e}") from e


def _rotation_of(frame) -> int:
    rot = int(round(getattr(frame, "rotation", 0) or 0))
    return (rot // 90 * 90) % 360 if rot % 90 == 0 else 0


def _rgb(frame, rotation: int) -> np.ndarray:
    img = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(np.rot90(img, k=rotation // 90)) if rotation else img


def probe(path: str | Path) -> VideoInfo:
    """Read a video's frame timestamps (packets only) and decode its first frame.

    Raises:
        VideoError: the file does not open (corrupt, truncated so that its index is lost, not a video),
            has no video stream, has no frames, or its first frame cannot be decoded.
        DependencyError: PyAV is not installed.
    """
    path = Path(path)
    av = _import_av()
    with _open(path) as container:
        if not container.streams.video:
            kinds = ", ".join(f"{s.type}" for s in container.streams) or "none"
            raise VideoError(f"{path}: has no video stream (streams found: {kinds})")
        stream = container.streams.video[0]
        stamps: list[int | None] = []
        truncated = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the flush packet at the end
                stamps.append(packet.pts if packet.pts is not None else packet.dts)
        except av.error.FFmpegError as e:
            truncated = str(e)
            logger.warning("%s: the file ends early (%s); using the %d frames read before", path, e, len(stamps))
        if not stamps:
            raise VideoError(f"{path}: the video stream has no frames"
                             + (f" (the file seems truncated: {truncated})" if truncated else ""))
        codec = stream.codec_context.name
        tb = stream.time_base or Fraction(1, 1000)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        known = all(s is not None for s in stamps)
        if known:
            pts = sorted(int(s) for s in stamps)
            times = (np.asarray(pts, np.float64) - pts[0]) * float(tb)
            unique = len(set(pts)) == len(pts)
        else:
            unique = False
            pts = None
            if not rate:
                raise VideoError(f"{path}: the video has neither timestamps nor a frame rate")
            times = np.arange(len(stamps), dtype=np.float64) / float(rate)
        if not unique:
            # duplicated or missing timestamps: number frames as decoded, spread them at the nominal rate
            fps_guess = float(rate) if rate else 30.0
            times = np.arange(len(stamps), dtype=np.float64) / fps_guess
            logger.warning("%s: frame timestamps are missing or repeated; frames are numbered as decoded "
                           "and timed at %.3f fps", path, fps_guess)
        d = np.diff(times)
        fps = 1.0 / float(np.median(d)) if d.size and np.median(d) > 0 else float(rate or 30.0)
    info = VideoInfo(path=path, kind="video", width=0, height=0, times=times, fps=fps, codec=codec,
                     pts=tuple(pts) if (known and unique) else None, truncated=truncated)
    first = next(_decode_video(info, [0], seek=False), None)
    if first is None:
        raise VideoError(f"{path}: no frame of the {codec} stream could be decoded (corrupt video?)")
    _, frame = first
    info.rotation = _rotation_of(frame)
    img = _rgb(frame, info.rotation)
    info.height, info.width = img.shape[:2]
    return info


_NUMBER = re.compile(r"(\d+)")


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in _NUMBER.split(p.stem)] + [p.suffix]


def probe_sequence(folder: str | Path, fps: float = 30.0) -> VideoInfo:
    """A folder of numbered frame images (``frame_0001.png`` ...), sorted by the numbers in their names.

    Raises:
        VideoError: not a folder, or no image in it.
        InputError: ``fps`` is not positive.
    """
    from ..images import load_image

    folder = Path(folder)
    if fps <= 0:
        raise InputError(f"--sequence-fps must be positive, got {fps:g}")
    if not folder.is_dir():
        raise VideoError(f"--sequence: {folder} is not a folder of frame images")
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                   key=_natural_key)
    if not files:
        raise VideoError(f"{folder}: no frame images ({', '.join(IMAGE_EXTENSIONS)}) in the folder")
    try:
        first = load_image(files[0])
    except Exception as e:  # noqa: BLE001 -- ImageError and friends: the sequence is unusable
        raise VideoError(f"{files[0]}: the first frame cannot be read: {e}") from e
    h, w = first.shape[:2]
    times = np.arange(len(files), dtype=np.float64) / fps
    return VideoInfo(path=folder, kind="sequence", width=w, height=h, times=times, fps=float(fps),
                     frame_files=tuple(files))


# ----------------------------------------------------------------------------------- sampling

@dataclass(frozen=True)
class Sample:
    """One processed frame: ``index`` in the output sequence, source ``frame`` (0-based), ``time`` in
    seconds on the source timeline (the frame's own time, or the ``--fps`` tick it stands for)."""

    index: int
    frame: int
    time: float


@dataclass(frozen=True)
class SamplingOptions:
    """``--fps`` (resample to a constant rate), ``--every`` (every K-th frame), ``--start/--end``
    (end exclusive)."""

    fps: float | None = None
    every: int | None = None
    start: TimePoint | None = None
    end: TimePoint | None = None

    def to_json(self) -> dict:
        def tp(t):
            return None if t is None else {"value": t.value, "unit": t.unit}

        return {"fps": self.fps, "every": self.every, "start": tp(self.start), "end": tp(self.end)}


@dataclass
class SamplePlan:
    """The samples of a run and the frame rate of the output sequence (``fps``: the animation's)."""

    samples: list[Sample]
    fps: float
    notes: list[str] = field(default_factory=list)


def plan_samples(info: VideoInfo, opts: SamplingOptions) -> SamplePlan:
    """Which frames a run processes.

    ``--start/--end`` cut the source timeline (end exclusive); then ``--every K`` keeps every K-th frame,
    or ``--fps N`` places ticks every 1/N s from the first kept frame and takes for each the nearest frame
    (an ``N`` at or above the video's rate keeps every frame). Without either, every frame is kept.

    Raises:
        InputError: both --fps and --every; a non-positive value; a range with no frame in it; or a
            variable frame rate video without --fps (the message gives the intervals and the fix).
    """
    if opts.fps is not None and opts.every is not None:
        raise InputError("give --fps or --every, not both")
    if opts.fps is not None and not opts.fps > 0:
        raise InputError(f"--fps must be positive, got {opts.fps:g}")
    if opts.every is not None and opts.every < 1:
        raise InputError(f"--every must be at least 1, got {opts.every}")
    times = info.times
    n = info.frame_count
    lo = opts.start.frame(times) if opts.start is not None else 0
    hi = opts.end.frame(times) if opts.end is not None else n
    hi = min(hi, n)
    if lo >= hi:
        raise InputError(f"{info.path}: no frame between {opts.start or 'the start'} and {opts.end or 'the end'} "
                         f"(the video has {n} frames, {info.duration:.3f} s)")
    notes = []
    if info.variable_rate and opts.fps is None:
        d = info.intervals()
        raise InputError(
            f"{info.path} has a variable frame rate (frame intervals from {d.min() * 1000:.1f} to "
            f"{d.max() * 1000:.1f} ms, median {np.median(d) * 1000:.1f} ms); smoothing and the animation "
            f"need a constant rate: pass --fps N (e.g. --fps {round(info.fps)}) to sample it at N frames per "
            "second, each tick taking the nearest frame")
    if opts.fps is None:
        step = opts.every or 1
        frames = range(lo, hi, step)
        samples = [Sample(k, f, float(times[f])) for k, f in enumerate(frames)]
        fps = info.fps / step
    elif opts.fps >= info.fps * (1 - 1e-6) and not info.variable_rate:
        samples = [Sample(k, f, float(times[f])) for k, f in enumerate(range(lo, hi))]
        fps = info.fps
        if opts.fps > info.fps * (1 + 1e-6):
            notes.append(f"--fps {opts.fps:g} is above the video's {info.fps:.3f} fps: every frame is used")
    else:
        t0 = float(times[lo])
        t_end = float(times[hi]) if hi < n else float(times[-1]) + 1.0 / info.fps  # start of the first frame out
        ticks = t0 + np.arange(int(np.floor((t_end - t0) * opts.fps + 1e-9)) + 1) / opts.fps
        ticks = ticks[ticks < t_end]
        window = times[lo:hi]
        pos = np.clip(np.searchsorted(window, ticks), 1, len(window) - 1) if len(window) > 1 else np.zeros(
            len(ticks), int)
        if len(window) > 1:
            left_closer = (ticks - window[pos - 1]) <= (window[pos] - ticks)
            pos = np.where(left_closer, pos - 1, pos)
        samples = [Sample(k, lo + int(p), float(t)) for k, (p, t) in enumerate(zip(pos, ticks))]
        fps = float(opts.fps)
        dup = len(samples) - len({s.frame for s in samples})
        if dup:
            notes.append(f"{dup} of the {len(samples)} ticks at {opts.fps:g} fps reuse the previous frame "
                         "(the video has longer frame intervals there)")
    return SamplePlan(samples=samples, fps=fps, notes=notes)


# ----------------------------------------------------------------------------------- decoding

def _decode_video(info: VideoInfo, frames: Sequence[int], *, seek: bool = True) -> Iterator[tuple[int, object]]:
    """(frame index, av.VideoFrame) for the sorted frame indices ``frames`` (each once)."""
    av = _import_av()
    wanted = sorted(set(int(f) for f in frames))
    if not wanted:
        return
    index_of = {p: i for i, p in enumerate(info.pts)} if info.pts is not None else None
    with _open(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        counter = 0  # frames decoded so far (sequential numbering)
        if seek and index_of is not None and wanted[0] > 0:
            container.seek(info.pts[wanted[0]], stream=stream, backward=True, any_frame=False)
            counter = None  # numbering comes from the timestamps after a seek
        pos = 0
        errors = 0
        for packet in container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                errors += 1
                logger.warning("%s: a packet could not be decoded (%s); its frame is missing", info.path, e)
                continue
            for frame in decoded:
                if counter is None:
                    idx = index_of.get(frame.pts) if frame.pts is not None else None
                    if idx is None:
                        logger.warning("%s: a decoded frame has an unknown timestamp %s; skipped",
                                       info.path, frame.pts)
                        continue
                else:
                    idx = counter if index_of is None or frame.pts is None else index_of.get(frame.pts, counter)
                    counter = idx + 1
                while pos < len(wanted) and wanted[pos] < idx:
                    pos += 1  # that frame never came out of the decoder (corrupt data)
                if pos >= len(wanted):
                    return
                if wanted[pos] == idx:
                    yield idx, frame
                    pos += 1
                    if pos >= len(wanted):
                        return


def iter_frames(info: VideoInfo, samples: Sequence[Sample]) -> Iterator[tuple[Sample, np.ndarray | None]]:
    """Decode the samples' frames in order: (sample, (H, W, 3) uint8 RGB), streamed.

    A frame that cannot be decoded (corrupt data) or read (a broken image in a folder) comes out as
    ``None`` for its samples, so the run can record it and go on.
    """
    from ..images import load_image

    samples = sorted(samples, key=lambda s: (s.frame, s.index))
    if info.kind == "sequence":
        for s in samples:
            try:
                img = load_image(info.frame_files[s.frame])
                if img.shape[:2] != (info.height, info.width):
                    raise VideoError(f"{info.frame_files[s.frame]}: frame size {img.shape[1]}x{img.shape[0]} "
                                     f"differs from the sequence's {info.width}x{info.height}")
            except Exception as e:  # noqa: BLE001 -- a bad frame is reported per sample
                logger.warning("frame %d: %s", s.frame, e)
                img = None
            yield s, img
        return
    by_frame: dict[int, list[Sample]] = {}
    for s in samples:
        by_frame.setdefault(s.frame, []).append(s)
    pending = sorted(by_frame)
    done = 0
    for idx, frame in _decode_video(info, pending):
        while done < len(pending) and pending[done] < idx:
            for s in by_frame[pending[done]]:
                yield s, None  # never decoded
            done += 1
        img = _rgb(frame, info.rotation)
        for s in by_frame[idx]:
            yield s, img
        done += 1
    while done < len(pending):
        for s in by_frame[pending[done]]:
            yield s, None
        done += 1
