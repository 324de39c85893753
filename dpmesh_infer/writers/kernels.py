"""Compiled loops of the mesh writers (numba, ``nogil``: writer threads run them in parallel), for the two
per-mesh costs that whole-array numpy could not bring down: the OBJ vertex lines and the vertex normals'
corner sums. The normals are the same float64 arithmetic, in the same order, as the numpy code they
replaced (bit-identical); the vertex lines take the digits of the exact integer ``rint(|x| 10^8)`` by
integer division (the same bytes). tests/test_fast_path.py and tests/test_scene_glb.py compare both
with trimesh.

Compiled on first use (about 1 s each), then cached next to this file or in numba's user cache directory
(about 0.5 s of CPU per process to load, most of it numba's first dispatch); where no cache directory is
writable they are compiled per process.
Arguments are C-contiguous float64 / int64 arrays (one compiled signature each).
"""

from __future__ import annotations

import numpy as np

from .obj import MAX_COORDINATE

#: rint(|x| 10^8) of the largest coordinate formatted exactly (a compile-time constant of the loop).
_MAX_SCALED = MAX_COORDINATE * 1e8


def _jit(fn):
    import numba

    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location ("no locator available"): compile per process
        return numba.njit(nogil=True)(fn)


#: Bytes of the longest OBJ vertex line :func:`vertex_lines` writes: ``v`` + 3 x (space, sign, 8 integer
#: digits, point, 8 decimals) + newline (coordinates below 9e7 m).
MAX_VERTEX_LINE = 1 + 3 * 19 + 1


#: "0000".."9999": (10000, 4) ASCII digits, the decimals go four at a time
QUADS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), np.uint8).reshape(10_000, 4).copy()


