"""PNG overlays of a heatmap on a grey image, in radiological display orientation when geometry says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image as PILImage

from medsight.files import atomic_write_with
from medsight.image import Geometry

# the shortest long side of a PNG written for a person: a 2-mm slice (~90 px) or a 112-px tile is unreadable as is
DISPLAY_LONG_SIDE = 512


def display_size(rgb: np.ndarray, min_long_side: int = DISPLAY_LONG_SIDE) -> np.ndarray:
    """An image whose longer side is under ``min_long_side``, enlarged by the smallest whole factor that reaches it,
    nearest neighbour: every pixel becomes a square block, so nothing is invented and label colours stay exact
    (the raw map, for computation, is the .npy written beside the PNG). Larger images come back unchanged."""
    a = np.asarray(rgb)
    long_side = max(a.shape[:2]) if a.ndim >= 2 else 0
    if long_side == 0 or long_side >= min_long_side:
        return a
    f = -(-min_long_side // long_side)
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)


def display_view(a: np.ndarray, geometry: Geometry | None = None) -> np.ndarray:
    """[i, j] array -> rows x columns for display: rows follow j, columns i; flipped so that anterior is up and
    the patient's right is on the viewer's left when the geometry is that of a patient scan."""
    v = np.asarray(a).T
    if geometry is not None and geometry.ndim >= 2:
        d = np.asarray(geometry.direction)
        if d[1][1] < 0:  # j runs towards anterior (LPS y decreasing): put the largest j at the top
            v = v[::-1, :]
        if d[0][0] < 0:  # i runs towards the patient's right: put it on the viewer's left
            v = v[:, ::-1]
    return np.ascontiguousarray(v)


def overlay_rgb(grey: np.ndarray, heat: np.ndarray, alpha: float = 0.45, cmap: str = "viridis") -> np.ndarray:
    """uint8 RGB: the grey image (1st-99th percentile window) blended with the coloured heatmap."""
    g = np.asarray(grey, dtype=np.float32)
    lo, hi = np.percentile(g, [1, 99]) if g.size else (0.0, 1.0)
    g = np.clip((g - lo) / max(float(hi - lo), 1e-6), 0, 1)
    h = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
    colour = colormaps[cmap](h)[..., :3]
    weight = alpha * h[..., None]  # cold regions stay grey
    rgb = (1 - weight) * g[..., None] + weight * colour
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def save_overlay(path: str | Path, grey: np.ndarray, heat: np.ndarray, geometry: Geometry | None = None,
                 alpha: float = 0.45) -> Path:
    """Write a 2D image [i, j] with its heatmap as a display-size PNG (atomically); returns the path."""
    rgb = display_size(overlay_rgb(display_view(grey, geometry), display_view(heat, geometry), alpha))
    atomic_write_with(path, lambda tmp: PILImage.fromarray(rgb).save(tmp, format="PNG"), suffix=".png")
    return Path(path)
