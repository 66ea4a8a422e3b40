"""Lay out evidence panels, labels, colour bar and caption on one figure, and write it as deterministic PNG bytes.

Panels are placed with ``Figure.figimage`` at whole-pixel offsets and never resampled by matplotlib, so a voxel
edge lands exactly where ``display.resample`` put it; the layout (each panel's box in PNG pixels, top-left origin)
is written into the PNG beside the caption, so a program can find every panel without guessing. The same input
gives the same bytes: no date or software version is written, and matplotlib's Agg renderer is deterministic.
"""

from __future__ import annotations

import base64
import io
import json
import textwrap
from dataclasses import dataclass, field

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colorbar import ColorbarBase
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.transforms import IdentityTransform
from PIL import Image as PILImage

from medsight.explain.display import outline

DPI = 100
MARGIN = 26  # room for the orientation letters around a panel
TITLE_H = 22
COLORBAR_W = 170
LINE_H = 17
CAPTION_CHARS = 120
BACKGROUND = "#1a1a1a"  # dark, but not the black of a scan's air, so panel edges show
HEAT_CMAP = "viridis"  # perceptually uniform, readable by colour-blind viewers, and in greyscale print
HEAT_FLOOR = 0.2  # heat below this is fully transparent: only the evidence is coloured
HEAT_FULL = 0.5  # at or above this the colour has its full opacity
HEAT_ALPHA = 0.75
FINDING_COLOUR = (1.0, 0.18, 0.33)  # the model's finding
REFERENCE_COLOUR = (0.0, 0.9, 1.0)  # an annotated (reference) finding, when one is given


@dataclass
class Panel:
    """One row of the figure: display-size tiles side by side, usually the image alone and the image with its
    evidence (``kinds`` names them in the layout), all of one height."""

    title: str
    tiles: list[np.ndarray]  # each (H, W, 3) float in [0, 1]
    kinds: tuple[str, ...] = ("image", "evidence")
    labels: dict[str, str] | None = None  # orientation letters per edge
    notes: list[tuple[str, float, float]] = field(default_factory=list)  # text at (column, row) of the last tile


def grey_rgb(view: np.ndarray, low: float, high: float) -> np.ndarray:
    """A windowed display-size slice as RGB in [0, 1]."""
    g = np.clip((np.asarray(view, dtype=np.float32) - low) / max(high - low, 1e-6), 0, 1)
    return np.repeat(g[..., None], 3, axis=2)