def _vertex_lines(x: np.ndarray, out: np.ndarray, quads: np.ndarray) -> int:
    """``v x y z`` lines of (V, 3) float64 ``x`` into ``out`` (uint8, at least V * MAX_VERTEX_LINE bytes),
    each number as ``'{:.8f}'.format`` writes a float32-representable value: ``rint(|x| 10^8)`` is the
    correctly rounded 8-decimal integer (round half to even, as Python), below 2^53, so it is exact as an
    integer and its integer part and decimals come out of integer division. ``quads``: :data:`QUADS`.
    Returns the byte count, -1 for a NaN or infinite value, -2 for a value of MAX_COORDINATE or more."""
    n = 0
    for i in range(x.shape[0]):
        out[n] = 118  # "v"
        n += 1
        for k in range(3):
            value = x[i, k]
            if not np.isfinite(value):
                return -1
            scaled = np.rint(np.abs(value) * 1e8)
            if scaled >= _MAX_SCALED:
                return -2
            whole = np.uint64(scaled)
            integer = whole // np.uint64(100_000_000)
            decimals = whole - integer * np.uint64(100_000_000)
            hi = np.intp(decimals // np.uint64(10_000))
            lo = np.intp(decimals - np.uint64(hi) * np.uint64(10_000))
            out[n] = 32  # " "
            n += 1
            if np.signbit(value):  # "-0.00000000" too, as Python
                out[n] = 45
                n += 1
            if integer < 10:
                out[n] = 48 + integer
                n += 1
            else:
                width = 1
                rest = integer
                while rest >= 10:
                    rest //= np.uint64(10)
                    width += 1
                for d in range(width - 1, -1, -1):
                    out[n + d] = 48 + integer % np.uint64(10)
                    integer //= np.uint64(10)
                n += width
            out[n] = 46  # "."
            out[n + 1], out[n + 2], out[n + 3], out[n + 4] = quads[hi, 0], quads[hi, 1], quads[hi, 2], quads[hi, 3]
            out[n + 5], out[n + 6], out[n + 7], out[n + 8] = quads[lo, 0], quads[lo, 1], quads[lo, 2], quads[lo, 3]
            n += 9
        out[n] = 10  # "\n"
        n += 1
    return n


def _corner_terms(v: np.ndarray, faces: np.ndarray, cross: np.ndarray, twice_area: np.ndarray,
                  cosines: np.ndarray) -> None:
    """Per face of (V, 3) ``v`` and (F, 3) ``faces``: ``cross`` (F, 3) = e01 x e02, ``twice_area`` (F,) =
    |cross| and ``cosines`` (3, F) = |a||b| cos of the corner angles 0, 1, 2 (e01 . e02, -(e01 . e12),
    e02 . e12; e01 = p1 - p0 and so on)."""
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        ax, ay, az = v[b, 0] - v[a, 0], v[b, 1] - v[a, 1], v[b, 2] - v[a, 2]
        bx, by, bz = v[c, 0] - v[a, 0], v[c, 1] - v[a, 1], v[c, 2] - v[a, 2]
        dx, dy, dz = v[c, 0] - v[b, 0], v[c, 1] - v[b, 1], v[c, 2] - v[b, 2]
        cx = ay * bz - az * by
        cy = az * bx - ax * bz
        cz = ax * by - ay * bx
        cross[f, 0], cross[f, 1], cross[f, 2] = cx, cy, cz
        twice_area[f] = np.sqrt(cx * cx + cy * cy + cz * cz)
        cosines[0, f] = ax * bx + ay * by + az * bz
        cosines[1, f] = -(ax * dx + ay * dy + az * dz)
        cosines[2, f] = bx * dx + by * dy + bz * dz


def _corner_sums(faces: np.ndarray, cross: np.ndarray, twice_area: np.ndarray, angles: np.ndarray,
                 fallback: np.ndarray, use_fallback: bool, summed: np.ndarray, out: np.ndarray) -> None:
    """Unit normals ``out`` (V, 3) from :func:`_corner_terms`' arrays and the corner ``angles`` (3, F)
    (overwritten): each vertex sums ``angle / |cross| * cross`` of its corners in corner-major order
    (corner 0 of every face, then corner 1, then 2), faces with a corner angle under 1e-8 rad or zero
    area contributing nothing; a vertex with a zero sum gets ``fallback`` (or 0 without
    ``use_fallback``). ``summed``: (V, 3) scratch."""
    nf = faces.shape[0]
    for f in range(nf):
        t = twice_area[f]
        if min(angles[0, f], angles[1, f], angles[2, f]) < 1e-8 or t == 0.0:
            angles[0, f] = angles[1, f] = angles[2, f] = 0.0
            t = 1.0
        angles[0, f] /= t
        angles[1, f] /= t
        angles[2, f] /= t
    summed[:] = 0.0
    for k in range(3):
        for f in range(nf):
            i = faces[f, k]
            w = angles[k, f]
            summed[i, 0] += w * cross[f, 0]
            summed[i, 1] += w * cross[f, 1]
            summed[i, 2] += w * cross[f, 2]
    for i in range(summed.shape[0]):
        sx, sy, sz = summed[i, 0], summed[i, 1], summed[i, 2]
        length = np.sqrt(sx * sx + sy * sy + sz * sz)
        if length == 0.0:
            if use_fallback:
                out[i, 0], out[i, 1], out[i, 2] = fallback[0], fallback[1], fallback[2]
            else:
                out[i, 0] = out[i, 1] = out[i, 2] = 0.0
        else:
            out[i, 0], out[i, 1], out[i, 2] = sx / length, sy / length, sz / length


vertex_lines = _jit(_vertex_lines)
corner_terms = _jit(_corner_terms)
corner_sums = _jit(_corner_sums)


def warm_up() -> None:
    """Compile (or load from the cache) every loop here on a one-triangle mesh: about 0.5 s of CPU once per
    process, which folder runs spend on their commit thread while the first chunk is computed."""
    x = np.zeros((3, 3))
    faces = np.array([[0, 1, 2]], np.int64)
    vertex_lines(x, np.empty(3 * MAX_VERTEX_LINE, np.uint8), QUADS)
    cross, twice_area, cosines = np.empty((1, 3)), np.empty(1), np.empty((3, 1))
    corner_terms(x, faces, cross, twice_area, cosines)
    corner_sums(faces, cross, twice_area, np.zeros((3, 1)), np.zeros(3), True, np.empty((3, 3)), np.empty((3, 3)))
