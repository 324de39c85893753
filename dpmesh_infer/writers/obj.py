"""A fast Wavefront OBJ writer, byte-identical to trimesh, with no per-vertex Python.

Folder runs write one ``person_NN.obj`` per person; trimesh's exporter formats every number in Python
(about 30 ms per 6890-vertex mesh on a 2-core CPU), which made writing the slowest stage of a GPU run.
This writer produces the *same bytes* as ``trimesh.Trimesh(vertices, faces, process=False).export("obj")``
(trimesh 4.x: a ``# https://github.com/mikedh/trimesh`` header, ``v x y z`` lines at 8 decimals,
``f a b c`` 1-based lines, a final empty line):

- the vertex lines come from one compiled pass (:func:`dpmesh_infer.writers.kernels.vertex_lines`,
  ~0.1 ms per SMPL mesh): a float32 value (what the pipeline stores) times 10^8 is exact in float64, so
  ``rint`` of it is the correctly rounded 8-decimal value, as ``'{:.8f}'.format`` gives (round half to
  even), an integer whose digits come out of integer division;
- the face block depends only on the faces, which all SMPL meshes share: it is formatted once per run
  (:class:`ObjWriter` caches it) with whole-array integer arithmetic.

The compiled pass releases the GIL, so several writer threads format in parallel.
"""

from __future__ import annotations

import numpy as np

HEADER = b"# https://github.com/mikedh/trimesh\n"


#: "00".."99" as uint16 (two ASCII digits): face indices go two at a time
_PAIRS16 = np.frombuffer(b"".join(b"%02d" % i for i in range(100)), dtype=np.uint16)


def _right_digits(out: np.ndarray, out16: np.ndarray, values: np.ndarray, end: int, ndigits: int) -> None:
    """Write ``values`` (non-negative int64) as ``ndigits`` decimal digits ending before column ``end`` of
    ``out`` (``end`` even: pairs are written through the uint16 view ``out16``); leading zeros become NUL,
    the last digit is always written."""
    rest = values
    col = end
    while ndigits >= 2:
        rest, pair = np.divmod(rest, 100)
        out16[:, (col - 2) // 2] = _PAIRS16[pair]
        col -= 2
        ndigits -= 2
    if ndigits:
        out[:, col - 1] = rest % 10 + ord("0")
        col -= 1
    width = end - col
    leading = values[:, None] < (10 ** np.arange(width - 1, 0, -1, dtype=np.int64))[None, :]
    out[:, col:end - 1][leading] = 0


#: Largest |coordinate| the float arithmetic below formats exactly (rint(|x| 10^8) < 2^53), metres.
MAX_COORDINATE = 9e7


def vertex_block(vertices: np.ndarray) -> np.ndarray:
    """``v x y z`` lines of (V, 3) vertices (metres), each number as ``'{:.8f}'.format`` writes it, as a
    uint8 array (bytes-like: a view of the buffer the lines were written into).

    Exact for float32-representable values below :data:`MAX_COORDINATE`: ``rint(|x| * 10^8)`` in float64
    is the correctly rounded 8-decimal value (round half to even, as Python's formatting), an integer
    below 2^53, whose integer part and decimals come out of integer division. One compiled pass
    (:func:`dpmesh_infer.writers.kernels.vertex_lines`) writes the lines into a buffer of the longest
    possible length.
    """
    from .kernels import MAX_VERTEX_LINE, QUADS, vertex_lines

    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {v.shape}")
    out = np.empty(len(v) * MAX_VERTEX_LINE, np.uint8)
    n = vertex_lines(np.ascontiguousarray(v, np.float64), out, QUADS)
    if n == -1:
        raise ValueError("cannot write NaN or infinite coordinates to an OBJ file")
    if n == -2:
        raise ValueError(f"cannot write coordinates of {MAX_COORDINATE:g} m or more to an OBJ file")
    return out[:n]


def _int_digits(values: np.ndarray, width: int) -> np.ndarray:
    """(N,) non-negative int64 -> (N, W) uint8 ASCII digits (W = width rounded up to even),
    right-aligned, leading zeros as NUL."""
    out = np.zeros((values.shape[0], width + width % 2), np.uint8)
    _right_digits(out, out.view(np.uint16), values, out.shape[1], width)
    return out


def _lines(prefix: bytes, fields: list[np.ndarray]) -> bytes:
    """Rows ``prefix f0 f1 f2\\n`` from (N, W) NUL-padded fields, as bytes."""
    n = fields[0].shape[0]
    parts = [np.frombuffer(prefix, np.uint8)[None, :].repeat(n, 0)]
    for i, f in enumerate(fields):
        if i:
            parts.append(np.full((n, 1), ord(" "), np.uint8))
        parts.append(f)
    parts.append(np.full((n, 1), ord("\n"), np.uint8))
    return np.concatenate(parts, axis=1).tobytes().translate(None, b"\0")


def face_block(faces: np.ndarray) -> bytes:
    """``f a b c`` lines (1-based vertex indices) of (F, 3) triangles."""
    f = np.asarray(faces, np.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {f.shape}")
    if not len(f):
        return b""
    idx = f + 1
    width = len(str(int(idx.max())))
    cols = _int_digits(idx.reshape(-1), width).reshape(len(f), 3, -1)  # (fields are padded to even widths)
    return _lines(b"f ", [cols[:, 0], cols[:, 1], cols[:, 2]])


class ObjWriter:
    """OBJ bytes of meshes that share one face array (the face block is formatted once)."""

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = np.asarray(faces)
        self._faces = face_block(self.faces)

    def __call__(self, vertices: np.ndarray) -> bytes:
        """The OBJ file of one mesh with these (V, 3) vertices, exactly as trimesh writes it."""
        return b"".join((HEADER, vertex_block(vertices), self._faces, b"\n"))  # one copy
