"""Skinned SMPL meshes in glTF 2.0 (binary .glb), written with pygltflib: one armature per person,
animated over a video (``scene.glb`` of a video run) or posed once (``dpmesh predict photo.jpg --out
pose.glb --rig``).

Per person ("rig"):

* a node ``track_NN`` (``person_NN`` for a photo) holding the skeleton: 24 joint nodes named as SMPL's
  joints (Pelvis, L_Hip, ...) in SMPL's kinematic tree; each joint's rest translation is its offset
  from its parent in SMPL's rest pose for the person's shape, ``J = J_regressor @ (v_template +
  shapedirs @ betas)`` (metres);
* a skinned mesh (node ``track_NN_mesh``, at the scene root as glTF recommends) in that rest pose, the
  SMPL template for the person's betas, with SMPL's skin weights (as many JOINTS_n/WEIGHTS_n sets as the
  weights need), vertex normals and a colour per person; the inverse bind matrices are ``T(-J_j)``;
* the pose: joint rotations = SMPL's parent-relative rotations; the Pelvis node carries the root:
  rotation ``Rx(180°) · R(global_orient)`` and translation ``Rx(180°) · (J_0 + transl)``, which puts the
  body into the glTF camera frame (OpenCV y and z negated, as ``scene.glb`` of photos), so the rest pose
  stands upright at the origin and the posed bodies sit in front of the camera.

Video: one animation ``video`` with, per track, a LINEAR rotation channel per joint (unit quaternions,
sign-continuous over time, so Blender's per-component interpolation takes the short way) and the Pelvis
translation, keyed at the samples' times (seconds from the first sample: the video's frame rate is kept),
plus a STEP scale channel on the track node that hides the person (scale 0) before the track starts and
after it ends. Node poses without the animation are the track's first sample.

Camera: a perspective camera at the origin looking down -z (the video's camera), the same as scene.glb's
of a photo (:func:`dpmesh_infer.writers.glb.glb_camera`: ``yfov = 2 atan(H / 2 fy)``, ``aspectRatio =
(W / fx) / (H / fy)``, K, the size and the principal-point offset in its ``extras``; glTF cameras have no
principal point). The frame rate, K and the image size are also in the scene's ``extras``.

What glTF cannot hold: SMPL's pose-corrective blend shapes (pose-dependent vertex offsets). The skinned
mesh is linear blend skinning of the SMPL skeleton and weights; it differs from SMPL's own vertices by
those offsets (millimetres to a few centimetres at strongly bent joints).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.camera import OPENCV_TO_GL
from ..writers.glb import GlbBuffer, glb_camera, vertex_normals

#: SMPL's 24 joint names (kinematic order).
SMPL_JOINT_NAMES = (
    "Pelvis", "L_Hip", "R_Hip", "Spine1", "L_Knee", "R_Knee", "Spine2", "L_Ankle", "R_Ankle", "Spine3",
    "L_Foot", "R_Foot", "Neck", "L_Collar", "R_Collar", "Head", "L_Shoulder", "R_Shoulder", "L_Elbow",
    "R_Elbow", "L_Wrist", "R_Wrist", "L_Hand", "R_Hand",
)  # fmt: skip
#: OpenCV camera frame -> glTF camera frame: 180 degrees about x (a rotation, det +1).
FLIP = OPENCV_TO_GL
_FLIP_QUAT = np.array([1.0, 0.0, 0.0, 0.0])  # (x, y, z, w)


@dataclass
class Rig:
    """One person to export: SMPL parameters over T poses (T = 1 for a photo).

    Attributes:
        name: node name prefix (``track_03``, ``person_00``).
        betas: (10,) shape of the rest mesh.
        global_orient: (T, 3) axis-angle, OpenCV camera frame.
        body_pose: (T, 23, 3) axis-angle, parent-relative.
        transl: (T, 3) metres, SMPL translation for ``betas``.
        times: (T,) seconds of each pose on the animation timeline (ignored for a single pose).
        color: (3,) RGB in [0, 1].
        extras: JSON-ready dict stored on the rig's node (e.g. the track id).
    """

    name: str
    betas: np.ndarray
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray
    times: np.ndarray
    color: np.ndarray
    extras: dict | None = None


def rest_shape(smpl_arrays, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (6890, 3), joints (24, 3)) of SMPL's rest pose for ``betas`` (10,), metres, SMPL frame."""
    v = np.asarray(smpl_arrays["v_template"], np.float64) + np.einsum(
        "vcb,b->vc", np.asarray(smpl_arrays["shapedirs"], np.float64)[:, :, :10], np.asarray(betas, np.float64))
    j = np.asarray(smpl_arrays["J_regressor"], np.float64) @ v
    return v, j


