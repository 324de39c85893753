"""SMPL body model (always fp32) and the 30-joint regressor DPMesh works with.

:class:`SMPLBody` wraps ``smplx.SMPL`` built from our clean ``SMPL_NEUTRAL.npz`` (no pickle; see
:mod:`dpmesh_infer.weights.smpl`): neutral, 10 betas. Its joints are NOT smplx's kinematic joints but
``J30 @ posed vertices`` as in upstream DPMesh (3DCrowdNet/JOTR joint set):

- rows 0-23: SMPL ``J_regressor`` (row 0 = pelvis = the root);
- rows 24-28: one-hot vertices 331 (nose), 2802 (L eye), 6262 (R eye), 3489 (L ear), 3990 (R ear);
- row 29 (head top): row 3 of ``J_regressor_extra.npy`` when the smpl/ folder has it (as upstream),
  otherwise the single vertex :data:`HEAD_TOP_FALLBACK_VERTEX` (411, the top of the SMPL skull).
  :attr:`SMPLBody.head_top_source` says which one is in use.

Parity with upstream: upstream used smplpytorch's ``SMPL_Layer`` (same neutral data). Its LBS and
smplx's are the same computation (pose feature = R - I over joints 1..23, posedirs, joints from
``J_regressor @ v_shaped``, the same kinematic chain and skinning, translation added to every
vertex); they differ only by float rounding (smplpytorch's quaternion Rodrigues). Tested against an
independent float64 implementation of smplpytorch's algorithm in ``tests/test_body.py``.

Frames and units: metres, the camera frame of whatever translation is passed (OpenCV: x right, y down,
z forward for DPMesh cameras). Upstream semantics: ``mesh_cam = LBS(θ, β) + T``; root = joint 0 of
``J30 @ mesh_cam``; root-relative = subtract it (:meth:`SMPLOutput.root_relative`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from typing import Mapping

import numpy as np
import torch
from torch import nn

from ..devices import autocast_off
from ..geometry.joints import J30_NAMES

JOINT_NAMES_30 = J30_NAMES  # the internal 30-joint set (preprocess.J30_NAMES)
NUM_JOINTS_30 = len(J30_NAMES)
ROOT_JOINT = 0
#: Vertices giving joints 24-28 (nose, L eye, R eye, L ear, R ear).
FACE_VERTEX_IDS = (331, 2802, 6262, 3489, 3990)
#: Head-top vertex used when no ``J_regressor_extra.npy`` is available (top of the SMPL skull).
HEAD_TOP_FALLBACK_VERTEX = 411
#: Row of ``J_regressor_extra.npy`` that is the head top (as upstream).
HEAD_TOP_EXTRA_ROW = 3


def build_joint_regressor_30(
    j_regressor: np.ndarray, extra_regressor: np.ndarray | None = None
) -> tuple[np.ndarray, str]:
    """The 30×6890 regressor (float32) and a description of where its head-top row comes from.

    Args:
        j_regressor: SMPL ``J_regressor`` (24, 6890).
        extra_regressor: optional ``J_regressor_extra`` (k ≥ 4, 6890); row 3 is used for the head top.
    """
    n_v = j_regressor.shape[1]
    j30 = np.zeros((NUM_JOINTS_30, n_v), dtype=np.float32)
    j30[:24] = j_regressor
    for row, vid in enumerate(FACE_VERTEX_IDS, start=24):
        j30[row, vid] = 1.0
    if extra_regressor is not None:
        j30[29] = extra_regressor[HEAD_TOP_EXTRA_ROW]
        source = f"J_regressor_extra.npy row {HEAD_TOP_EXTRA_ROW}"
    else:
        j30[29, HEAD_TOP_FALLBACK_VERTEX] = 1.0
        source = f"vertex {HEAD_TOP_FALLBACK_VERTEX} (fallback: no J_regressor_extra.npy)"
    return j30, source


@dataclasses.dataclass
class SMPLOutput:
    """Posed SMPL bodies.

    Attributes:
        vertices: (B, 6890, 3) float32, metres, posed and translated.
        joints: (B, 30, 3) float32, metres: ``J30 @ vertices`` (30-joint set of :data:`JOINT_NAMES_30`).
    """

    vertices: torch.Tensor
    joints: torch.Tensor

    @property
    def root(self) -> torch.Tensor:
        """(B, 3) root joint (pelvis, J_regressor row 0 of the posed mesh), metres."""
        return self.joints[:, ROOT_JOINT]

    def root_relative(self) -> "SMPLOutput":
        """Vertices and joints with the root subtracted (upstream ``smpl_mesh_cam`` / ``joint_cam``)."""
        r = self.root[:, None, :]
        return SMPLOutput(vertices=self.vertices - r, joints=self.joints - r)

    def translated(self, offset: torch.Tensor) -> "SMPLOutput":
        """Both sets moved by ``offset`` (B, 3) metres (a rigid translation)."""
        o = offset[:, None, :].to(self.vertices)
        return SMPLOutput(vertices=self.vertices + o, joints=self.joints + o)


class SMPLBody(nn.Module):
    """SMPL neutral (10 betas) + the 30-joint regressor; always computes in float32.

    Build from the validated arrays of :func:`dpmesh_infer.models.body_io.read_smpl_npz`
    (``SMPLBody(arrays, extra_regressor=...)``), or from a weights directory with
    :func:`dpmesh_infer.weights.smpl.load_smpl`. ``.to(device)`` moves it; dtype casts
    (``.half()``, ``.to(torch.float16)``) are ignored for its buffers so SMPL stays fp32, and
    :meth:`forward` disables autocast and casts its inputs to fp32 (outputs are fp32).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], *, extra_regressor: np.ndarray | None = None):
        super().__init__()
        import smplx
        from smplx.utils import Struct

        data = Struct(**{k: np.asarray(v) for k, v in arrays.items()})
        # smplx prints a notice about 10-beta models on stdout: keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            self.smpl = smplx.SMPL(
                model_path="",
                data_struct=data,
                gender="neutral",
                num_betas=10,
                create_betas=False,
                create_global_orient=False,
                create_body_pose=False,
                create_transl=False,
                dtype=torch.float32,
            )
        j30, self._head_top_source = build_joint_regressor_30(
            np.asarray(arrays["J_regressor"]), extra_regressor
        )
        self.register_buffer("J30", torch.from_numpy(j30), persistent=False)
        self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._extra_regressor = None if extra_regressor is None else np.asarray(extra_regressor)

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The SMPL arrays the body was built from (what ``body_io.write_smpl_npz`` stores)."""
        return self._arrays

    @property
    def extra_regressor(self) -> np.ndarray | None:
        """The ``J_regressor_extra`` (k, 6890) it uses for the head top, or None (vertex fallback)."""
        return self._extra_regressor

    @property
    def head_top_source(self) -> str:
        """Where joint 29 (head top) comes from: the extra regressor's row 3, or the fallback vertex 411."""
        return self._head_top_source

    @property
    def faces(self) -> np.ndarray:
        """(13776, 3) int64 triangle vertex indices."""
        return self.smpl.faces_tensor.detach().cpu().numpy().astype(np.int64)

    @property
    def faces_tensor(self) -> torch.Tensor:
        """(13776, 3) int64 triangles on the module's device."""
        return self.smpl.faces_tensor

    @property
    def device(self) -> torch.device:
        return self.J30.device

    def _apply(self, fn, recurse=True):  # noqa: D401 - torch hook
        """Apply ``fn`` (device moves, dtype casts) then restore fp32 for floating buffers."""
        super()._apply(fn, recurse)
        for module in self.modules():
            for name, buf in module._buffers.items():
                if buf is not None and buf.is_floating_point() and buf.dtype != torch.float32:
                    module._buffers[name] = buf.float()
        return self

    def forward(
        self,
        global_orient: torch.Tensor,
        body_pose: torch.Tensor,
        betas: torch.Tensor,
        transl: torch.Tensor | None = None,
    ) -> SMPLOutput:
        """Pose the body.

        Args:
            global_orient: (B, 3) root rotation, axis-angle (radians).
            body_pose: (B, 23, 3) or (B, 69) axis-angle of SMPL joints 1..23.
            betas: (B, 10) shape coefficients.
            transl: (B, 3) metres added to every vertex (upstream's camera translation T), or None.

        Returns:
            :class:`SMPLOutput` with vertices (B, 6890, 3) and joints (B, 30, 3), float32, metres.
        """
        b = global_orient.shape[0]
        if global_orient.shape != (b, 3):
            raise ValueError(f"global_orient must be (B, 3), got {tuple(global_orient.shape)}")
        if body_pose.shape not in ((b, 23, 3), (b, 69)):
            raise ValueError(
                f"body_pose must be (B, 23, 3) or (B, 69) with B={b}, got {tuple(body_pose.shape)}"
            )
        if betas.shape != (b, 10):
            raise ValueError(f"betas must be (B, 10) with B={b}, got {tuple(betas.shape)}")
        if transl is not None and transl.shape != (b, 3):
            raise ValueError(f"transl must be (B, 3) with B={b}, got {tuple(transl.shape)}")
        dev = self.device
        with autocast_off(dev):
            f32 = dict(device=dev, dtype=torch.float32)
            out = self.smpl(
                global_orient=global_orient.to(**f32),
                body_pose=body_pose.reshape(b, 69).to(**f32),
                betas=betas.to(**f32),
                transl=None if transl is None else transl.to(**f32),
            )
            vertices = out.vertices
            joints = torch.einsum("jv,bvc->bjc", self.J30, vertices)
        return SMPLOutput(vertices=vertices, joints=joints)
