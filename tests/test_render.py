"""Headless rendering (dpmesh_infer.render, `dpmesh predict --render`)."""

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app


def _renderer_or_reason():
    try:
        from dpmesh_infer.render import Renderer

        return Renderer(), None
    except Exception as e:  # noqa: BLE001
        return None, f"no headless OpenGL renderer on this machine: {e}"


@pytest.fixture(scope="module")
def renderer():
    r, reason = _renderer_or_reason()
    if r is None:
        pytest.skip(reason)
    yield r
    r.close()


K = np.array([[200.0, 0.0, 150.0], [0.0, 180.0, 100.0], [0.0, 0.0, 1.0]])
SIZE = (320, 240)  # (W, H); the principal point is deliberately not the image centre


def box(center, extent):
    import trimesh

    m = trimesh.creation.box(extents=extent)
    return np.asarray(m.vertices) + np.asarray(center, float), np.asarray(m.faces)


def result_of(*meshes, size=SIZE):
    return SimpleNamespace(persons=[SimpleNamespace(vertices=v) for v, _ in meshes], K=K, image_size=size)


def mask_bounds(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), xs.max(), ys.min(), ys.max()


def test_silhouette_matches_pinhole_projection(renderer):
    verts, faces = box((0.3, -0.2, 4.0), (1.0, 0.8, 0.6))
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    out = renderer.overlay(black, result_of((verts, faces)), faces)
    assert out.shape == (SIZE[1], SIZE[0], 3) and out.dtype == np.uint8
    # the nearest face (z = 3.7) bounds the silhouette: u = fx X / Z + cx, v = fy Y / Z + cy
    u = K[0, 0] * verts[:, 0] / verts[:, 2] + K[0, 2]
    v = K[1, 1] * verts[:, 1] / verts[:, 2] + K[1, 2]
    x0, x1, y0, y1 = mask_bounds(out.sum(-1) > 0)
    # pixel i is centred at i (OpenCV): the outermost covered pixels are within a pixel of the bounds
    for got, want in ((x0, u.min()), (x1, u.max()), (y0, v.min()), (y1, v.max())):
        assert abs(got - want) <= 1.0, (got, want)


def test_nearer_person_hides_farther_one(renderer):
    near = box((0.0, 0.0, 3.0), (0.6, 0.6, 0.2))
    far = box((0.2, 0.0, 5.0), (1.5, 1.5, 0.2))
    black = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    faces = near[1]
    # far listed after near: without a shared depth buffer it would be drawn over the near box
    both = renderer.overlay(black, result_of(near, far), faces)
    far_only = renderer.overlay(black, result_of((far[0] * 0 + 1e3, faces), far), faces)  # person 1 = far
    near_only = renderer.overlay(black, result_of(near), faces)
    u, v = int(K[0, 2]), int(K[1, 2])  # the optical axis crosses both boxes
    assert (near_only[v, u] > 0).any() and (far_only[v, u] > 0).any()
    assert not np.array_equal(near_only[v, u], far_only[v, u])  # different colours
    np.testing.assert_array_equal(both[v, u], near_only[v, u])
    # where only the far box is, its colour shows
    x0, x1, _, _ = mask_bounds(near_only.sum(-1) > 0)
    np.testing.assert_array_equal(both[v, x1 + 5], far_only[v, x1 + 5])


def test_side_view_and_viewport_resize(renderer):
    verts, faces = box((0.0, 0.0, 6.0), (0.5, 1.7, 3.0))  # deep along z: wide when turned 90 degrees
    side = renderer.side_view(result_of((verts, faces)), faces)
    assert side.shape == (SIZE[1], SIZE[0], 3)
    body = (side < 250).any(-1)
    assert body.any() and not body[:, 0].any() and not body[:, -1].any()  # fits, on a plain background
    x0, x1, _, _ = mask_bounds(body)
    front = renderer.overlay(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), result_of((verts, faces)), faces)
    fx0, fx1, _, _ = mask_bounds(front.sum(-1) > 0)
    assert (x1 - x0) > 2 * (fx1 - fx0)  # seen from the side: its 3 m depth is now across
    big = renderer.overlay(np.zeros((300, 500, 3), np.uint8), result_of((verts, faces), size=(500, 300)), faces)
    assert big.shape == (300, 500, 3)


