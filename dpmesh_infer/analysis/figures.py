"""PNG pictures of occlusion-sensitivity maps (matplotlib, object API: no pyplot, no global backend).

Each picture is a heat map over an image (the 256×256 crop or the photo) with a colour bar in mm,
returned as PNG bytes (the caller writes them atomically). matplotlib is imported only here.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import DependencyError

COLORMAP = "jet"
ALPHA = 0.5
INSTALL_HINT = ("occlusion maps draw their pictures with matplotlib: pip install 'dpmesh-infer[analysis]' "
                "(or matplotlib)")


def _figure(width_in: float, height_in: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise DependencyError(f"{INSTALL_HINT} ({e})") from e
    return Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _draw(ax, fig, background: np.ndarray, heat: np.ndarray, valid: np.ndarray | None, title: str,
          label: str, vmax: float | None, points: np.ndarray | None = None, box=None) -> None:
    ax.imshow(background)
    shown = np.ma.masked_where(~valid, heat) if valid is not None else heat
    top = float(np.nanmax(heat)) if vmax is None else float(vmax)
    im = ax.imshow(shown, cmap=COLORMAP, alpha=ALPHA, vmin=0.0, vmax=max(top, 1e-6), interpolation="bilinear")
    if points is not None and len(points):
        ax.scatter(points[:, 0], points[:, 1], s=8, c="white", edgecolors="black", linewidths=0.5)
    if box is not None:
        from matplotlib.patches import Rectangle

        x, y, s = box
        ax.add_patch(Rectangle((x, y), s, s, fill=False, edgecolor="white", linewidth=1.0, linestyle="--"))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    bar = fig.colorbar(im, ax=ax, shrink=0.85)
    bar.solids.set_alpha(1.0)  # the bar shows the colour map itself, not the translucent overlay
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def heat_overlay_png(background: np.ndarray, heat: np.ndarray, *, title: str, valid: np.ndarray | None = None,
                     label: str = "mean joint error (mm)", vmax: float | None = None,
                     points: np.ndarray | None = None, box=None, max_width_in: float = 12.0) -> bytes:
    """One heat map over ``background`` (H, W, 3) uint8 as PNG bytes.

    Args:
        heat: (H, W) values (mm); ``valid`` (H, W) bool masks where it is drawn (None = everywhere).
        vmax: top of the colour bar (default: the map's maximum).
        points: optional (K, 2) pixel positions drawn as dots (e.g. the keypoints of the group).
        box: optional (x, y, side) square drawn dashed (the crop box in the photo).
    """
    h, w = background.shape[:2]
    scale = min(max_width_in / (w / 100.0 + 1.5), 1.0) if w > 0 else 1.0
    fig = _figure(max(3.0, (w / 100.0 + 1.5) * scale), max(2.5, (h / 100.0 + 0.5) * scale))
    _draw(fig.add_subplot(1, 1, 1), fig, background, heat, valid, title, label, vmax, points, box)
    return _png(fig)


def summary_png(crop: np.ndarray, maps: dict[str, np.ndarray], *, title: str,
                points: dict[str, np.ndarray] | None = None) -> bytes:
    """All group maps over the (S, S, 3) uint8 crop in one picture (one colour bar each) as PNG bytes."""
    names = list(maps)
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig = _figure(3.4 * cols, 3.0 * rows + 0.4)
    fig.suptitle(title, fontsize=10)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = None if points is None else points.get(name)
        _draw(ax, fig, crop, maps[name], None, name, "mm", None, pts)
    return _png(fig)
