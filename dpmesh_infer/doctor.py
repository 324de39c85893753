"""``dpmesh doctor``: what this installation can do, and the command that fixes each missing piece.

Reports Python, torch, CUDA (device, fp16/bf16), the versions of the core packages, the keypoint
detector stack (mmpose, imported through :mod:`dpmesh_infer.detect.mmpose_compat`), the renderer
backends (pyrender importable, EGL / OSMesa libraries found — pyrender itself is never imported here)
and the weights directory with every file present or missing.

Exit code: 0 the core works and the weights are complete, 3 weights missing or incomplete, 1 a core
package is missing or torch does not import. Everything is printed in every case.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: Packages the inference core needs besides torch (distribution names).
CORE_PACKAGES = ("numpy", "diffusers", "peft", "safetensors", "smplx", "trimesh", "pillow",
                 "opencv-python-headless", "typer", "rich", "numba")
_OPENCV_DISTS = ("opencv-python-headless", "opencv-python", "opencv-contrib-python",
                 "opencv-contrib-python-headless")


@dataclass
class Check:
    """One row of the report. status: ok | warn (optional piece missing) | missing (weights) | fail (core)."""

    area: str
    name: str
    status: str
    detail: str = ""
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _system() -> list[Check]:
    from . import __version__

    return [Check("system", "python", "ok", f"{platform.python_version()} ({sys.executable})"),
            Check("system", "dpmesh", "ok", __version__),
            Check("system", "platform", "ok", platform.platform())]


def _torch() -> list[Check]:
    try:
        import torch
    except Exception as e:  # noqa: BLE001 -- reported, it is what the doctor is for
        return [Check("torch", "torch", "fail", f"does not import: {type(e).__name__}: {e}",
                      "install torch: https://pytorch.org/get-started/locally/")]
    out = [Check("torch", "torch", "ok", torch.__version__)]
    if not torch.cuda.is_available():
        built = torch.version.cuda
        why = "torch is a CPU build" if built is None else f"torch built for CUDA {built}, no usable GPU/driver"
        out.append(Check("torch", "CUDA", "warn", f"not available ({why}); runs on the CPU in fp32 (slow)",
                         "for a GPU: install a CUDA build of torch matching your driver"))
        return out
    n = torch.cuda.device_count()
    for i in range(n):
        name = torch.cuda.get_device_name(i)
        major, minor = torch.cuda.get_device_capability(i)
        out.append(Check("torch", f"cuda:{i}", "ok", f"{name}, compute capability {major}.{minor}, "
                         f"{torch.cuda.get_device_properties(i).total_memory / 2**30:.1f} GiB"))
    major, minor = torch.cuda.get_device_capability(0)
    fp16 = (major, minor) >= (5, 3)
    bf16 = torch.cuda.is_bf16_supported()
    out.append(Check("torch", "fp16 / bf16", "ok" if fp16 else "warn",
                     f"fp16 {'yes' if fp16 else 'no'} (used by --dtype auto), bf16 {'yes' if bf16 else 'no'} "
                     f"(CUDA {torch.version.cuda})", "" if fp16 else "use --dtype fp32"))
    return out


def _packages() -> list[Check]:
    out = []
    for dist in CORE_PACKAGES:
        if dist == "opencv-python-headless":
            found = [(d, _version(d)) for d in _OPENCV_DISTS if _version(d)]
            ver = f"{found[0][0]} {found[0][1]}" if found else None
        else:
            ver = _version(dist)
        out.append(Check("packages", dist, "ok" if ver else "fail", ver or "not installed",
                         "" if ver else f"python3 -m pip install {dist}"))
    return out


def _detector_stack() -> list[Check]:
    from .detect.mmpose_compat import STACK

    versions = ", ".join(f"{d} {_version(d) or '(missing)'}" for d in STACK)
    try:
        from .detect.mmpose_compat import import_mmpose

        mm = import_mmpose()
    except Exception as e:  # noqa: BLE001 -- DetectorStackError or anything the stack raises
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return [Check("detector", "mmpose stack", "warn", f"unavailable: {first} ({versions}); "
                      "predict still works with --keypoints", "bash install.sh")]
    return [Check("detector", "mmpose stack", "ok", f"mmpose {getattr(mm, '__version__', '?')} imports ({versions})")]


def _renderers() -> list[Check]:
    has_pyrender = importlib.util.find_spec("pyrender") is not None
    egl = ctypes.util.find_library("EGL")
    osmesa = ctypes.util.find_library("OSMesa")
    platform_env = os.environ.get("PYOPENGL_PLATFORM")
    out = [Check("render", "pyrender", "ok" if has_pyrender else "warn",
                 "installed (not imported here)" if has_pyrender else "not installed: --render is unavailable",
                 "" if has_pyrender else "python3 -m pip install pyrender")]
    out.append(Check("render", "EGL (GPU headless)", "ok" if egl else "warn", egl or "libEGL not found",
                     "" if egl else "apt-get install libegl1 (with an NVIDIA driver for GPU rendering)"))
    out.append(Check("render", "OSMesa (CPU headless)", "ok" if osmesa else "warn", osmesa or "libOSMesa not found",
                     "" if osmesa else "apt-get install libosmesa6"))
    if platform_env:
        out.append(Check("render", "PYOPENGL_PLATFORM", "ok", platform_env))
    return out


def _analysis() -> list[Check]:
    """matplotlib draws the pictures of ``dpmesh occlusion-map`` (found, not imported)."""
    ok = importlib.util.find_spec("matplotlib") is not None
    return [Check("analysis", "matplotlib", "ok" if ok else "warn",
                  "installed (occlusion-map pictures)" if ok else "not installed: occlusion-map cannot draw its maps",
                  "" if ok else "python3 -m pip install 'dpmesh-infer[analysis]'")]


def _weights(explicit) -> tuple[list[Check], Path | None]:
    from .errors import WeightsError
    from .weights.layout import FIX_CONVERT, FIX_SMPL, fix_command, missing_files, required_files
    from .weights.resolve import candidate_dirs, resolve_weights_dir

    try:
        loc = resolve_weights_dir(explicit)
    except WeightsError:
        looked = "; ".join(f"{p} ({src})" for src, p in candidate_dirs(explicit))
        return [Check("weights", "directory", "missing", f"not found; looked in: {looked}",
                      f"{FIX_CONVERT.format(dir='DIR')}; {FIX_SMPL.format(dir='DIR')}")], None
    wdir = loc.path
    out = [Check("weights", "directory", "ok", f"{wdir} (from {loc.source})")]
    missing = set(missing_files(wdir))
    for rel in required_files():
        if rel in missing:
            out.append(Check("weights", rel, "missing", "missing", fix_command(rel, wdir)))
        else:
            out.append(Check("weights", rel, "ok", "present"))
    if not missing:
        out.append(_untrained_flag(wdir))
    return out, wdir


def _untrained_flag(wdir: Path) -> Check:
    import json

    from .weights.layout import FIX_CONVERT, PIPELINE_CONFIG_NAME

    try:
        untrained = bool(json.loads((wdir / PIPELINE_CONFIG_NAME).read_text()).get("untrained", False))
    except (OSError, ValueError, AttributeError) as e:
        return Check("weights", "config", "fail", f"{PIPELINE_CONFIG_NAME} unreadable: {e}",
                     f"dpmesh weights check --weights {wdir}")
    if untrained:
        return Check("weights", "trained", "warn", "UNTRAINED random weights (selftest/tests): meshes are meaningless",
                     FIX_CONVERT.format(dir="DIR"))
    return Check("weights", "trained", "ok", "trained weights")


def _detector_weights(wdir: Path | None) -> list[Check]:
    from .detect.detectors import DEFAULT_DETECTOR, DETECTORS, cached_checkpoints
    from .weights.layout import detectors_dir, fix_detector_command

    if wdir is None:
        return []
    out = []
    for name in DETECTORS:
        have = cached_checkpoints(name, wdir)
        ok = all(p is not None for p in have)
        label = f"detector {name}" + (" (default)" if name == DEFAULT_DETECTOR else "")
        out.append(Check("weights", label, "ok" if ok else "warn",
                         f"in {detectors_dir(wdir)}" if ok else "not downloaded (fetched on first use; "
                         "not needed with --keypoints)",
                         "" if ok else fix_detector_command(name, wdir)))
    return out


def collect(weights=None, *, detector_stack: bool = True) -> list[Check]:
    """Every check, in report order."""
    checks = _system() + _torch() + _packages()
    if detector_stack:
        checks += _detector_stack()
    checks += _renderers() + _analysis()
    wchecks, wdir = _weights(weights)
    return checks + wchecks + _detector_weights(wdir)


def exit_code(checks: list[Check]) -> int:
    """1 a core check failed, 3 weights missing, else 0."""
    if any(c.status == "fail" for c in checks):
        return 1
    if any(c.status == "missing" for c in checks):
        return 3
    return 0


_STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "missing": "[red]missing[/]", "fail": "[red]FAIL[/]"}


def run_doctor(weights=None, console=None, *, detector_stack: bool = True) -> int:
    """Print the report as a rich table and return the exit code (see the module docstring)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    checks = collect(weights, detector_stack=detector_stack)
    table = Table(title="dpmesh doctor")
    for col in ("area", "check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.area, escape(c.name), _STYLE[c.status], escape(c.detail), escape(c.fix))
    console.print(table)
    code = exit_code(checks)
    verdict = {0: "[green]ready[/]", 1: "[red]a core package is missing or broken (see FAIL rows)[/]",
               3: "[red]weights missing: run the fix commands above[/]"}[code]
    console.print(f"dpmesh doctor: {verdict}")
    return code