def smpl_parents(smpl_arrays) -> np.ndarray:
    """(24,) parent index of each SMPL joint (-1 for the root), from ``kintree_table``."""
    par = np.asarray(smpl_arrays["kintree_table"], np.int64)[0].copy()
    par[0] = -1
    return par


def _quats(rotvec: np.ndarray) -> np.ndarray:
    """(T, 3) axis-angle -> (T, 4) unit quaternions (x, y, z, w), sign-continuous over T."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_rotvec(np.asarray(rotvec, np.float64)).as_quat()
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def root_pose(global_orient: np.ndarray, transl: np.ndarray, j0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Pelvis node's (T, 4) rotation (x, y, z, w) and (T, 3) translation in the glTF camera frame."""
    from scipy.spatial.transform import Rotation

    r = Rotation.from_quat(_FLIP_QUAT) * Rotation.from_rotvec(np.asarray(global_orient, np.float64))
    q = r.as_quat()
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    t = (np.asarray(transl, np.float64) + j0) @ FLIP.T
    return q, t


def _skin_sets(weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """SMPL weights (V, 24) -> [(JOINTS_n (V, 4) uint8, WEIGHTS_n (V, 4) float32)], enough sets for
    every non-zero weight; weights renormalised to sum to 1; unused slots are joint 0 with weight 0."""
    w = np.asarray(weights, np.float64)
    w = np.where(w > 1e-7, w, 0.0)
    n_used = int((w > 0).sum(1).max())
    n_sets = max(1, -(-n_used // 4))
    order = np.argsort(-w, axis=1, kind="stable")[:, : 4 * n_sets]
    vals = np.take_along_axis(w, order, axis=1)
    vals = vals / vals.sum(1, keepdims=True)
    joints = np.where(vals > 0, order, 0)
    vals32 = vals.astype(np.float32)
    # float32 rounding: put the remainder on the largest weight so each vertex sums to 1 in float32
    vals32[:, 0] += (1.0 - vals32.sum(1, dtype=np.float64)).astype(np.float32)
    return [(joints[:, 4 * s:4 * s + 4].astype(np.uint8), vals32[:, 4 * s:4 * s + 4]) for s in range(n_sets)]


def build_rig_glb(rigs: list[Rig], smpl_arrays, faces: np.ndarray, *, K: np.ndarray, image_size: tuple[int, int],
                  animate: bool, timeline_end: float | None = None, extras: dict | None = None) -> bytes:
    """The GLB bytes for ``rigs`` (module docstring).

    Args:
        rigs: the people; with ``animate`` each has T >= 1 poses at ``times`` (seconds, increasing).
        smpl_arrays: ``SMPLBody.arrays`` (v_template, shapedirs, J_regressor, weights, kintree_table).
        faces: (F, 3) triangles.
        K: (3, 3) intrinsics (pixels); image_size: (width, height).
        animate: write the animation (video) or only the first pose (photo).
        timeline_end: time (seconds) after the last sample (the hide key of tracks that last to the end).
        extras: JSON-ready dict for the scene's extras.
    """
    import pygltflib as g

    gltf = g.GLTF2(asset=g.Asset(generator="dpmesh_infer", version="2.0"))
    buf = GlbBuffer(gltf)
    gltf.scenes = [g.Scene(name="dpmesh", nodes=[], extras=extras or {})]
    roots = gltf.scenes[0].nodes
    w, h = int(image_size[0]), int(image_size[1])
    gltf.cameras.append(glb_camera(K, (w, h), zfar=1000.0, name="video_camera"))
    gltf.nodes.append(g.Node(name="camera", camera=0))
    roots.append(0)

    faces_u32 = np.asarray(faces, np.uint32).reshape(-1)
    face_acc = buf.accessor(faces_u32, "SCALAR", component=g.UNSIGNED_INT, target=g.ELEMENT_ARRAY_BUFFER)
    skin_sets = _skin_sets(smpl_arrays["weights"])
    joint_accs = [(buf.accessor(j, "VEC4", component=g.UNSIGNED_BYTE, target=g.ARRAY_BUFFER),
                   buf.accessor(wt, "VEC4", component=g.FLOAT, target=g.ARRAY_BUFFER)) for j, wt in skin_sets]
    parents = smpl_parents(smpl_arrays)
    animation = g.Animation(name="video", channels=[], samplers=[]) if animate else None

    for rig in rigs:
        v_rest, j_rest = rest_shape(smpl_arrays, rig.betas)
        go = np.asarray(rig.global_orient, np.float64).reshape(-1, 3)
        bp = np.asarray(rig.body_pose, np.float64).reshape(len(go), 23, 3)
        q_root, t_root = root_pose(go, np.asarray(rig.transl, np.float64).reshape(-1, 3), j_rest[0])
        q_joints = [q_root] + [_quats(bp[:, j - 1]) for j in range(1, 24)]

        rig_node = len(gltf.nodes)
        gltf.nodes.append(g.Node(name=rig.name, children=[], extras=rig.extras or {}))
        roots.append(rig_node)
        joint_nodes = []
        for j in range(24):
            node = g.Node(name=SMPL_JOINT_NAMES[j], children=[])
            if j == 0:
                node.translation = t_root[0].tolist()
            else:
                node.translation = (j_rest[j] - j_rest[parents[j]]).tolist()
            node.rotation = q_joints[j][0].tolist()
            joint_nodes.append(len(gltf.nodes))
            gltf.nodes.append(node)
            parent_node = rig_node if j == 0 else joint_nodes[parents[j]]
            gltf.nodes[parent_node].children.append(joint_nodes[j])

        ibm = np.tile(np.eye(4), (24, 1, 1))
        ibm[:, :3, 3] = -j_rest
        ibm_acc = buf.accessor(ibm.transpose(0, 2, 1).astype(np.float32).reshape(24, 16), "MAT4",
                               component=g.FLOAT)  # column-major
        gltf.skins.append(g.Skin(name=f"{rig.name}_skin", joints=joint_nodes, skeleton=joint_nodes[0],
                                 inverseBindMatrices=ibm_acc))

        normals = vertex_normals(v_rest, faces, fallback=(0.0, 1.0, 0.0))  # lone vertices: up
        attrs = g.Attributes(
            POSITION=buf.accessor(v_rest.astype(np.float32), "VEC3", component=g.FLOAT, target=g.ARRAY_BUFFER,
                                  minmax=True),
            NORMAL=buf.accessor(normals.astype(np.float32), "VEC3", component=g.FLOAT, target=g.ARRAY_BUFFER))
        for s, (ja, wa) in enumerate(joint_accs):
            setattr(attrs, f"JOINTS_{s}", ja)
            setattr(attrs, f"WEIGHTS_{s}", wa)
        gltf.materials.append(g.Material(name=f"{rig.name}_material", doubleSided=False,
                                         pbrMetallicRoughness=g.PbrMetallicRoughness(
                                             baseColorFactor=[*map(float, rig.color), 1.0], metallicFactor=0.0,
                                             roughnessFactor=0.7)))
        gltf.meshes.append(g.Mesh(name=f"{rig.name}_body", primitives=[g.Primitive(
            attributes=attrs, indices=face_acc, material=len(gltf.materials) - 1, mode=g.TRIANGLES)]))
        mesh_node = len(gltf.nodes)
        gltf.nodes.append(g.Node(name=f"{rig.name}_mesh", mesh=len(gltf.meshes) - 1, skin=len(gltf.skins) - 1))
        roots.append(mesh_node)

        if animation is not None:
            times = np.asarray(rig.times, np.float64)
            t_acc = buf.accessor(times.astype(np.float32), "SCALAR", component=g.FLOAT, minmax=True)

            def channel(node: int, path: str, values: np.ndarray, interp: str = "LINEAR", t: int = t_acc) -> None:
                out = buf.accessor(values.astype(np.float32), {3: "VEC3", 4: "VEC4"}[values.shape[1]],
                                   component=g.FLOAT)
                animation.samplers.append(g.AnimationSampler(input=t, output=out, interpolation=interp))
                animation.channels.append(g.AnimationChannel(
                    sampler=len(animation.samplers) - 1, target=g.AnimationChannelTarget(node=node, path=path)))

            channel(joint_nodes[0], "translation", t_root)
            for j in range(24):
                channel(joint_nodes[j], "rotation", q_joints[j])
            # visibility: scale 0 before the first and after the last sample of the track (STEP)
            keys, scales = [], []
            if times[0] > 1e-6:
                keys.append(0.0)
                scales.append(0.0)
            keys.append(float(times[0]))
            scales.append(1.0)
            end = timeline_end if timeline_end is not None else float(times[-1])
            after = rig.extras.get("hide_after") if rig.extras else None
            if after is not None and after < end - 1e-6:
                keys.append(float(after))
                scales.append(0.0)
            vis_t = buf.accessor(np.asarray(keys, np.float32), "SCALAR", component=g.FLOAT, minmax=True)
            channel(rig_node, "scale", np.repeat(np.asarray(scales)[:, None], 3, axis=1), "STEP", vis_t)
            if times[0] > 1e-6:
                gltf.nodes[rig_node].scale = [0.0, 0.0, 0.0]

    if animation is not None and animation.channels:
        gltf.animations.append(animation)
    return buf.finish()


def rigs_for_tracks(ts, colors_for) -> list[Rig]:
    """One :class:`Rig` per track of a :class:`~dpmesh_infer.video.tracks.TrackSet` (smoothed poses, the
    track's fixed shape); ``colors_for(track_id)`` gives each one's RGB."""
    t0 = float(ts.sample_time[0]) if len(ts.sample_time) else 0.0
    dt = 1.0 / ts.fps if ts.fps > 0 else 0.0
    rigs = []
    for t in ts.tracks:
        times = t.times - t0
        rigs.append(Rig(name=f"track_{t.track_id:02d}", betas=t.rig_betas, global_orient=t.smoothed["global_orient"],
                        body_pose=t.smoothed["body_pose"], transl=t.rig_transl, times=times,
                        color=np.asarray(colors_for(t.track_id)),
                        extras={"track_id": t.track_id, "first_frame": int(t.frames[0]),
                                "last_frame": int(t.frames[-1]), "hide_after": float(times[-1] + dt)}))
    return rigs


def rigs_for_image(result, colors) -> list[Rig]:
    """One posed :class:`Rig` per person of an :class:`~dpmesh_infer.outputs.ImageResult` (``--rig``)."""
    return [Rig(name=f"person_{i:02d}", betas=np.asarray(p.betas, np.float64),
                global_orient=np.asarray(p.global_orient, np.float64)[None],
                body_pose=np.asarray(p.body_pose, np.float64)[None], transl=np.asarray(p.transl, np.float64)[None],
                times=np.zeros(1), color=np.asarray(colors[i]), extras={"person": i})
            for i, p in enumerate(result.persons)]