def test_no_person_and_empty_side(renderer):
    img = np.full((10, 12, 3), 7, np.uint8)
    empty = SimpleNamespace(persons=[], K=K, image_size=(12, 10))
    np.testing.assert_array_equal(renderer.overlay(img, empty, np.zeros((0, 3), int)), img)
    assert renderer.side_view(empty, np.zeros((0, 3), int)).shape == (10, 12, 3)


def test_error_when_no_backend_works(monkeypatch):
    from dpmesh_infer import render
    from dpmesh_infer.errors import DpmeshError

    def broken(platform):
        raise RuntimeError(f"cannot open {platform}")

    monkeypatch.setattr(render, "_start", broken)
    monkeypatch.setattr(render, "_purge_gl_modules", lambda: None)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    with pytest.raises(DpmeshError, match="libegl1.*libosmesa6"):
        render.Renderer()
    import os

    assert "PYOPENGL_PLATFORM" not in os.environ  # restored


@pytest.fixture()
def photo(tmp_path, scene):
    image, kp = scene
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(image).save(root / "a.png")
    entries = [{"file_name": "a.png", "keypoints": k.reshape(-1).tolist(), "score": 0.9} for k in kp]
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps(entries))
    return root, kp_file, image.shape[:2]


def test_predict_render_folder_and_file(renderer, photo, tiny_weights, tmp_path):
    root, kp, (h, w) = photo
    run = CliRunner().invoke
    out = tmp_path / "out"
    r = run(app, [str(a) for a in ("predict", root, "-k", kp, "-w", tiny_weights, "-o", out, "--render", "-q")])
    assert r.exit_code == 0, r.output
    for name in ("overlay.png", "side.png"):
        with Image.open(out / "a" / name) as im:
            assert im.size == (w, h) and im.mode == "RGB"
    assert (out / "a" / "people.json").is_file()
    people = json.loads((out / "a" / "people.json").read_text())["persons"]
    ratios = [p["visibility"]["occlusion_ratio"] for p in people]
    assert len(ratios) == 2 and all(0.0 <= r <= 1.0 for r in ratios)  # from the rendered depth (--render)
    # resume: finished with the renders; a folder finished without them is redone only with --render
    from dpmesh_infer.batch import plan_batch

    assert len(plan_batch([root], out, render=True).todo) == 0
    (out / "a" / "side.png").unlink()
    assert len(plan_batch([root], out, render=True).todo) == 1
    assert len(plan_batch([root], out, render=False).todo) == 0
    # single file
    mesh = tmp_path / "single" / "mesh.obj"
    r = run(app, [str(a) for a in ("predict", root / "a.png", "-k", kp, "-w", tiny_weights, "-o", mesh, "--render")])
    assert r.exit_code == 0, r.output
    for name in ("mesh_overlay.png", "mesh_side.png"):
        with Image.open(mesh.parent / name) as im:
            assert im.size == (w, h)
    single = json.loads((mesh.parent / "mesh.json").read_text())["persons"]
    assert [p["visibility"]["occlusion_ratio"] for p in single] == pytest.approx(ratios, abs=1e-4)
    overlay = np.asarray(Image.open(mesh.parent / "mesh_overlay.png"))
    photo_px = np.asarray(Image.open(root / "a.png").convert("RGB"))
    assert (overlay != photo_px).any(-1).mean() > 0.001  # people were drawn over the photo


def test_predict_without_render_never_imports_pyrender(photo, tiny_weights, tmp_path):
    root, kp, _ = photo
    code = (
        "import sys\n"
        "import dpmesh_infer, dpmesh_infer.cli, dpmesh_infer.batch\n"
        "assert 'pyrender' not in sys.modules and 'OpenGL' not in sys.modules, 'imported at import time'\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(dpmesh_infer.cli.app, ['predict', {str(root)!r}, '-k', {str(kp)!r}, "
        f"'-w', {str(tiny_weights)!r}, '-o', {str(tmp_path / 'o')!r}, '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'pyrender' not in sys.modules and 'OpenGL' not in sys.modules, 'imported by predict'\n"
        "print('clean')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "clean" in p.stdout, p.stdout + p.stderr
