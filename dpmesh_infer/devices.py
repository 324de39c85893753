"""Device names from users (``auto``, ``cpu``, ``cuda``, ``cuda:N``, or a torch.device) -> torch.device, and
the process-wide host settings of folder runs (malloc, OpenCV threads)."""

from __future__ import annotations

import os
import sys

from .errors import InputError


def resolve_device(device=None):
    """``None``/``"auto"``: CUDA when available, else CPU. Anything else is checked: a malformed name or
    CUDA on a machine without it is an :class:`InputError` that says what to use instead."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from e
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} was requested but CUDA is not available on this machine "
                         "(use --device cpu or auto)")
    return dev


def autocast_off(where):
    """A context in which autocast is disabled for the device of ``where`` (a tensor, a torch.device or
    a device type such as "cuda"), so the code inside computes at its inputs' precision; a no-op for
    device types without autocast (e.g. "meta")."""
    import contextlib

    import torch

    device_type = where.device.type if isinstance(where, torch.Tensor) else torch.device(where).type
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


#: glibc malloc settings of folder runs (:func:`keep_freed_memory`): blocks up to 32 MiB come from the
#: heap (the most glibc allows), and up to 1 GiB of freed memory at its top stays with the process.
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_malloc_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Keep the memory a folder run frees for the next image instead of giving it back to the kernel.

    Every image allocates and frees the same few MB of short-lived arrays (the decoded photo and its
    float copy, crops, OBJ tables, GLB buffers, network activations). With glibc's defaults, blocks above
    its (adaptive) mmap threshold are mapped and unmapped each time and the top of the heap is trimmed,
    so the next image page-faults the same memory back in: about 340 faults per OBJ file, which doubled
    its CPU cost on the 2-core build machine (``benchmarks/bench_throughput.py --sections host`` shows
    the difference). ``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` and ``mallopt(M_TRIM_THRESHOLD, 1 GiB)`` keep
    it; the price is that the process stays at its high-water mark of resident memory (set by the chunk
    and image sizes) until it exits.

    Process-wide, applied once (by folder runs: :class:`dpmesh_infer.batch.BatchRunner`); nothing
    happens off glibc (macOS, musl) or with the environment variable ``DPMESH_MALLOC_TUNING=0``.
    Returns whether the settings are in effect.
    """
    global _malloc_kept
    if _malloc_kept is None:
        _malloc_kept = False
        if os.environ.get("DPMESH_MALLOC_TUNING", "1").strip() != "0" and sys.platform.startswith("linux"):
            import ctypes

            try:
                libc = ctypes.CDLL(None)
                mallopt = libc.mallopt
                _malloc_kept = (mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) == 1
                                and mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD) == 1)
            except (OSError, AttributeError):  # not glibc
                pass
    return _malloc_kept


_gc_frozen: bool | None = None


def freeze_loaded_objects() -> bool:
    """Move every object alive now to the garbage collector's permanent generation (:func:`gc.freeze`),
    so that the full collections a folder run triggers skip them.

    With torch, the networks, numba and the mmpose stack loaded a process holds about 600,000 tracked
    objects; each full collection walks all of them (about 0.25 s of CPU on the 2-core build machine) and
    lands in whatever step allocates at that moment (an image's people.json, say). In a run of 32 photos
    x 10 people that was 0.6-0.9 ms of host CPU per person (``cpu_seconds`` 4.2 -> 3.3-3.6 ms/person
    with the freeze). The price: cycles among those objects that become garbage later are never collected (they
    are the process's long-lived state: modules, weights, compiled code).

    Process-wide, applied once (by the first folder run of a process); nothing happens with the
    environment variable ``DPMESH_GC_FREEZE=0``. Returns whether the freeze is in effect.
    """
    global _gc_frozen
    if _gc_frozen is None:
        _gc_frozen = os.environ.get("DPMESH_GC_FREEZE", "1").strip() != "0"
        if _gc_frozen:
            import gc

            gc.freeze()
    return _gc_frozen


def single_threaded_opencv() -> None:
    """OpenCV's own threads off (``cv2.setNumThreads(1)``, process-wide) for folder runs: they crop several
    images at once on their own threads, so OpenCV's per-call helper threads only add contention, and the
    manifest's ``cpu_seconds`` (CPU time of the thread that ran a step) would miss the crop work done on
    them (a 256 px ``warpAffine`` ran on 2 threads here: half its CPU time was not counted). The crops
    are the same (``warpAffine`` splits rows between threads; tests/test_fast_path.py compares)."""
    import cv2

    cv2.setNumThreads(1)
