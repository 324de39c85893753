"""glTF 2.0 binaries (.glb) written with pygltflib straight from numpy: ``scene.glb`` of a photo (every
person's mesh with vertex normals and a material, the photo's camera, optionally the photo as a textured
quad), and the buffer/camera pieces the skinned video glTF (:mod:`dpmesh_infer.video.gltf`) shares.

Folder runs write one scene.glb per image. Building a ``trimesh.Scene`` of N meshes and exporting it cost
about 6 ms per person on a 2-core CPU, most of it in per-mesh vertex normals; here the normals of all the
image's persons come from :class:`VertexNormals` (trimesh's angle-weighted normals in compiled loops for
the fixed SMPL topology, about 0.45 ms per person on 2-core CPUs), the glTF document is a per-person-count
template filled with each image's numbers (:class:`GlbWriter`; pygltflib builds the template), and the
tree is laid out directly:

- one shared ``uint32`` index accessor (all SMPL meshes have the same faces; trimesh found that too),
  then per person a float32 ``POSITION`` (with ``min``/``max``) and ``NORMAL`` accessor, each in its own
  bufferView with its target (34962 vertex attributes, 34963 indices; glTF 2.0 spec 5.11.4);
- a PBR material per person (its render colour, metallic 0, roughness 0.7), one node per person
  (``person_NN``), the photo camera node (:func:`glb_camera`) and ``asset.extras.dpmesh``
  (:func:`glb_extras`);
- with a photo: a JPEG texture (power-of-two sides) on a two-triangle quad behind the people, with
  ``KHR_materials_unlit``.

The tests compare the accessors with trimesh's export of the same scene (to float32 rounding) and run the
Khronos glTF validator on the files. Coordinates are in the glTF camera frame of the photo (OpenCV y and z
negated), metres.
"""

from __future__ import annotations

import io

import numpy as np

from ..geometry.camera import OPENCV_TO_GL

#: glTF componentType / bufferView targets (glTF 2.0 spec 3.6.2, 5.11.4).
FLOAT, UNSIGNED_INT = 5126, 5125
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
#: Near clipping plane of the written cameras, metres.
GLB_ZNEAR = 0.01
#: The photo quad's texture is resampled to power-of-two sides of at most this many pixels.
GLB_PHOTO_MAX_SIDE = 2048
#: Default photo depth: this many metres behind the farthest person vertex.
GLB_PHOTO_MARGIN_M = 1.0
GLB_SCHEMA_VERSION = 1
GENERATOR = "dpmesh_infer"
#: NORMAL of a vertex in no face of non-zero area (glTF requires unit normals): toward the camera.
UNFACED_NORMAL = (0.0, 0.0, 1.0)
_GL_SIGNS = np.diag(OPENCV_TO_GL)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, fallback=None) -> np.ndarray:
    """Angle-weighted unit vertex normals of ``vertices`` (N, V, 3) or (V, 3) with (F, 3) ``faces``: see
    :class:`VertexNormals` (which keeps the topology's tables for meshes that share faces)."""
    v = np.asarray(vertices)
    return VertexNormals(faces, v.shape[-2])(v, fallback=fallback)


