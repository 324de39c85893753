"""glTF 2.0 binaries (.glb) written with pygltflib straight from numpy: ``scene.glb`` of a photo (every
person's mesh with vertex normals and a material, the photo's camera, optionally the photo as a textured
quad), and the buffer/camera pieces the skinned video glTF (:mod:`dpmesh_infer.video.gltf`) shares.

Folder runs write one scene.glb per image. Building a ``trimesh.Scene`` of N meshes and exporting it cost
about 6 ms per person on a 2-core CPU, most of it in per-mesh vertex normals; here the normals of all the
image's persons come from :func:`vertex_normals` (trimesh's angle-weighted normals, vectorised for the
fixed SMPL topology, about 0.8 ms per person), and the glTF tree is laid out directly:

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
    """Angle-weighted unit vertex normals (Thürrner & Wüthrich 1998: each face's unit normal weighted by
    its corner angle at the vertex), what ``trimesh.Trimesh(v, faces, process=False).vertex_normals``
    gives (equal to about 1e-12; tests/test_scene_glb.py compares), about 8x faster.

    trimesh's maths vectorised for a fixed topology, one mesh at a time on struct-of-arrays (3, F) float64
    rows (small enough to stay in cache): corner angles as ``atan2(|e1 x e2|, e1 . e2)``, faces with a
    corner angle under 1e-8 rad or zero area contribute nothing (trimesh's rule), each vertex sums its
    corners' ``angle * face normal`` (``np.bincount``), then unit length.

    Args:
        vertices: (N, V, 3) or (V, 3) float vertex positions.
        faces: (F, 3) int triangle vertex indices (counter-clockwise seen from outside).
        fallback: (3,) unit vector for vertices in no valid face (unreferenced, or only in zero-area
            faces); None keeps trimesh's (0, 0, 0), which glTF forbids for NORMAL.

    Returns:
        float64 normals of ``vertices``' shape.
    """
    v = np.asarray(vertices)
    single = v.ndim == 2
    v = v[None] if single else v
    faces = np.asarray(faces, np.int64)
    out = np.zeros(v.shape, np.float64)
    corners = [np.ascontiguousarray(faces[:, k]) for k in range(3)]
    corner_vertex = faces.T.ravel()  # corner-major, the order of the (3, F) rows below
    nv = v.shape[1]
    for i in range(len(v) if len(faces) else 0):
        X = np.ascontiguousarray(v[i].T, np.float64)  # (3, V)
        p0, p1, p2 = (np.take(X, c, axis=1) for c in corners)  # (3, F) each
        e01, e02, e12 = p1 - p0, p2 - p0, p2 - p1
        cross = np.stack([e01[1] * e02[2] - e01[2] * e02[1], e01[2] * e02[0] - e01[0] * e02[2],
                          e01[0] * e02[1] - e01[1] * e02[0]])
        twice_area = np.sqrt(cross[0] * cross[0] + cross[1] * cross[1] + cross[2] * cross[2])

        def dot(a, b):
            return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]

        cosines = np.stack([dot(e01, e02), -dot(e01, e12), dot(e02, e12)])  # |a||b| cos at corners 0, 1, 2
        angles = np.arctan2(np.broadcast_to(twice_area, cosines.shape), cosines)
        dead = (angles < 1e-8).any(axis=0) | (twice_area == 0)
        weight = np.where(dead, 0.0, angles / np.where(dead, 1.0, twice_area))  # angle / |cross|, (3, F)
        summed = np.stack([np.bincount(corner_vertex, weights=(weight * cross[k]).ravel(), minlength=nv)
                           for k in range(3)])
        length = np.sqrt(summed[0] * summed[0] + summed[1] * summed[1] + summed[2] * summed[2])
        out[i] = (summed / np.where(length > 0, length, 1.0)).T
        if fallback is not None:
            out[i][length == 0] = fallback
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
    """scene.glb bytes of images whose persons share one face array."""

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = np.asarray(faces, np.int64)

    def __call__(self, result, *, photo: np.ndarray | None = None, photo_depth: float | None = None) -> bytes:
        """The scene.glb of one :class:`~dpmesh_infer.outputs.ImageResult` (see the module docstring);
        ``photo`` (H, W, 3) uint8 adds the photo at ``photo_depth`` metres (default
        :data:`GLB_PHOTO_MARGIN_M` behind the farthest person vertex)."""
        import pygltflib as g

        from ..errors import InputError
        from ..render import person_colors

        persons = result.persons
        verts = np.asarray([np.asarray(p.vertices, np.float32) for p in persons]).reshape(len(persons), -1, 3)
        zmax = float(verts[..., 2].max()) if len(persons) else 0.0
        gl = verts * _GL_SIGNS.astype(np.float32)  # sign flips: exact
        normals = vertex_normals(gl, self.faces, fallback=UNFACED_NORMAL)
        gltf = g.GLTF2(asset=g.Asset(generator=GENERATOR, version="2.0"), scenes=[g.Scene(nodes=[])])
        buf = GlbBuffer(gltf)
        indices = buf.accessor(self.faces.astype(np.uint32).reshape(-1), "SCALAR", component=UNSIGNED_INT,
                               target=ELEMENT_ARRAY_BUFFER, minmax=True) if len(persons) else None
        for i, color in enumerate(person_colors(len(persons))):
            attributes = g.Attributes(
                POSITION=buf.accessor(gl[i], "VEC3", component=FLOAT, target=ARRAY_BUFFER,
                                      minmax=True),
                NORMAL=buf.accessor(normals[i].astype(np.float32), "VEC3", component=FLOAT, target=ARRAY_BUFFER))
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
        far = max(zmax, depth or 0.0, 1.0)
        gltf.cameras.append(glb_camera(result.K, result.image_size, zfar=2.0 * far + 10.0))
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
