"""Headless rendering of the reconstructed people (``dpmesh predict --render``), with pyrender.

This module is imported only when rendering is asked for: importing :mod:`dpmesh_infer` or running
``predict`` without ``--render`` never imports pyrender or OpenGL (a headless server without GL libraries
must still work).

* :meth:`Renderer.overlay` draws every person of an image in ONE scene with the photo's intrinsics ``K``,
  so the depth buffer is shared and nearer people hide farther ones; the meshes replace the photo where
  they are rendered (optionally blended with ``alpha``).
* :meth:`Renderer.side_view` renders the same scene turned 90 degrees about the vertical axis through the
  people's centroid, on a plain background (the camera moves back if the turned crowd would not fit).

Headless OpenGL: if ``PYOPENGL_PLATFORM`` is unset, EGL is tried first (Mesa's llvmpipe software
renderer works without a GPU), then OSMesa; the variable is set here, and only here. If the user set
``PYOPENGL_PLATFORM``, only that platform is tried. All GL calls of a :class:`Renderer` run on one
dedicated thread (a GL context is bound to a thread), so a renderer may be used from any thread.

Colours follow upstream DPMesh: a pastel colour per person (seed 299), metallic 0, ambient light 0.3
and three directional lights of intensity 0.8.
"""

from __future__ import annotations

import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import RenderError
from .geometry.camera import OPENCV_TO_GL

INSTALL_HINT = (
    "Headless rendering needs pyrender (pip install 'dpmesh-infer[render]', or bash install.sh) and an "
    "OpenGL library: EGL with Mesa (Debian/Ubuntu: apt-get install libegl1 libgl1 libegl-mesa0 "
    "libgl1-mesa-dri), or OSMesa (apt-get install libosmesa6, and pip install PyOpenGL==3.1.10). "
    "Set PYOPENGL_PLATFORM=egl or osmesa to force one."
)


def person_colors(n: int, seed: int = 299) -> np.ndarray:
    """(n, 3) pastel RGB colours in [0, 1], the same for a given person index on every image."""
    rng = np.random.default_rng(seed)
    return 0.55 + 0.45 * rng.random((max(n, 0), 3))


def _purge_gl_modules() -> None:
    """Forget pyrender/PyOpenGL so that they can be imported again for another platform."""
    for name in list(sys.modules):
        if name == "pyrender" or name.startswith(("pyrender.", "OpenGL")):
            del sys.modules[name]


def _start(platform: str):
    """Import pyrender for ``platform`` and create a 1x1 offscreen renderer (raises on failure)."""
    os.environ["PYOPENGL_PLATFORM"] = platform
    import pyrender  # noqa: PLC0415 -- imported only when rendering

    return pyrender, pyrender.OffscreenRenderer(1, 1)


def _open_backend(platforms: list[str] | None = None):
    """(pyrender module, OffscreenRenderer, platform name); RenderError if none works."""
    user = os.environ.get("PYOPENGL_PLATFORM")
    if platforms is None:
        platforms = [user] if user else ["egl", "osmesa"]
    errors = []
    for i, platform in enumerate(platforms):
        try:
            pyrender, renderer = _start(platform)
            return pyrender, renderer, platform
        except ModuleNotFoundError as e:
            if e.name in ("pyrender", "OpenGL", "trimesh"):
                _restore_env(user)
                raise RenderError(f"--render needs pyrender, which is not installed ({e}). {INSTALL_HINT}") from e
            errors.append(f"{platform}: {type(e).__name__}: {e}")
        except Exception as e:  # noqa: BLE001 -- every backend failure is reported below
            errors.append(f"{platform}: {type(e).__name__}: {e}".strip())
        if i + 1 < len(platforms):
            _purge_gl_modules()
    _restore_env(user)
    raise RenderError("no headless OpenGL backend works (" + "; ".join(errors) + "). " + INSTALL_HINT)