class VertexNormals:
    """Angle-weighted unit vertex normals (Thürrner & Wüthrich 1998: each face's unit normal weighted by
    its corner angle at the vertex) for meshes of one topology, what
    ``trimesh.Trimesh(v, faces, process=False).vertex_normals`` gives (equal to about 1e-12;
    tests/test_scene_glb.py compares), about 20x faster.

    trimesh's maths in float64, one mesh at a time: a compiled pass over the faces
    (:func:`~dpmesh_infer.writers.kernels.corner_terms`: edges, ``e01 x e02``, its length and the three
    dot products), the corner angles as ``atan2(|e1 x e2|, e1 . e2)`` (torch's vectorised atan2,
    within 1 ulp of libm's; one (F,) row per call, so it stays on the calling thread), then a compiled
    pass (:func:`~dpmesh_infer.writers.kernels.corner_sums`) where faces with a corner angle under 1e-8
    rad or zero area contribute nothing (trimesh's rule), each vertex sums its corners'
    ``angle * face normal`` in corner-major order, and the sums get unit length.

    Args:
        faces: (F, 3) int triangle vertex indices (counter-clockwise seen from outside).
        n_vertices: V, the vertex count of the meshes.
    """

    def __init__(self, faces: np.ndarray, n_vertices: int) -> None:
        self.faces = np.ascontiguousarray(np.asarray(faces, np.int64).reshape(-1, 3))
        self.n_vertices = int(n_vertices)
        f = len(self.faces)
        if f and (self.faces.min() < 0 or self.faces.max() >= self.n_vertices):
            raise ValueError(f"face indices must be in 0..{self.n_vertices - 1}")

    def __call__(self, vertices: np.ndarray, fallback=None, dtype=np.float64) -> np.ndarray:
        """Normals of ``vertices`` (N, V, 3) or (V, 3) float, of the same shape (``dtype``: float64, or
        float32 for the rounded float64 normals); ``fallback``: (3,) unit vector for vertices in no valid
        face (unreferenced, or only in zero-area faces); None keeps trimesh's (0, 0, 0), which glTF
        forbids for NORMAL."""
        v = np.asarray(vertices)
        single = v.ndim == 2
        v = v[None] if single else v
        if v.shape[1] != self.n_vertices:
            raise ValueError(f"expected meshes of {self.n_vertices} vertices, got {v.shape}")
        out = np.zeros(v.shape, dtype)
        f = len(self.faces)
        if not f:
            if fallback is not None:
                out[...] = fallback
            return out[0] if single else out
        import torch

        from .kernels import corner_sums, corner_terms

        cross = np.empty((f, 3))
        twice_area = np.empty(f)
        cosines = np.empty((3, f))
        angles = np.empty((3, f))
        summed = np.empty((self.n_vertices, 3))
        direct = out.dtype == np.float64  # else each mesh's float64 normals, then rounded into ``out``
        normal = None if direct else np.empty((self.n_vertices, 3))
        use_fallback = fallback is not None
        fallback = np.asarray(fallback if use_fallback else (0.0, 0.0, 0.0), np.float64).reshape(3)
        # torch's vectorised atan2 (SLEEF, within 1 ulp): numpy's is the scalar libm one on CPUs without
        # AVX-512 (3-4x slower); one row per call keeps it on this thread
        t_area, t_cos, t_angles = (torch.from_numpy(a) for a in (twice_area, cosines, angles))
        for i in range(len(v)):
            corner_terms(np.ascontiguousarray(v[i], np.float64), self.faces, cross, twice_area, cosines)
            for k in range(3):
                torch.atan2(t_area, t_cos[k], out=t_angles[k])
            corner_sums(self.faces, cross, twice_area, angles, fallback, use_fallback, summed,
                        out[i] if direct else normal)
            if not direct:
                out[i] = normal
        return out[0] if single else out


class GlbBuffer:
    """The binary chunk of a pygltflib ``GLTF2``: arrays appended 4-byte aligned, one bufferView (and
    accessor) each; :meth:`finish` sets the buffer and returns the .glb bytes."""

    def __init__(self, gltf) -> None:
        self.gltf = gltf
        self.data = bytearray()

    def view(self, data: bytes, target: int | None = None) -> int:
        """A bufferView over ``data`` at the next 4-byte boundary; returns its index."""
        import pygltflib as g

        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.gltf.bufferViews.append(g.BufferView(buffer=0, byteOffset=len(self.data), byteLength=len(data),
                                                  target=target))
        self.data.extend(data)
        return len(self.gltf.bufferViews) - 1

    def accessor(self, array: np.ndarray, type_: str, *, component: int, target: int | None = None,
                 minmax: bool = False, normalized: bool = False) -> int:
        """``array`` (count, ...) as an accessor of ``type_`` (SCALAR, VEC3, MAT4, ...) in its own
        bufferView; ``minmax`` adds per-component bounds (required for POSITION)."""
        import pygltflib as g

        arr = np.ascontiguousarray(array)
        count = arr.shape[0]
        acc = g.Accessor(bufferView=self.view(arr.tobytes(), target), componentType=component, count=count,
                         type=type_, normalized=normalized or None)
        if minmax and count:
            columns = np.ascontiguousarray(arr.reshape(count, -1).T)  # numpy reduces rows ~50x faster
            acc.min = columns.min(1).astype(float).tolist()
            acc.max = columns.max(1).astype(float).tolist()
        self.gltf.accessors.append(acc)
        return len(self.gltf.accessors) - 1

    def finish(self) -> bytes:
        import pygltflib as g

        if not self.data:  # nothing binary (a scene without persons): no buffer and no BIN chunk (spec 4.4.3.3)
            self.gltf.buffers = []
            return glb_container(self.gltf.gltf_to_json(separators=(",", ":"), indent=None), b"")
        self.gltf.buffers = [g.Buffer(byteLength=len(self.data))]
        self.gltf.set_binary_blob(bytes(self.data))
        return b"".join(self.gltf.save_to_bytes())


