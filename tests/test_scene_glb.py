"""scene.glb: the photo's camera, vertex normals, a material per person, bufferView targets, the optional
photo quad; checked with the Khronos glTF validator, reloaded with trimesh, and rendered with its own
camera against the overlay (render.Renderer) on closed test bodies.

The Khronos validator is the npm package ``gltf-validator`` run with node (tests/gltf_validator.py).
"""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gltf_validator import validate_glb

from dpmesh_infer.export import save_mesh, save_result
from dpmesh_infer.outputs import ImageResult, Person
from dpmesh_infer.render import person_colors
from dpmesh_infer.writers.glb import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER

W, H = 320, 240
K = np.array([[300.0, 0.0, W / 2], [0.0, 300.0, H / 2], [0.0, 0.0, 1.0]])


def _person(vertices):
    z = np.zeros
    return Person(np.asarray(vertices, np.float32), z((30, 3)), z(3), z((23, 3)), z(10), z(3), z((30, 3)),
                  z((30, 2)), z(4))


def closed_bodies():
    """Two closed, watertight stand-in bodies (capsule torso+head, box) overlapping in the view: (result, faces)
    with both meshes sharing one face array, as SMPL meshes do."""
    import trimesh

    a = trimesh.creation.capsule(height=1.2, radius=0.3, count=[24, 24])
    assert a.is_watertight
    # one topology for both people: the second is the capsule scaled (still closed)
    rot = trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])[:3, :3]  # capsule axis along y
    va = a.vertices @ rot.T + [-0.35, 0.0, 4.0]
    vb = a.vertices @ rot.T * [1.1, 0.8, 1.1] + [0.45, 0.25, 5.5]
    return ImageResult([_person(va), _person(vb)], K.copy(), (W, H), source="test.jpg"), np.asarray(a.faces)


def glb_json(path: Path) -> dict:
    """The JSON chunk of a .glb (glTF 2.0 spec, "Binary glTF Layout")."""
    data = path.read_bytes()
    magic, version, _ = struct.unpack_from("<III", data, 0)
    length, kind = struct.unpack_from("<II", data, 12)
    assert magic == 0x46546C67 and version == 2 and kind == 0x4E4F534A
    return json.loads(data[20:20 + length])


# ------------------------------------------------------------------------------------------ validator

def validate(path: Path) -> dict:
    return validate_glb(path)["issues"]


def test_khronos_validator_reports_nothing(tmp_path):
    result, faces = closed_bodies()
    plain = save_mesh(result, faces, tmp_path / "scene.glb")
    issues = validate(plain)
    assert (issues["numErrors"], issues["numWarnings"], issues["numInfos"], issues["numHints"]) == (0, 0, 0, 0), \
        issues["messages"]
    photo = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    with_photo = save_mesh(result, faces, tmp_path / "photo.glb", photo=photo)
    issues = validate(with_photo)
    assert (issues["numErrors"], issues["numWarnings"], issues["numInfos"], issues["numHints"]) == (0, 0, 0, 0), \
        issues["messages"]


# ------------------------------------------------------------------------------------------ content

def test_glb_content_and_trimesh_reload(tmp_path):
    import trimesh

    result, faces = closed_bodies()
    path = save_mesh(result, faces, tmp_path / "scene.glb")
    tree = glb_json(path)
    cam = tree["cameras"][0]
    assert cam["type"] == "perspective"
    assert cam["perspective"]["yfov"] == pytest.approx(2 * np.arctan(H / 2 / 300.0))
    assert cam["perspective"]["aspectRatio"] == pytest.approx(W / H)
    assert cam["perspective"]["znear"] > 0 and cam["perspective"]["zfar"] > 5.5
    assert cam["extras"]["K"] == K.tolist() and cam["extras"]["image_size"] == [W, H]
    (cam_node,) = [n for n in tree["nodes"] if "camera" in n]
    assert not {"matrix", "rotation", "translation"} & set(cam_node)  # at the origin, looking along -z
    assert tree["nodes"].index(cam_node) in tree["scenes"][0]["nodes"]
    colors = person_colors(2)
    for i, mesh in enumerate(tree["meshes"]):
        (prim,) = mesh["primitives"]
        assert {"POSITION", "NORMAL"} <= set(prim["attributes"])
        mat = tree["materials"][prim["material"]]
        np.testing.assert_allclose(mat["pbrMetallicRoughness"]["baseColorFactor"][:3], colors[i], atol=1 / 255)
        assert mat["pbrMetallicRoughness"]["metallicFactor"] == 0
        for acc in prim["attributes"].values():
            assert tree["bufferViews"][tree["accessors"][acc]["bufferView"]]["target"] == ARRAY_BUFFER
        assert tree["bufferViews"][tree["accessors"][prim["indices"]]["bufferView"]]["target"] == ELEMENT_ARRAY_BUFFER
    assert tree["asset"]["extras"]["dpmesh"]["schema_version"] == 1
    assert len({m["name"] for m in tree["materials"]}) == 2  # distinct materials

    scene = trimesh.load(path)
    assert scene.camera is not None and set(scene.geometry) == {"person_00", "person_01"}
    for i, p in enumerate(result.persons):
        geom = scene.geometry[f"person_{i:02d}"]
        np.testing.assert_allclose(geom.vertices, p.vertices * [1, -1, -1], atol=1e-6)  # glTF frame
        np.testing.assert_array_equal(geom.faces, faces)
        # outward normals in the file agree with the geometry (winding kept)
        assert np.mean(np.sum(geom.vertex_normals * (geom.vertices - geom.vertices.mean(0)), axis=1) > 0) > 0.99