def _restore_env(user: str | None) -> None:
    if user is None:
        os.environ.pop("PYOPENGL_PLATFORM", None)
    else:
        os.environ["PYOPENGL_PLATFORM"] = user


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Renderer:
    """One headless pyrender renderer, created once per run and reused for images of any size.

    Args:
        platforms: PyOpenGL platforms to try, in order (default: ``$PYOPENGL_PLATFORM`` if set, else
            ``["egl", "osmesa"]``).

    Raises:
        RenderError: pyrender is missing or no backend starts (the message says what to install).
    """

    def __init__(self, platforms: list[str] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpmesh-render")
        try:
            self._pyrender, self._r, self.platform = self._pool.submit(_open_backend, platforms).result()
        except BaseException:
            self._pool.shutdown(wait=False)
            raise
        self._closed = False

    # ------------------------------------------------------------------ public API

    def render(self, meshes: list[tuple[np.ndarray, np.ndarray, np.ndarray]], K: np.ndarray,
               size: tuple[int, int], bg_color=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Render ``meshes`` [(vertices (V, 3) OpenCV camera frame, faces (F, 3), rgb (3,))] in one scene.

        Returns:
            color (H, W, 3) uint8 and depth (H, W) float32 (0 where nothing was rendered).
        """
        if self._closed:
            raise RenderError("the renderer was closed")
        return self._pool.submit(self._render, meshes, np.asarray(K, np.float64), size, bg_color).result()

    def overlay(self, image_rgb: np.ndarray, result, faces: np.ndarray, alpha: float = 1.0) -> np.ndarray:
        """Every person of ``result`` (an ImageResult) over the photo: (H, W, 3) uint8.

        Rendered pixels take the mesh colour (blended with the photo when ``alpha`` < 1); nearer people
        hide farther ones (one shared depth buffer).
        """
        image = np.asarray(image_rgb)
        h, w = image.shape[:2]
        meshes = self._meshes(result, faces)
        if not meshes:
            return image.astype(np.uint8, copy=True)
        color, depth = self.render(meshes, result.K, (w, h))
        a = (depth > 0).astype(np.float32)[..., None] * float(alpha)
        out = image[..., :3].astype(np.float32) * (1.0 - a) + color.astype(np.float32) * a
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)

    def side_view(self, result, faces: np.ndarray, size: tuple[int, int] | None = None,
                  bg_color=(1.0, 1.0, 1.0), angle_deg: float = 90.0) -> np.ndarray:
        """The people turned ``angle_deg`` about the vertical axis through their centroid, seen with the
        photo's K on a plain background: (H, W, 3) uint8 of ``size`` (default: the image size)."""
        w, h = size if size is not None else tuple(int(v) for v in result.image_size)
        meshes = self._meshes(result, faces)
        if not meshes:
            return np.full((h, w, 3), np.rint(np.asarray(bg_color) * 255), np.uint8)
        allv = np.concatenate([m[0] for m in meshes])
        center = allv.mean(axis=0)
        t = np.radians(angle_deg)
        rot = np.array([[np.cos(t), 0.0, np.sin(t)], [0.0, 1.0, 0.0], [-np.sin(t), 0.0, np.cos(t)]])
        turned = [((v - center) @ rot.T + center, f, c) for v, f, c in meshes]
        shift = _fit_shift(np.concatenate([m[0] for m in turned]), np.asarray(result.K, np.float64), (w, h))
        turned = [(v + np.array([0.0, 0.0, shift]), f, c) for v, f, c in turned]
        color, _ = self.render(turned, result.K, (w, h), bg_color=bg_color)
        return color

    def person_depths(self, meshes: list[tuple[np.ndarray, np.ndarray]], K: np.ndarray,
                      size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Depth of all people in one scene and of each person alone (what occlusion ratios need).

        Args:
            meshes: [(vertices (V, 3) OpenCV camera frame, metres; faces (F, 3))], one per person.
            K: (3, 3) intrinsics; size: (W, H) pixels.

        Returns:
            scene (H, W) float32: depth z (metres) of the nearest surface with everyone rendered together
            (one depth buffer, as :meth:`overlay`), 0 where nothing is; alone (P, H, W) float32: the same
            for each person rendered by itself (its full silhouette, hidden parts included).
        """
        if self._closed:
            raise RenderError("the renderer was closed")
        return self._pool.submit(self._render_depths, meshes, np.asarray(K, np.float64), size).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._pool.submit(self._r.delete).result()
        except Exception:  # noqa: BLE001 -- best effort at shutdown
            pass
        self._pool.shutdown(wait=True)

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _meshes(result, faces):
        colors = person_colors(len(result.persons))
        return [(np.asarray(p.vertices, np.float64), np.asarray(faces), colors[i])
                for i, p in enumerate(result.persons)]

    def _render(self, meshes, K, size, bg_color):  # runs on the render thread
        pyrender = self._pyrender
        import trimesh

        w, h = int(size[0]), int(size[1])
        if self._r.viewport_width != w or self._r.viewport_height != h:
            self._r.viewport_width, self._r.viewport_height = w, h
        scene = pyrender.Scene(bg_color=[*bg_color, 0.0], ambient_light=(0.3, 0.3, 0.3))
        zmax = 1.0
        for verts, faces, rgb in meshes:
            gl = verts @ OPENCV_TO_GL.T
            zmax = max(zmax, float(-gl[:, 2].min()))
            material = pyrender.MetallicRoughnessMaterial(metallicFactor=0.0, roughnessFactor=0.7,
                                                          alphaMode="OPAQUE", baseColorFactor=(*rgb, 1.0))
            tm = trimesh.Trimesh(gl, faces, process=False)
            scene.add(pyrender.Mesh.from_trimesh(tm, material=material, smooth=True))
        # K uses the OpenCV convention (pixel i is centred at i). pyrender's IntrinsicsCamera is off by
        # half a pixel in x and one pixel in y from it (measured: with these offsets a silhouette covers
        # exactly the pixels whose centres its projection covers).
        cam = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 1.0, znear=0.01,
                                        zfar=zmax * 2.0 + 10.0)
        scene.add(cam, pose=np.eye(4))
        for direction in ((0.0, -1.0, 1.0), (0.0, 1.0, 1.0), (1.0, 1.0, 2.0)):
            scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=0.8), pose=_light_pose(direction))
        try:
            color, depth = self._r.render(scene, flags=pyrender.RenderFlags.RGBA)
        except Exception as e:  # noqa: BLE001
            raise RenderError(f"rendering failed ({self.platform}): {type(e).__name__}: {e}") from e
        return np.ascontiguousarray(color[..., :3]), np.asarray(depth, np.float32)

    def _render_depths(self, meshes, K, size):  # runs on the render thread
        pyrender = self._pyrender
        import trimesh

        w, h = int(size[0]), int(size[1])
        if self._r.viewport_width != w or self._r.viewport_height != h:
            self._r.viewport_width, self._r.viewport_height = w, h
        scene = pyrender.Scene()
        nodes, zmax = [], 1.0
        for verts, faces in meshes:
            gl = np.asarray(verts, np.float64) @ OPENCV_TO_GL.T
            zmax = max(zmax, float(-gl[:, 2].min()))
            nodes.append(scene.add(pyrender.Mesh.from_trimesh(trimesh.Trimesh(gl, faces, process=False))))
        # the camera of _render (same half-pixel offsets), and the same depth range for every pass
        cam = pyrender.IntrinsicsCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2] + 0.5, cy=K[1, 2] + 1.0, znear=0.01,
                                        zfar=zmax * 2.0 + 10.0)
        scene.add(cam, pose=np.eye(4))
        flags = pyrender.RenderFlags.DEPTH_ONLY
        try:
            together = np.asarray(self._r.render(scene, flags=flags), np.float32)
            alone = np.zeros((len(nodes), h, w), np.float32)
            for i, node in enumerate(nodes):
                for j, other in enumerate(nodes):
                    other.mesh.is_visible = i == j
                alone[i] = self._r.render(scene, flags=flags)
        except Exception as e:  # noqa: BLE001
            raise RenderError(f"rendering failed ({self.platform}): {type(e).__name__}: {e}") from e
        return together, alone


def _light_pose(toward_light) -> np.ndarray:
    """Pose of a directional light (it shines along its -z) placed toward ``toward_light`` (GL frame)."""
    z = np.asarray(toward_light, np.float64)
    z = z / np.linalg.norm(z)
    up = np.array([0.0, 1.0, 0.0]) if abs(z[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    return pose


def _fit_shift(verts: np.ndarray, K: np.ndarray, size: tuple[int, int], margin: float = 0.9) -> float:
    """How far to move ``verts`` (OpenCV frame) along +z so that they project inside the image."""
    w, h = size
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    need = [0.05 - z.min()]  # in front of the camera
    for coord, f, lo, hi in ((x, fx, cx, w - cx), (y, fy, cy, h - cy)):
        if hi > 0:
            need.append(float((coord * f / (margin * hi) - z).max()))
        if lo > 0:
            need.append(float((-coord * f / (margin * lo) - z).max()))
    return max(0.0, *need)