def glb_camera(K: np.ndarray, image_size: tuple[int, int], zfar: float | None = None, name: str = "photo_camera"):
    """The glTF perspective camera (pygltflib ``Camera``; glTF 2.0 spec 3.10.3) of ``K`` (3, 3) px and
    image size (W, H).

    ``yfov = 2 atan(H / (2 fy))`` (radians) and ``aspectRatio = (W / fx) / (H / fy)`` (= W / H for square
    pixels): a viewer with a W x H viewport sees the photo's framing when the principal point is the image
    centre. glTF cameras have no principal point (the optical axis goes through the viewport centre,
    (W - 1) / 2 in K's convention of pixel centres at integers): with ``(cx, cy)`` elsewhere the view is
    the photo's shifted by ``(cx - (W - 1)/2, cy - (H - 1)/2)`` px (half a pixel for the default W/2,
    H/2; the geometry, photo quad included, is exact, only the viewer's framing moves). The exact ``K``,
    the size and that offset are in the camera's ``extras``.
    """
    import pygltflib as g

    K = np.asarray(K, np.float64)
    w, h = float(image_size[0]), float(image_size[1])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    persp = g.Perspective(yfov=float(2.0 * np.arctan(h / (2.0 * fy))), aspectRatio=float((w / fx) / (h / fy)),
                          znear=GLB_ZNEAR, zfar=None if zfar is None else float(zfar))
    return g.Camera(type="perspective", name=name, perspective=persp,
                    extras={"K": K.tolist(), "image_size": [int(image_size[0]), int(image_size[1])],
                            "principal_point_offset_px": [float(cx - (w - 1.0) / 2.0), float(cy - (h - 1.0) / 2.0)]})


def photo_quad(K: np.ndarray, image_size: tuple[int, int], depth: float) -> np.ndarray:
    """(4, 3) corners (top-left, top-right, bottom-right, bottom-left) of the photo back-projected to
    ``depth`` metres, OpenCV camera frame: pixel edges at -0.5 and W - 0.5 (pixel centres at integers), so
    the quad covers exactly the photo in the camera's view."""
    K = np.asarray(K, np.float64)
    w, h = image_size
    uv = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    xy = (uv - K[:2, 2]) / np.array([K[0, 0], K[1, 1]]) * depth
    return np.column_stack([xy, np.full(4, float(depth))])


def pot_side(n: int) -> int:
    """The power of two nearest to ``n`` (in log scale), between 1 and :data:`GLB_PHOTO_MAX_SIDE`."""
    return int(min(GLB_PHOTO_MAX_SIDE, 2 ** max(0, round(np.log2(max(n, 1))))))


def glb_extras(result, photo_depth: float | None) -> dict:
    """scene.glb's ``asset.extras.dpmesh``: schema version, units, frame, K, image size, source (absent
    for in-memory images), persons, and ``photo_depth_m`` (metres) when the photo quad is written."""
    extras = {"schema_version": GLB_SCHEMA_VERSION, "units": "metres",
              "frame": "glTF camera frame of the photo: OpenCV camera axes with y and z negated "
                       "(x right, y up, z toward the viewer); the camera node is at the origin",
              "K": np.asarray(result.K, float).tolist(),
              "image_size": [int(result.image_size[0]), int(result.image_size[1])],
              "source": result.source, "persons": len(result.persons), "photo_depth_m": photo_depth}
    return {k: v for k, v in extras.items() if v is not None}  # glTF JSON has no nulls