def _trimesh_reference(result, faces, photo=None, depth=None) -> dict:
    """POSITION / NORMAL / TEXCOORD_0 / indices per mesh name of the same scene exported by trimesh (the
    writer scene.glb used before glb_writer): the reference the fast writer must reproduce."""
    import trimesh
    from PIL import Image

    from dpmesh_infer.geometry.camera import OPENCV_TO_GL
    from dpmesh_infer.writers.glb import photo_quad

    scene = trimesh.Scene()
    for i, p in enumerate(result.persons):
        mesh = trimesh.Trimesh(np.asarray(p.vertices, np.float64) @ OPENCV_TO_GL.T, faces, process=False)
        scene.add_geometry(mesh, node_name=f"person_{i:02d}", geom_name=f"person_{i:02d}")
    if photo is not None:
        quad = trimesh.Trimesh(photo_quad(result.K, result.image_size, depth) @ OPENCV_TO_GL.T,
                               np.array([[0, 3, 2], [0, 2, 1]]), process=False)
        uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
        quad.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(photo))
        scene.add_geometry(quad, node_name="photo", geom_name="photo")
    return _glb_arrays(trimesh.exchange.gltf.export_glb(scene, include_normals=True))


def _glb_arrays(data: bytes) -> dict:
    """{mesh name: {attribute or "indices": array}} read straight from a .glb's accessors."""
    (n,) = struct.unpack_from("<I", data, 12)
    tree = json.loads(data[20:20 + n])
    blob = data[20 + n + 8:]
    kinds = {5126: np.float32, 5125: np.uint32}
    widths = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}

    def read(i):
        acc = tree["accessors"][i]
        view = tree["bufferViews"][acc["bufferView"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        a = np.frombuffer(blob, kinds[acc["componentType"]], acc["count"] * widths[acc["type"]], start)
        return a.reshape(acc["count"], -1).copy()

    out = {}
    for mesh in tree["meshes"]:
        (prim,) = mesh["primitives"]
        out[mesh["name"]] = {k: read(v) for k, v in prim["attributes"].items()} | {"indices": read(prim["indices"])}
    return out


def test_glb_writer_reproduces_trimesh_export_on_smpl_meshes(tmp_path):
    """The numpy writer against trimesh's export of the same scene, on SMPL-sized meshes (6890 vertices,
    13776 faces; one face degenerate): same indices, positions, normals to float32 rounding (1e-6), except
    that vertices in no face get a unit normal toward the camera where trimesh writes (0, 0, 0)."""
    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays
    from dpmesh_infer.writers.glb import glb_bytes_from

    smpl = make_synthetic_smpl_arrays()
    faces = np.asarray(smpl["f"], np.int64)
    rng = np.random.default_rng(0)
    persons = []
    for k in range(3):
        v = smpl["v_template"] + rng.normal(0, 0.004, smpl["v_template"].shape) + [0.8 * k - 0.8, 0.2, 4.0 + k]
        persons.append(_person(v))
    degenerate = faces[5]
    persons[1].vertices[degenerate[1]] = persons[1].vertices[degenerate[0]]  # a zero-area face
    result = ImageResult(persons, K.copy(), (W, H), source="crowd.jpg")
    photo = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    for with_photo in (False, True):
        data = glb_bytes_from(result, faces, photo=photo if with_photo else None, photo_depth=9.0)
        ours = _glb_arrays(data)
        ref = _trimesh_reference(result, faces, photo if with_photo else None, 9.0)
        lone = np.setdiff1d(np.arange(len(smpl["v_template"])), faces)
        assert len(lone) and not np.abs(ref["person_00"]["NORMAL"][lone]).any()  # the stand-in has some
        for name in ("person_00", "person_01", "person_02"):
            np.testing.assert_array_equal(ours[name]["NORMAL"][lone], np.tile([0, 0, 1], (len(lone), 1)))
            ref[name]["NORMAL"][lone] = (0, 0, 1)
        assert set(ours) == set(ref)
        for name, arrays in ref.items():
            assert set(ours[name]) == set(arrays), name
            np.testing.assert_array_equal(ours[name]["indices"], arrays["indices"])
            for key in set(arrays) - {"indices"}:
                np.testing.assert_allclose(ours[name][key], arrays[key], atol=1e-6, rtol=0, err_msg=f"{name} {key}")
        path = tmp_path / f"smpl_{with_photo}.glb"
        path.write_bytes(data)
        issues = validate(path)
        assert (issues["numErrors"], issues["numWarnings"]) == (0, 0), issues["messages"]


def test_photo_quad_and_cli_option_values(tmp_path):
    result, faces = closed_bodies()
    photo = np.zeros((H, W, 3), np.uint8)
    photo[: H // 2] = (250, 10, 10)
    photo[H // 2:] = (10, 10, 250)
    path = save_result(result, faces, tmp_path / "s.glb", photo=photo, photo_depth=9.0)
    tree = glb_json(path)
    (mat,) = [m for m in tree["materials"] if m["name"] == "photo"]
    assert "KHR_materials_unlit" in mat["extensions"] and "KHR_materials_unlit" in tree["extensionsUsed"]
    assert tree["asset"]["extras"]["dpmesh"]["photo_depth_m"] == 9.0
    (img,) = tree["images"]
    assert img["mimeType"] == "image/jpeg"
    import trimesh

    quad = trimesh.load(path).geometry["photo"]
    assert np.allclose(quad.vertices[:, 2], -9.0)  # glTF frame: 9 m in front of the camera
    x = (np.array([-0.5, W - 0.5]) - W / 2) / 300.0 * 9.0
    np.testing.assert_allclose(sorted(set(np.round(quad.vertices[:, 0], 6))), np.round(x, 6))
    auto = glb_json(save_mesh(result, faces, tmp_path / "auto.glb", photo=photo))
    far = max(float(np.asarray(p.vertices)[:, 2].max()) for p in result.persons)
    assert auto["asset"]["extras"]["dpmesh"]["photo_depth_m"] == pytest.approx(far + 1.0)
    from dpmesh_infer.errors import InputError

    with pytest.raises(InputError, match="photo is 10x10"):
        save_mesh(result, faces, tmp_path / "x.glb", photo=np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(InputError, match="depth must be > 0"):
        save_mesh(result, faces, tmp_path / "x.glb", photo=photo, photo_depth=-1.0)


# ------------------------------------------------------------------------------------------ rendering

@pytest.fixture(scope="module")
def renderer():
    from dpmesh_infer.errors import RenderError
    from dpmesh_infer.render import Renderer

    try:
        r = Renderer()
    except RenderError as e:
        pytest.skip(f"no headless renderer: {e}")
    yield r
    r.close()


def render_glb_with_its_camera(renderer, path: Path, size=(W, H)):
    """Render a .glb with pyrender, every mesh at its node's transform, through the file's own camera
    (yfov, aspectRatio, znear, zfar as written; the camera node's pose). Returns (color, depth)."""
    import trimesh

    pyrender = renderer._pyrender
    tree = glb_json(path)
    (cam_node,) = [n for n in tree["nodes"] if "camera" in n]
    persp = tree["cameras"][cam_node["camera"]]["perspective"]
    pose = np.asarray(cam_node.get("matrix", np.eye(4).reshape(-1)), float).reshape(4, 4).T

    def draw():
        tm = trimesh.load(path)
        scene = pyrender.Scene(bg_color=[0, 0, 0, 0], ambient_light=(0.3, 0.3, 0.3))
        for node in tm.graph.nodes_geometry:
            transform, geom = tm.graph[node]
            scene.add(pyrender.Mesh.from_trimesh(tm.geometry[geom]), pose=transform)
        scene.add(pyrender.PerspectiveCamera(yfov=persp["yfov"], aspectRatio=persp["aspectRatio"],
                                             znear=persp["znear"], zfar=persp.get("zfar")), pose=pose)
        scene.add(pyrender.DirectionalLight(color=np.ones(3), intensity=2.0), pose=np.eye(4))
        r = renderer._r  # the renderer's own offscreen context (a second EGL context would unbind it)
        r.viewport_width, r.viewport_height = size
        return r.render(scene)

    return renderer._pool.submit(draw).result()  # on the renderer's GL thread


def iou(a, b):
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_glb_camera_reproduces_the_overlay_framing(renderer, tmp_path):
    """Done-when check: scene.glb rendered with its own camera covers the overlay's people (IoU >= 0.9)."""
    from PIL import Image

    from dpmesh_infer.batch import write_image_outputs

    result, faces = closed_bodies()
    black = np.zeros((H, W, 3), np.uint8)
    write_image_outputs(result, faces, tmp_path / "img", image=black, renderer=renderer)  # the folder-run writer
    overlay = np.asarray(Image.open(tmp_path / "img" / "overlay.png"))
    overlay_sil = overlay.max(axis=2) > 0
    _, depth = render_glb_with_its_camera(renderer, tmp_path / "img" / "scene.glb")
    glb_sil = depth > 0
    assert overlay_sil.mean() > 0.08  # the bodies fill a good part of the frame
    print("IoU scene.glb vs overlay.png:", iou(overlay_sil, glb_sil))
    assert iou(overlay_sil, glb_sil) >= 0.9, iou(overlay_sil, glb_sil)

    # an off-centre principal point: glTF cannot express it; the view is the photo's shifted by the offset
    shifted = ImageResult(result.persons, K + [[0, 0, 24.0], [0, 0, -16.0], [0, 0, 0]], (W, H))
    out = save_mesh(shifted, faces, tmp_path / "off.glb")
    assert glb_json(out)["cameras"][0]["extras"]["principal_point_offset_px"] == [24.5, -15.5]
    truth = renderer.overlay(black, shifted, faces).max(axis=2) > 0
    _, depth = render_glb_with_its_camera(renderer, out)
    moved = np.roll(depth > 0, (-16, 24), axis=(0, 1))  # back by the offset (rounded)
    assert iou(truth, moved) >= 0.9 > iou(truth, depth > 0) + 0.02


def test_photo_quad_fills_the_view_behind_the_people(renderer, tmp_path):
    result, faces = closed_bodies()
    photo = np.zeros((H, W, 3), np.uint8)
    photo[: H // 2] = (250, 10, 10)
    photo[H // 2:] = (10, 10, 250)
    path = save_mesh(result, faces, tmp_path / "p.glb", photo=photo)
    color, depth = render_glb_with_its_camera(renderer, path)
    # the quad covers the whole view (pyrender's raster is a pixel off the OpenCV convention in y: render.py)
    assert (depth[1:-1, 1:-1] > 0).all() and (depth > 0).mean() > 0.99
    people = render_glb_with_its_camera(renderer, save_mesh(result, faces, tmp_path / "n.glb"))[1] > 0
    photo_depth = glb_json(path)["asset"]["extras"]["dpmesh"]["photo_depth_m"]
    assert depth[people].max() < photo_depth - 0.5  # the people are drawn in front of the photo
    bg = ~people
    top, bottom = color[: H // 2][bg[: H // 2]].astype(int), color[H // 2:][bg[H // 2:]].astype(int)
    assert (top[:, 0] > top[:, 2]).mean() > 0.95 and (bottom[:, 2] > bottom[:, 0]).mean() > 0.95  # upright


def test_predict_glb_photo_option(tiny_weights, scene, tmp_path):
    import trimesh
    from PIL import Image
    from typer.testing import CliRunner

    from dpmesh_infer.cli import app

    image, kp = scene
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(image).save(photos / "a.png")
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps([{"keypoints": k.reshape(-1).tolist(), "score": 0.9} for k in kp]))

    def run(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    r = run("predict", photos, "-k", kp_file, "-w", tiny_weights, "-o", tmp_path / "out", "--glb-photo-depth", "30",
            "-q")
    assert r.exit_code == 0, r.output
    glb = tmp_path / "out" / "a" / "scene.glb"
    assert set(trimesh.load(glb).geometry) == {"person_00", "person_01", "photo"}
    assert glb_json(glb)["asset"]["extras"]["dpmesh"]["photo_depth_m"] == 30.0
    r = run("predict", photos / "a.png", "-k", kp_file, "-w", tiny_weights, "-o", tmp_path / "a.glb", "--glb-photo")
    assert r.exit_code == 0, r.output
    assert "photo" in trimesh.load(tmp_path / "a.glb").geometry
    r = run("predict", photos / "a.png", "-k", kp_file, "-w", tiny_weights, "-o", tmp_path / "a.obj", "--glb-photo")
    assert r.exit_code == 2 and "--glb-photo puts the photo into a .glb file" in r.output
    r = run("predict", photos / "a.png", "-k", kp_file, "-w", tiny_weights, "-o", tmp_path / "b.glb",
            "--glb-photo-depth", "-2")
    assert r.exit_code == 2 and "--glb-photo-depth must be a positive" in r.output


def test_template_path_writes_the_bytes_pygltflib_writes(tmp_path):
    """GlbWriter fills a per-person-count template (bounds, camera, extras, binary chunk): the bytes are
    those of the whole document built and serialised by pygltflib, for 0..4 persons, templates reused
    across images with other vertices, cameras and sources (absent, empty, a path)."""
    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays
    from dpmesh_infer.writers.glb import GlbWriter

    smpl = make_synthetic_smpl_arrays()
    faces = np.asarray(smpl["f"], np.int64)
    writer = GlbWriter(faces)
    rng = np.random.default_rng(3)
    for n in (0, 1, 4, 1, 4, 0):
        persons = [_person(smpl["v_template"] + rng.normal(0, 0.01, smpl["v_template"].shape)
                           + [rng.uniform(-2, 2), 0.2, rng.uniform(2, 40)]) for _ in range(n)]
        for source in ("crowd/a.jpg", None, ""):
            k = K.copy()
            k[0, 0] += rng.uniform(-100, 100)
            result = ImageResult(persons, k, (W, H), source=source)
            data = writer(result)
            assert data == writer.build(result), (n, source)
        path = tmp_path / f"n{n}.glb"
        path.write_bytes(data)
        issues = validate(path)
        assert (issues["numErrors"], issues["numWarnings"]) == (0, 0), issues["messages"]
        assert len(glb_json(path).get("meshes", [])) == n
    assert sorted(writer._templates) == [(0, 0), (1, len(smpl["v_template"])), (4, len(smpl["v_template"]))]


def test_vertex_normals_equal_trimesh_on_smpl_meshes():
    """VertexNormals (compiled corner sums, fixed topology) against trimesh's angle-weighted normals; the
    float32 output is the float64 one rounded, and lone vertices get the fallback."""
    import trimesh

    from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays
    from dpmesh_infer.writers.glb import VertexNormals

    smpl = make_synthetic_smpl_arrays()
    faces = np.asarray(smpl["f"], np.int64)
    rng = np.random.default_rng(0)
    meshes = smpl["v_template"] + rng.normal(0, 0.004, (3, *smpl["v_template"].shape)) + [0.1, 0.2, 4.0]
    meshes[1, faces[7, 1]] = meshes[1, faces[7, 0]]  # a zero-area face
    normals = VertexNormals(faces, meshes.shape[1])
    ours = normals(meshes.astype(np.float32))
    assert ours.shape == meshes.shape and ours.dtype == np.float64
    for mine, v in zip(ours, meshes.astype(np.float32)):
        ref = trimesh.Trimesh(np.asarray(v, np.float64), faces, process=False).vertex_normals
        np.testing.assert_allclose(mine, ref, atol=1e-12, rtol=0)
    np.testing.assert_array_equal(normals(meshes[0].astype(np.float32)), ours[0])  # (V, 3) alone
    rounded = normals(meshes.astype(np.float32), dtype=np.float32)
    assert rounded.dtype == np.float32
    np.testing.assert_array_equal(rounded, ours.astype(np.float32))
    lone = VertexNormals(faces[faces.max(1) < 6000], meshes.shape[1])  # vertices 6000.. in no face
    unit = lone(meshes[2].astype(np.float32), fallback=(0.0, 0.0, 1.0))
    np.testing.assert_array_equal(unit[6000:], np.tile([0.0, 0.0, 1.0], (meshes.shape[1] - 6000, 1)))
    assert not lone(meshes[2])[6000:].any()
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="vertices"):
        normals(meshes[:, :10])
