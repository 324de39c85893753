"""Writing results: ``.npz`` (plain arrays, no pickle), ``.json`` (schema-versioned), and meshes
(``.obj``, ``.ply``, ``.glb``) through trimesh. Every file is written atomically (temporary file in the
same folder, then rename), so an interrupted run never leaves a partial file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .atomic import write_bytes
from .errors import InputError
from .outputs import SCHEMA_VERSION, ImageResult

MESH_SUFFIXES = (".obj", ".ply", ".glb")
SUFFIXES = (".npz", ".json") + MESH_SUFFIXES


def result_to_dict(result: ImageResult) -> dict:
    """JSON-ready dict: schema version, image size, K, and per person every parameter."""
    persons = []
    for i, p in enumerate(result.persons):
        persons.append(
            {
                "index": i,
                "score": float(p.score),
                "bbox_xywh": np.asarray(p.bbox, float).round(3).tolist(),
                "keypoints_2d": np.asarray(p.keypoints_2d, float).round(3).tolist(),
                "smpl": {
                    "global_orient": np.asarray(p.global_orient, float).tolist(),
                    "body_pose": np.asarray(p.body_pose, float).tolist(),
                    "betas": np.asarray(p.betas, float).tolist(),
                    "transl": np.asarray(p.transl, float).tolist(),
                },
                "joints_3d": np.asarray(p.joints, float).round(6).tolist(),
                "joints_2d": np.asarray(p.joints_2d, float).round(3).tolist(),
                **p.extra_json(),  # visibility; refinement (errors before/after, unrefined body) when refined
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "units": {"3d": "metres", "2d": "pixels", "rotations": "axis-angle radians"},
        "frame": "OpenCV camera of the photo: x right, y down, z forward; u = fx*X/Z + cx",
        "joint_set": "dpmesh30",
        "source": result.source,
        "image_size": [int(result.image_size[0]), int(result.image_size[1])],
        "K": np.asarray(result.K, float).tolist(),
        "focal_source": result.focal_source,
        "persons": persons,
        "skipped": [{"index": int(i), "reason": r} for i, r in result.skipped],
    }


def save_json(result: ImageResult, path: str | Path) -> Path:
    return write_bytes(path, (json.dumps(result_to_dict(result), indent=1) + "\n").encode())


def save_npz(result: ImageResult, path: str | Path) -> Path:
    """Per-person arrays stacked over persons (N, ...) under their names, plus ``K`` and ``image_size``."""
    buf = io.BytesIO()
    arrays = result.stacked()
    arrays["schema_version"] = np.asarray(SCHEMA_VERSION, dtype=np.int64)
    np.savez(buf, **arrays)
    return write_bytes(path, buf.getvalue())


#: OpenCV camera (y down, z forward) -> glTF/OpenGL camera (y up, z toward the viewer).
OPENCV_TO_GL = np.diag([1.0, -1.0, -1.0])


def build_scene(result: ImageResult, faces: np.ndarray, *, gl_frame: bool = False):
    """A ``trimesh.Scene`` with one mesh per person (``person_00``, ...).

    Vertices are in the photo's OpenCV camera frame, or with ``gl_frame`` in the glTF/OpenGL camera
    frame (y and z negated), which is what glTF viewers and Blender expect.
    """
    import trimesh

    scene = trimesh.Scene()
    for i, p in enumerate(result.persons):
        verts = np.asarray(p.vertices, np.float64)
        if gl_frame:
            verts = verts @ OPENCV_TO_GL.T
        mesh = trimesh.Trimesh(verts, np.asarray(faces), process=False)
        scene.add_geometry(mesh, node_name=f"person_{i:02d}", geom_name=f"person_{i:02d}")
    return scene


def save_mesh(result: ImageResult, faces: np.ndarray, path: str | Path, *, photo: np.ndarray | None = None,
              photo_depth: float | None = None) -> Path:
    """All persons' meshes in one file.

    ``.obj`` (one ``o person_NN`` object per person) and ``.ply`` (all persons concatenated) hold
    vertices in the photo's OpenCV camera frame; ``.glb`` holds one node per person in the glTF camera
    frame (y up, z toward the viewer: OpenCV y and z negated), so it opens upright in Blender, with the
    photo's camera, normals and a material per person (:func:`glb_bytes`; ``photo`` / ``photo_depth``
    add the photo as a textured quad, GLB only).
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"unsupported mesh format {suffix!r}; use one of {', '.join(MESH_SUFFIXES)}")
    if suffix == ".glb":
        return write_bytes(path, glb_bytes(result, faces, photo=photo, photo_depth=photo_depth))
    if suffix == ".ply":
        # PLY has no object groups: one mesh with all persons concatenated.
        meshes = [trimesh.Trimesh(np.asarray(p.vertices, np.float64), faces, process=False) for p in result.persons]
        mesh = trimesh.util.concatenate(meshes) if meshes else trimesh.Trimesh()
        data = mesh.export(file_type="ply")
    else:
        data = build_scene(result, faces, gl_frame=suffix == ".glb").export(file_type=suffix[1:])
    if isinstance(data, str):
        data = data.encode()
    return write_bytes(path, data)