def glb_bytes_from(result, faces: np.ndarray, *, photo: np.ndarray | None = None,
                   photo_depth: float | None = None) -> bytes:
    """scene.glb of one result with its (F, 3) faces (:class:`GlbWriter`, for a single image)."""
    return GlbWriter(faces)(result, photo=photo, photo_depth=photo_depth)


class GlbWriter:
    """scene.glb bytes of images whose persons share one face array.

    The glTF document of an image without the photo quad depends on the image only through a few numbers
    (each POSITION's ``min``/``max``, the camera, ``asset.extras``) and the binary chunk: the rest (buffer
    views, accessors, meshes, materials, nodes) is fixed by the person count and the mesh size. So
    :meth:`build` (the whole document with pygltflib) runs once per person count, on zero vertices, to
    make a template; each image then patches those numbers into the template's JSON tree, serialises it
    with the C JSON encoder and frames the chunks as pygltflib's ``save_to_bytes`` does — the same bytes
    as :meth:`build` (tests/test_scene_glb.py compares), without pygltflib's dataclass-to-dict
    conversion of every accessor (about 0.7 ms per person on a 2-core CPU). Scenes with the photo quad
    (a JPEG of varying length) are built whole. Safe to share between writer threads.
    """

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = np.asarray(faces, np.int64)
        self._templates: dict[tuple[int, int], _Template] = {}
        self._normals: VertexNormals | None = None  # the topology's tables, built on first use

    def __call__(self, result, *, photo: np.ndarray | None = None, photo_depth: float | None = None) -> bytes:
        """The scene.glb of one :class:`~dpmesh_infer.outputs.ImageResult` (see the module docstring);
        ``photo`` (H, W, 3) uint8 adds the photo at ``photo_depth`` metres (default
        :data:`GLB_PHOTO_MARGIN_M` behind the farthest person vertex)."""
        if photo is not None:
            return self.build(result, photo=photo, photo_depth=photo_depth)
        gl, normals = self._geometry(result)
        key = gl.shape[:2]
        template = self._templates.get(key)
        if template is None:
            template = self._templates.setdefault(key, _Template.of(self, *key))
        return template.fill(result, gl, normals)

    def _geometry(self, result) -> tuple[np.ndarray, np.ndarray]:
        """(N, V, 3) float32 vertices in the glTF camera frame and their float32 unit normals."""
        persons = result.persons
        if not persons:  # an image whose every person was skipped: a scene with the camera alone
            return np.zeros((0, 0, 3), np.float32), np.zeros((0, 0, 3), np.float32)
        verts = np.asarray([np.asarray(p.vertices, np.float32) for p in persons]).reshape(len(persons), -1, 3)
        gl = verts * _GL_SIGNS.astype(np.float32)  # sign flips: exact
        normals = self._normals
        if normals is None or normals.n_vertices != gl.shape[1]:
            normals = self._normals = VertexNormals(self.faces, gl.shape[1])
        return gl, normals(gl, fallback=UNFACED_NORMAL, dtype=np.float32)

    def build(self, result, *, photo: np.ndarray | None = None, photo_depth: float | None = None,
              geometry: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
        """The whole document with pygltflib (what :meth:`__call__` reproduces from a template);
        ``geometry`` replaces the vertices and normals of ``result`` (the template is built on zeros)."""
        import pygltflib as g

        from ..errors import InputError
        from ..render import person_colors

        gl, normals = self._geometry(result) if geometry is None else geometry
        n = len(gl)
        zmax = -float(gl[..., 2].min()) if n else 0.0  # the farthest vertex (OpenCV z = -glTF z)
        gltf = g.GLTF2(asset=g.Asset(generator=GENERATOR, version="2.0"), scenes=[g.Scene(nodes=[])])
        buf = GlbBuffer(gltf)
        indices = buf.accessor(self.faces.astype(np.uint32).reshape(-1), "SCALAR", component=UNSIGNED_INT,
                               target=ELEMENT_ARRAY_BUFFER, minmax=True) if n else None
        for i, color in enumerate(person_colors(n)):
            attributes = g.Attributes(
                POSITION=buf.accessor(gl[i], "VEC3", component=FLOAT, target=ARRAY_BUFFER, minmax=True),
                NORMAL=buf.accessor(normals[i], "VEC3", component=FLOAT, target=ARRAY_BUFFER))
            gltf.materials.append(g.Material(
                name=f"person_{i:02d}", doubleSided=False, pbrMetallicRoughness=g.PbrMetallicRoughness(
                    baseColorFactor=[*map(float, color), 1.0], metallicFactor=0.0, roughnessFactor=0.7)))
            self._add_mesh(gltf, f"person_{i:02d}", attributes, indices, len(gltf.materials) - 1)
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
            self._add_photo(gltf, buf, result, photo, depth)
        gltf.cameras.append(_camera_of(result, zmax, depth))
        gltf.nodes.append(g.Node(name="photo_camera", camera=len(gltf.cameras) - 1))
        gltf.scenes[0].nodes.append(len(gltf.nodes) - 1)
        gltf.asset.extras = {"dpmesh": glb_extras(result, depth)}
        return buf.finish()

    @staticmethod
    def _add_mesh(gltf, name: str, attributes, indices: int, material: int) -> None:
        import pygltflib as g

        gltf.meshes.append(g.Mesh(name=name, primitives=[
            g.Primitive(attributes=attributes, indices=indices, mode=g.TRIANGLES, material=material)]))
        gltf.nodes.append(g.Node(name=name, mesh=len(gltf.meshes) - 1))
        gltf.scenes[0].nodes.append(len(gltf.nodes) - 1)

    def _add_photo(self, gltf, buf: GlbBuffer, result, photo: np.ndarray, depth: float) -> None:
        import pygltflib as g
        from PIL import Image

        h, w = photo.shape[:2]
        img = Image.fromarray(np.ascontiguousarray(photo[..., :3], dtype=np.uint8))
        # power-of-two texture sides (mipmaps everywhere, no validator note); the UVs stretch it over the quad
        img = img.resize((pot_side(w), pot_side(h)), Image.LANCZOS)
        jpeg = io.BytesIO()
        img.save(jpeg, format="JPEG", quality=92)
        corners = photo_quad(result.K, (w, h), depth) * _GL_SIGNS
        faces = np.array([[0, 3, 2], [0, 2, 1]])  # faces the camera
        uv = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # glTF texture space: v down from the top
        indices = buf.accessor(faces.astype(np.uint32).reshape(-1), "SCALAR", component=UNSIGNED_INT,
                               target=ELEMENT_ARRAY_BUFFER, minmax=True)
        attributes = g.Attributes(
            POSITION=buf.accessor(corners.astype(np.float32), "VEC3", component=FLOAT, target=ARRAY_BUFFER,
                                  minmax=True),
            TEXCOORD_0=buf.accessor(uv.astype(np.float32), "VEC2", component=FLOAT, target=ARRAY_BUFFER),
            NORMAL=buf.accessor(vertex_normals(corners, faces).astype(np.float32), "VEC3", component=FLOAT,
                                target=ARRAY_BUFFER))
        gltf.images.append(g.Image(bufferView=buf.view(jpeg.getvalue()), mimeType="image/jpeg"))
        gltf.textures.append(g.Texture(source=len(gltf.images) - 1))
        gltf.materials.append(g.Material(
            name="photo", doubleSided=True, extensions={"KHR_materials_unlit": {}},
            pbrMetallicRoughness=g.PbrMetallicRoughness(baseColorTexture=g.TextureInfo(index=len(gltf.textures) - 1),
                                                        metallicFactor=0.0, roughnessFactor=1.0)))
        gltf.extensionsUsed = ["KHR_materials_unlit"]
        self._add_mesh(gltf, "photo", attributes, indices, len(gltf.materials) - 1)


def _camera_of(result, zmax: float, depth: float | None):
    """The photo camera of scene.glb: far plane beyond the farthest vertex and the photo quad."""
    far = max(zmax, depth or 0.0, 1.0)
    return glb_camera(result.K, result.image_size, zfar=2.0 * far + 10.0)


def glb_container(json_text: str, *blob) -> bytes:
    """A .glb file (glTF 2.0 spec 4.4: 12-byte header, JSON chunk padded with spaces, BIN chunk) framed
    exactly as pygltflib's ``GLTF2.save_to_bytes`` frames it (4-byte alignment). ``blob``: the BIN
    chunk's bytes, in one or more bytes-like pieces (joined in the one copy that makes the file); without
    any, no BIN chunk (pygltflib would write an empty one, which the validator reports)."""
    import struct

    data = json_text.encode("utf-8")
    data += b" " * (-len(data) % 4)  # the header (12) and a chunk header (8) are 4-aligned already
    blob_length = sum(memoryview(part).nbytes for part in blob)
    bin_chunk = [struct.pack("<I", blob_length), b"BIN\0", *blob] if blob_length else []
    length = 12 + 8 + len(data) + (8 + blob_length if blob_length else 0)
    return b"".join([b"glTF", struct.pack("<III", 2, length, len(data)), b"JSON", data, *bin_chunk])


class _Template:
    """One person count's scene.glb document (see :class:`GlbWriter`): the JSON tree pygltflib writes
    (as plain dicts and lists), where the per-image numbers go, and the index block."""

    def __init__(self, doc: dict, positions: list[int], indices: bytes) -> None:
        self.doc, self.positions, self.indices = doc, positions, indices

    @classmethod
    def of(cls, writer: GlbWriter, n: int, nv: int) -> "_Template":
        import json
        from types import SimpleNamespace

        zeros = np.zeros((n, nv, 3), np.float32)
        stand_in = SimpleNamespace(persons=[], K=np.eye(3), image_size=(1, 1), source=None)  # all patched
        data = writer.build(stand_in, geometry=(zeros, zeros))
        (json_length,) = np.frombuffer(data[12:16], np.uint32)
        doc = json.loads(data[20:20 + int(json_length)])
        positions = [mesh["primitives"][0]["attributes"]["POSITION"] for mesh in doc.get("meshes", [])]
        indices = writer.faces.astype(np.uint32).tobytes() if n else b""
        return cls(doc, positions, indices)

    def fill(self, result, gl: np.ndarray, normals: np.ndarray) -> bytes:
        """The scene.glb of ``result`` with its glTF-frame vertices ``gl`` and ``normals`` (N, V, 3)
        float32: the template's JSON with this image's bounds, camera and extras, and its binary chunk."""
        import json

        from pygltflib import delete_empty_keys, gltf_asdict

        doc = dict(self.doc)
        zmax = 0.0
        if len(gl):
            accessors = list(doc["accessors"])
            columns = np.ascontiguousarray(gl.transpose(0, 2, 1))  # numpy reduces rows ~30x faster
            lo, hi = columns.min(2).astype(float).tolist(), columns.max(2).astype(float).tolist()
            for i, k in enumerate(self.positions):
                accessors[k] = {**accessors[k], "max": hi[i], "min": lo[i]}  # keys stay where pygltflib put them
            doc["accessors"] = accessors
            zmax = -min(bounds[2] for bounds in lo)  # the farthest vertex (OpenCV z = -glTF z)
        doc["cameras"] = [delete_empty_keys(gltf_asdict(_camera_of(result, zmax, None)))]
        doc["asset"] = delete_empty_keys({**doc["asset"], "extras": {"dpmesh": glb_extras(result, None)}})
        text = json.dumps(doc, skipkeys=True, allow_nan=False, separators=(",", ":"))
        attributes = np.stack([gl, normals], axis=1)  # per person POSITION, NORMAL
        return glb_container(text, self.indices, attributes.reshape(-1).view(np.uint8))
