"""What a slide prediction shows a pathologist: thumbnail with tiles, attention heatmap, top tiles, GeoJSON.

The heatmap is painted tile by tile onto the slide thumbnail (memory = one thumbnail, never the slide; CLAM
users report 40 GiB for this step). Attention is shown by rank within the slide (0 = least, 1 = most attended):
raw attention weights of slides with 50 and 5,000 tiles differ by a factor of 100 and would not compare. The tissue
outline and the most-attended region go to GeoJSON in level-0 pixels, which QuPath opens as annotations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from medsight.explain.overlays import display_size
from medsight.files import atomic_write_with
from medsight.io.slide import Slide
from medsight.pathology.geojson import feature, mask_to_polygons, write_features
from medsight.pathology.tissue import TissueMask

THUMB_SIDE = 1024


def _save_png(path: Path, img: Image.Image) -> Path:
    """PNG at zlib level 1: lossless all the same, files ~10% larger, written several times faster. Display size:
    a 112-px top tile or a small slide's thumbnail is enlarged (whole factor, nearest: explain.overlays)."""
    img = Image.fromarray(display_size(np.asarray(img)))
    atomic_write_with(path, lambda tmp: img.save(tmp, format="PNG", compress_level=1), suffix=".png")
    return path


def save_tissue_outputs(slide: Slide, tiling: Any, mask: TissueMask, out_dir: Path) -> dict[str, Path]:
    """thumbnail.png (kept tiles outlined) and tissue.geojson beside a tiling manifest."""
    thumb = slide.thumbnail(THUMB_SIDE)
    scale = slide.dimensions[0] / thumb.shape[1]
    img = Image.fromarray(thumb)
    draw = ImageDraw.Draw(img)
    for x, y, w, h in tiling.boxes:
        draw.rectangle([x / scale, y / scale, (x + w) / scale, (y + h) / scale], outline=(0, 110, 255))
    paths = {"thumbnail": _save_png(out_dir / "thumbnail.png", img)}
    polygons = mask_to_polygons(mask.mask, mask.scale)
    paths["tissue_geojson"] = write_features(out_dir / "tissue.geojson", [
        feature(polygons, "Tissue", (0, 160, 0), threshold=round(mask.threshold, 4))])
    return paths


def attention_rank(attention: np.ndarray) -> np.ndarray:
    """Attention as its rank in [0, 1] within the slide (ties share the mean rank)."""
    from scipy.stats import rankdata

    a = np.asarray(attention, dtype=np.float64)
    if a.size <= 1:
        return np.ones_like(a)
    return (rankdata(a, method="average") - 1) / (a.size - 1)


def heat_canvas(boxes: np.ndarray, values: np.ndarray, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Mean value per thumbnail pixel over the tiles covering it (NaN where no tile)."""
    acc = np.zeros(shape, np.float64)
    cnt = np.zeros(shape, np.float64)
    for (x, y, w, h), v in zip(boxes, values):
        r0, c0 = int(y / scale), int(x / scale)
        r1, c1 = max(r0 + 1, int(np.ceil((y + h) / scale))), max(c0 + 1, int(np.ceil((x + w) / scale)))
        acc[r0:r1, c0:c1] += v
        cnt[r0:r1, c0:c1] += 1
    with np.errstate(invalid="ignore"):
        return np.where(cnt > 0, acc / np.maximum(cnt, 1), np.nan)


def write_attention_evidence(slide: Slide, boxes: np.ndarray, attention: np.ndarray, out_dir: Path,
                             top_k: int = 8, tile_mpp: float | None = None, tile_size: int = 224,
                             top_share: float = 0.1) -> dict[str, Any]:
    """heatmap.png, top_tiles/NN.png and attention.geojson for one slide; returns their paths and top boxes."""
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    thumb = slide.thumbnail(THUMB_SIDE)
    scale = slide.dimensions[0] / thumb.shape[1]
    rank = attention_rank(attention)
    heat = heat_canvas(boxes, rank, thumb.shape[:2], scale)
    rgba = matplotlib.colormaps["jet"](np.nan_to_num(heat, nan=0.0))
    alpha = np.where(np.isnan(heat), 0.0, 0.45)[..., None]
    blended = (thumb / 255.0) * (1 - alpha) + rgba[..., :3] * alpha
    paths: dict[str, Any] = {"heatmap": _save_png(out_dir / "heatmap.png",
                                                  Image.fromarray((blended * 255).round().astype(np.uint8)))}
    order = np.argsort(-np.asarray(attention), kind="stable")[:top_k]
    top = []
    for i, idx in enumerate(order):
        x, y, w, h = (int(v) for v in boxes[idx])
        mpp = tile_mpp or slide.mpp * w / tile_size
        tile = slide.read_region_mpp(x, y, mpp, tile_size, tile_size)
        p = _save_png(out_dir / "top_tiles" / f"{i:02d}_x{x}_y{y}.png", Image.fromarray(tile))
        top.append({"rank": i, "box": [x, y, w, h], "attention": float(attention[idx]), "png": str(p)})
    paths["top_tiles"] = top
    n_top = max(1, int(round(top_share * len(rank))))
    hot = heat_canvas(boxes, (rank >= np.sort(rank)[-n_top]).astype(float), thumb.shape[:2], scale) >= 0.5
    paths["geojson"] = write_features(out_dir / "attention.geojson", [
        feature(mask_to_polygons(hot, scale), "High attention", (255, 40, 40), top_share=top_share),
        *[feature([[[[b[0], b[1]], [b[0] + b[2], b[1]], [b[0] + b[2], b[1] + b[3]], [b[0], b[1] + b[3]],
                     [b[0], b[1]]]]], f"Top tile {t['rank']}", (255, 200, 0), attention=t["attention"])
          for t in top for b in [t["box"]]]])
    return paths