def heat_alpha(heat: np.ndarray) -> np.ndarray:
    """Opacity of the colour: 0 below HEAT_FLOOR, rising to HEAT_ALPHA at HEAT_FULL."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
    return HEAT_ALPHA * np.clip((h - HEAT_FLOOR) / (HEAT_FULL - HEAT_FLOOR), 0, 1)


def with_evidence(rgb: np.ndarray, heat: np.ndarray | None, finding: np.ndarray | None = None,
                  reference: np.ndarray | None = None) -> np.ndarray:
    """The grey RGB with the heat blended in (transparent where low) and the outlines drawn on top."""
    out = np.array(rgb, dtype=np.float32, copy=True)
    if heat is not None:
        h = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
        colour = colormaps[HEAT_CMAP](h)[..., :3].astype(np.float32)
        a = heat_alpha(h)[..., None]
        out = (1 - a) * out + a * colour
    for mask, colour in ((reference, REFERENCE_COLOUR), (finding, FINDING_COLOUR)):
        if mask is not None:
            out[outline(mask)] = colour
    return out


def compose(panels: list[Panel], caption: list[str], heat_meaning: str | None, metadata: dict[str, str]) -> bytes:
    """Rows of tiles, a colour bar beside the first row, the caption below; returns PNG bytes with the caption
    and the layout (every tile's box in PNG pixels, top-left origin) in its text chunks."""
    cell = max(t.shape[1] for p in panels for t in p.tiles) + 2 * MARGIN
    n_cols = max(len(p.tiles) for p in panels)
    lines = [w for line in caption for w in (textwrap.wrap(line, CAPTION_CHARS) or [""])]
    fig_w = n_cols * cell + (COLORBAR_W if heat_meaning else 0)
    fig_h = sum(TITLE_H + p.tiles[0].shape[0] + 2 * MARGIN for p in panels) + LINE_H * len(lines) + MARGIN
    fig = Figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI, facecolor=BACKGROUND)
    FigureCanvasAgg(fig)
    px = IdentityTransform()
    layout: dict[str, object] = {"width": fig_w, "height": fig_h, "panels": []}
    top = 0
    for n, p in enumerate(panels):
        h = p.tiles[0].shape[0]
        fig.text(MARGIN, fig_h - top - TITLE_H + 6, p.title, transform=px, color="white", fontsize=10.5, parse_math=False,
                 va="baseline")
        top += TITLE_H + MARGIN
        for col, rgb in enumerate(p.tiles):
            w = rgb.shape[1]
            left = col * cell + MARGIN + (cell - 2 * MARGIN - w) // 2
            fig.figimage(_to_uint8(rgb), xo=left, yo=fig_h - top - h, origin="upper")
            kind = p.kinds[col] if col < len(p.kinds) else f"tile{col}"
            box = {"row": n, "kind": kind, "left": left, "top": top, "width": w, "height": h, "labels": p.labels or {}}
            if col == len(p.tiles) - 1:
                box["notes"] = [[text, c, r] for text, c, r in p.notes]
            layout["panels"].append(box)
            if p.labels:
                _orientation_letters(fig, p.labels, left, fig_h - top - h, w, h)
            if col == len(p.tiles) - 1:
                for text, c, r in p.notes:
                    fig.text(left + c, fig_h - top - r, text, transform=px, color="white", fontsize=10,
                             weight="bold", ha="left", va="bottom",
                             path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])
        if n == 0 and heat_meaning:
            cax = fig.add_axes((n_cols * cell / fig_w, (fig_h - top - h) / fig_h, 14 / fig_w, h / fig_h))
            bar = ColorbarBase(cax, cmap=colormaps[HEAT_CMAP], norm=Normalize(0, 1))
            cax.axhline(HEAT_FLOOR, color="white", lw=1)
            bar.set_ticks([0, HEAT_FLOOR, HEAT_FULL, 1])
            cax.tick_params(colors="white", labelsize=8)
            cax.set_ylabel("\n".join(textwrap.wrap(f"{heat_meaning}; transparent below {HEAT_FLOOR:g}", 42)),
                           color="white", fontsize=8.5)
        top += h + MARGIN
    for k, line in enumerate(lines):
        fig.text(MARGIN, fig_h - top - (k + 1) * LINE_H + 4, line, transform=px, color="white", fontsize=10, parse_math=False,
                 va="baseline")
    buf = io.BytesIO()
    meta = {"Software": None, **metadata, "Description": "\n".join(caption), "medsight:layout": json.dumps(layout)}
    fig.savefig(buf, format="png", dpi=DPI, facecolor=BACKGROUND, metadata=meta)
    return buf.getvalue()


def _orientation_letters(fig: Figure, labels: dict[str, str], left: int, bottom: int, w: int, h: int) -> None:
    px = IdentityTransform()
    spots = {"left": (left - 4, bottom + h / 2, "right", "center"), "right": (left + w + 4, bottom + h / 2, "left", "center"),
             "top": (left + w / 2, bottom + h + 3, "center", "bottom"), "bottom": (left + w / 2, bottom - 3, "center", "top")}
    for edge, (x, y, ha, va) in spots.items():
        fig.text(x, y, labels.get(edge, ""), transform=px, color="#ffd84d", fontsize=12, weight="bold", ha=ha, va=va)


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def png_text(data: bytes) -> dict[str, str]:
    """The text chunks of PNG bytes (caption under "Description", layout under "medsight:layout")."""
    with PILImage.open(io.BytesIO(data)) as im:
        return {str(k): str(v) for k, v in im.text.items()}


def thumbnail_uri(rgb: np.ndarray, long_side: int = 192) -> str:
    """A display panel shrunk to ``long_side`` pixels, as a PNG data URI (for HTML reports and worklists)."""
    im = PILImage.fromarray(_to_uint8(rgb))
    scale = long_side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))), PILImage.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