def save_result(result: ImageResult, faces: np.ndarray, path: str | Path, *, photo: np.ndarray | None = None,
                photo_depth: float | None = None) -> Path:
    """Write by suffix; a mesh file also gets its parameters as ``<stem>.json`` beside it (``photo`` and
    ``photo_depth``: see :func:`glb_bytes`, used by ``.glb`` only)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return save_npz(result, path)
    if suffix == ".json":
        return save_json(result, path)
    if suffix in MESH_SUFFIXES:
        save_mesh(result, faces, path, photo=photo, photo_depth=photo_depth)
        save_json(result, path.with_suffix(".json"))
        return path
    raise InputError(f"unsupported output {path.name!r}: the suffix must be one of {', '.join(SUFFIXES)}")


# --------------------------------------------------------------------------------------------------- GLB scene
#
# scene.glb (glTF 2.0, binary): one node per person (mesh with vertex normals and its own material), the
# photo's camera as a node, optionally the photo itself as a textured quad. Meshes are written by trimesh;
# the camera, the bufferView targets, the unlit photo material and our extras are added to its glTF tree.

#: glTF bufferView targets (glTF 2.0 spec 5.11.4): vertex attributes and triangle indices.
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
#: Near clipping plane of the written camera, metres.
GLB_ZNEAR = 0.01
#: The photo quad's texture is resampled to power-of-two sides of at most this many pixels.
GLB_PHOTO_MAX_SIDE = 2048
#: Default photo depth: this many metres behind the farthest person vertex.
GLB_PHOTO_MARGIN_M = 1.0
GLB_SCHEMA_VERSION = 1


def glb_camera(K: np.ndarray, image_size: tuple[int, int], zfar: float | None = None) -> dict:
    """The glTF perspective camera of the photo (glTF 2.0 spec 3.10.3) from ``K`` (3, 3) px and (W, H).

    ``yfov = 2 atan(H / (2 fy))`` (radians) and ``aspectRatio = (W / fx) / (H / fy)`` (= W / H for square
    pixels): a viewer with a W x H viewport sees the photo's framing when the principal point is the image
    centre. glTF cameras have no principal point (the optical axis goes through the viewport centre,
    (W - 1) / 2 in K's convention of pixel centres at integers): with ``(cx, cy)`` elsewhere the view is
    the photo's shifted by ``(cx - (W - 1)/2, cy - (H - 1)/2)`` px (half a pixel for the default W/2,
    H/2; the geometry, photo quad included, is exact, only the viewer's framing moves). The exact ``K``,
    the size and that offset are in the camera's ``extras``.
    """
    K = np.asarray(K, np.float64)
    w, h = float(image_size[0]), float(image_size[1])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    persp = {"yfov": float(2.0 * np.arctan(h / (2.0 * fy))), "aspectRatio": float((w / fx) / (h / fy)),
             "znear": GLB_ZNEAR}
    if zfar is not None:
        persp["zfar"] = float(zfar)
    return {"type": "perspective", "name": "photo_camera", "perspective": persp,
            "extras": {"K": K.tolist(), "image_size": [int(image_size[0]), int(image_size[1])],
                       "principal_point_offset_px": [float(cx - (w - 1.0) / 2.0), float(cy - (h - 1.0) / 2.0)]}}


def photo_quad(K: np.ndarray, image_size: tuple[int, int], depth: float) -> np.ndarray:
    """(4, 3) corners (top-left, top-right, bottom-right, bottom-left) of the photo back-projected to
    ``depth`` metres, OpenCV camera frame: pixel edges at -0.5 and W - 0.5 (pixel centres at integers), so
    the quad covers exactly the photo in the camera's view."""
    K = np.asarray(K, np.float64)
    w, h = image_size
    uv = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    xy = (uv - K[:2, 2]) / np.array([K[0, 0], K[1, 1]]) * depth
    return np.column_stack([xy, np.full(4, float(depth))])


def _pot(n: int) -> int:
    """The power of two nearest to ``n`` (in log scale), between 1 and GLB_PHOTO_MAX_SIDE."""
    return int(min(GLB_PHOTO_MAX_SIDE, 2 ** max(0, round(np.log2(max(n, 1))))))


def build_glb_scene(result: ImageResult, faces: np.ndarray, *, photo: np.ndarray | None = None,
                    photo_depth: float | None = None):
    """The trimesh.Scene of scene.glb, glTF camera frame: ``person_NN`` meshes (vertex normals, a material
    of the person's render colour), and with ``photo`` (H, W, 3) uint8 a ``photo`` quad at ``photo_depth``
    metres (default :data:`GLB_PHOTO_MARGIN_M` behind the farthest person vertex).

    Returns (scene, photo depth in metres or None).
    """
    import trimesh
    from PIL import Image

    from .render import person_colors

    scene = trimesh.Scene()
    colors = person_colors(len(result.persons))
    zmax = 0.0
    for i, p in enumerate(result.persons):
        verts = np.asarray(p.vertices, np.float64)
        zmax = max(zmax, float(verts[:, 2].max()))
        mesh = trimesh.Trimesh(verts @ OPENCV_TO_GL.T, np.asarray(faces), process=False)
        material = trimesh.visual.material.PBRMaterial(
            name=f"person_{i:02d}", baseColorFactor=[*colors[i], 1.0], metallicFactor=0.0, roughnessFactor=0.7)
        mesh.visual = trimesh.visual.TextureVisuals(material=material)
        scene.add_geometry(mesh, node_name=f"person_{i:02d}", geom_name=f"person_{i:02d}")
    depth = None
    if photo is not None:
        photo = np.asarray(photo)
        h, w = photo.shape[:2]
        if (w, h) != tuple(int(v) for v in result.image_size):
            iw, ih = result.image_size
            raise InputError(f"photo is {w}x{h} but the result's image is {iw}x{ih}")
        depth = float(photo_depth) if photo_depth is not None else zmax + GLB_PHOTO_MARGIN_M
        if not depth > 0:
            raise InputError(f"the photo depth must be > 0 metres, got {depth}")
        img = Image.fromarray(np.ascontiguousarray(photo[..., :3], dtype=np.uint8))
        # power-of-two texture sides (mipmaps everywhere, no validator note), at most GLB_PHOTO_MAX_SIDE;
        # the UVs stretch it back over the quad
        img = img.resize(tuple(_pot(n) for n in (w, h)), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        texture = Image.open(io.BytesIO(buf.getvalue()))  # format JPEG: trimesh embeds it as image/jpeg
        corners = photo_quad(result.K, (w, h), depth) @ OPENCV_TO_GL.T
        uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # trimesh: v up (flipped on export)
        quad = trimesh.Trimesh(corners, np.array([[0, 3, 2], [0, 2, 1]]), process=False)  # faces the camera
        material = trimesh.visual.material.PBRMaterial(name="photo", baseColorTexture=texture, metallicFactor=0.0,
                                                       roughnessFactor=1.0, doubleSided=True)
        quad.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
        scene.add_geometry(quad, node_name="photo", geom_name="photo")
    return scene, depth


def glb_bytes(result: ImageResult, faces: np.ndarray, *, photo: np.ndarray | None = None,
              photo_depth: float | None = None) -> bytes:
    """scene.glb's bytes: :func:`build_glb_scene` exported by trimesh, plus the photo's camera node
    (:func:`glb_camera`, at the origin looking along -z: the photo's camera in the glTF frame), bufferView
    targets, KHR_materials_unlit on the photo material and ``extras`` (schema version, frame, K, size)."""
    scene, depth = build_glb_scene(result, faces, photo=photo, photo_depth=photo_depth)
    zmax = max([float(np.asarray(p.vertices)[:, 2].max()) for p in result.persons] + [depth or 0.0, 1.0])

    def finish(tree: dict) -> None:
        tree.setdefault("cameras", []).append(glb_camera(result.K, result.image_size, zfar=2.0 * zmax + 10.0))
        nodes = tree.setdefault("nodes", [])
        nodes.append({"name": "photo_camera", "camera": len(tree["cameras"]) - 1})
        tree["scenes"][tree.get("scene", 0)].setdefault("nodes", []).append(len(nodes) - 1)
        views = tree.get("bufferViews", [])
        accessors = tree.get("accessors", [])
        for mesh in tree.get("meshes", []):
            for prim in mesh.get("primitives", []):
                for acc in prim.get("attributes", {}).values():
                    views[accessors[acc]["bufferView"]]["target"] = ARRAY_BUFFER
                if "indices" in prim:
                    views[accessors[prim["indices"]]["bufferView"]]["target"] = ELEMENT_ARRAY_BUFFER
        for mat in tree.get("materials", []):
            if mat.get("name") == "photo":  # the photo shows its own colours, whatever the lights
                mat.setdefault("extensions", {})["KHR_materials_unlit"] = {}
                used = tree.setdefault("extensionsUsed", [])
                if "KHR_materials_unlit" not in used:
                    used.append("KHR_materials_unlit")
        tree.setdefault("asset", {})["extras"] = {
            "dpmesh": {"schema_version": GLB_SCHEMA_VERSION, "units": "metres",
                       "frame": "glTF camera frame of the photo: OpenCV camera axes with y and z negated "
                                "(x right, y up, z toward the viewer); the camera node is at the origin",
                       "K": np.asarray(result.K, float).tolist(),
                       "image_size": [int(result.image_size[0]), int(result.image_size[1])],
                       "source": result.source, "persons": len(result.persons),
                       "photo_depth_m": depth}}

    from trimesh.exchange.gltf import export_glb

    return export_glb(scene, include_normals=True, tree_postprocessor=finish)
