"""``dpmesh selftest``: the whole pipeline on generated, UNTRAINED weights — proves an installation.

Builds tiny random-init weights and a synthetic SMPL model in a temporary folder (real on-disk
formats, real loading code), draws a synthetic photo with two stick figures and their COCO-17
keypoints, runs preprocessing, backbone, regressor, pose decoder and SMPL, writes every output format
and reads each back. No download. The meshes are meaningless: the weights are random.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _check_detector(root: Path, image: np.ndarray, check) -> None:
    """mmpose detector plumbing: a random-init RTMO-s from mmpose's shipped config, saved as a state-dict
    checkpoint and loaded through the real loading path, run on the synthetic photo. Skipped (and said so)
    when the OpenMMLab stack is not installed."""
    try:
        from .detect.mmpose_compat import import_mmpose

        import_mmpose()
    except Exception as e:  # the stack is optional for the core pipeline
        check("detector (mmpose) — skipped", True, f"OpenMMLab stack not importable: {e}")
        return
    from .detect.mmpose_detector import KeypointDetector, Thresholds
    from .stand_ins.detector import write_random_rtmo_checkpoint

    t0 = time.perf_counter()
    _, ckpt, cfg = write_random_rtmo_checkpoint(root / "rtmo-s-random.pth")
    det = KeypointDetector.from_files(cfg, ckpt, "cpu", thresholds=Thresholds(det_thr=0.0, kpt_thr=0.0,
                                                                             min_keypoints=0, max_people=2))
    people = det([image])[0]
    ok = len(people) <= 2 and all(p.keypoints.shape == (17, 3) and np.isfinite(p.keypoints).all() for p in people)
    check("detector plumbing (random RTMO-s, untrained)", ok,
          f"{len(people)} detections in {time.perf_counter() - t0:.1f} s (random weights: positions meaningless)")


def _check_render(image: np.ndarray, res, faces: np.ndarray, outdir: Path, check) -> None:
    """Headless rendering of the overlay and side view; skipped (and said so) without pyrender/EGL/OSMesa."""
    from .errors import DpmeshError

    try:
        from .render import Renderer

        renderer = Renderer()
    except (ImportError, DpmeshError) as e:
        check("render — skipped", True, f"no headless renderer: {e}")
        return
    from PIL import Image

    with renderer:
        overlay = renderer.overlay(image, res, faces)
        side = renderer.side_view(res, faces)
    Image.fromarray(overlay).save(outdir / "overlay.png")
    Image.fromarray(side).save(outdir / "side.png")
    check("render overlay + side view (pyrender, headless)",
          overlay.shape == image.shape and side.ndim == 3 and not np.array_equal(overlay, image),
          str(outdir / "overlay.png"))


def run_selftest(keep: Path | None = None, console=None) -> bool:
    """Run the checks; print a table; return True when every check passed."""
    import trimesh
    from rich.console import Console
    from rich.table import Table

    from .export import save_result
    from .pipeline import Pipeline
    from .stand_ins.tiny import build_tiny_weights

    console = console or Console()
    checks: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append((name, bool(ok), detail))

    tmp = None
    if keep is None:
        tmp = tempfile.TemporaryDirectory(prefix="dpmesh-selftest-")
        root = Path(tmp.name)
    else:
        root = Path(keep)
        root.mkdir(parents=True, exist_ok=True)
    try:
        console.print("[bold yellow]dpmesh selftest: UNTRAINED random weights — the meshes are meaningless; "
                      "this checks the installation, not the model.[/]")
        t0 = time.perf_counter()
        wdir = build_tiny_weights(root / "weights")
        check("build tiny weights (real on-disk format)", True, f"{time.perf_counter() - t0:.1f} s, {wdir}")
        t0 = time.perf_counter()
        pipe = Pipeline.from_pretrained(wdir, device="cpu")
        check("load weights strictly", True, f"{time.perf_counter() - t0:.1f} s")
        from .stand_ins.scene import synthetic_scene

        image, kp = synthetic_scene()
        _check_detector(root, image, check)
        t0 = time.perf_counter()
        out = pipe(image, keypoints=kp)
        res = out[0]
        check("run pipeline (crop, backbone, regressor, VPoser, SMPL)", len(res.persons) == 2,
              f"{len(res.persons)} persons in {time.perf_counter() - t0:.1f} s")
        finite = all(np.isfinite(p.vertices).all() and np.isfinite(p.joints_2d).all() for p in res.persons)
        check("outputs finite, shapes (6890,3) / (30,3)", finite and res.persons[0].vertices.shape == (6890, 3)
              and res.persons[0].joints.shape == (30, 3))
        # the pelvis (root) is placed so that it reprojects exactly through K
        p = res.persons[0]
        K = res.K
        pelvis = p.joints[0]
        uv = (K @ pelvis)[:2] / pelvis[2]
        check("root reprojects through K", np.allclose(uv, p.joints_2d[0], atol=1e-2), f"{uv.round(2)}")
        outdir = root / "outputs"
        outdir.mkdir(exist_ok=True)
        for ext in (".npz", ".obj", ".ply", ".glb", ".json"):
            path = save_result(res, out.faces, outdir / f"selftest{ext}")
            if ext == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    ok = z["vertices"].shape == (2, 6890, 3) and np.allclose(z["vertices"][1], res.persons[1].vertices)
            elif ext == ".json":
                ok = len(json.loads(path.read_text())["persons"]) == 2
            else:  # faces survive the round trip (the OBJ reader drops unreferenced vertices)
                loaded = trimesh.load(path, process=False)
                geoms = list(loaded.geometry.values()) if hasattr(loaded, "geometry") else [loaded]
                ok = sum(len(g.faces) for g in geoms) == 2 * len(out.faces)
            check(f"write and re-read {ext}", ok, str(path))
        _check_render(image, res, out.faces, outdir, check)
    except Exception as e:  # report, don't hide: the table shows what failed
        check("unexpected error", False, f"{type(e).__name__}: {e}")
    finally:
        if tmp is not None:
            tmp.cleanup()

    table = Table(title="dpmesh selftest (untrained weights)")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for name, ok, detail in checks:
        table.add_row(name, "[green]ok[/]" if ok else "[red]FAILED[/]", detail)
    console.print(table)
    passed = all(ok for _, ok, _ in checks)
    console.print("[green]selftest passed[/]" if passed else "[red]selftest FAILED[/]")
    return passed
