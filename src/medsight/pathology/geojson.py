"""Masks <-> GeoJSON polygons in level-0 pixel coordinates, the annotation format QuPath imports and exports.

QuPath reads a FeatureCollection of Polygon/MultiPolygon features whose ``properties.objectType`` is
``annotation`` and whose optional ``classification`` has a name and an RGB colour; coordinates are level-0
pixels with y down, so no transform is needed between our tiles and QuPath's view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from skimage import measure

from medsight.errors import DatasetError
from medsight.files import atomic_write_text


def mask_to_polygons(mask: np.ndarray, scale: float, min_points: int = 4,
                     tolerance: float = 0.75) -> list[list[list[float]]]:
    """Closed rings (level-0 coordinates) around each region of ``mask``; holes come out as rings too."""
    padded = np.pad(mask.astype(np.uint8), 1)
    rings = []
    for contour in measure.find_contours(padded, 0.5):
        contour = measure.approximate_polygon(contour, tolerance)
        if len(contour) < min_points:
            continue
        pts = [[round(float((c - 1 + 0.5) * scale), 1), round(float((r - 1 + 0.5) * scale), 1)] for r, c in contour]
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        rings.append(pts)
    return rings


def feature(rings: list[list[list[float]]], name: str, colour: tuple[int, int, int],
            **props: Any) -> dict[str, Any]:
    """One QuPath annotation made of several polygons (each ring its own polygon; holes are drawn as outlines)."""
    return {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[r] for r in rings]},
            "properties": {"objectType": "annotation", "name": name,
                           "classification": {"name": name, "color": list(colour)}, **props}}


def write_features(path: str | Path, features: list[dict[str, Any]]) -> Path:
    atomic_write_text(path, json.dumps({"type": "FeatureCollection", "features": features}))
    return Path(path)


def read_polygons(path: str | Path) -> list[list[list[list[float]]]]:
    """Every polygon of a GeoJSON file as a list of rings (outer first, then holes)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"not a readable GeoJSON file ({err})", path) from err
    feats = data.get("features", [data]) if isinstance(data, dict) else []
    polys = []
    for f in feats:
        geom = f.get("geometry") or {}
        if geom.get("type") == "Polygon":
            polys.append(geom["coordinates"])
        elif geom.get("type") == "MultiPolygon":
            polys.extend(geom["coordinates"])
    return polys


def rasterize(polygons: list[list[list[list[float]]]], shape: tuple[int, int], scale: float) -> np.ndarray:
    """Boolean mask of ``shape`` (rows, cols) whose pixel (r, c) covers level-0 box (c, r) * scale."""
    img = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(img)
    for rings in polygons:
        for i, ring in enumerate(rings):
            pts = [(x / scale - 0.5, y / scale - 0.5) for x, y in ring]
            draw.polygon(pts, fill=1 if i == 0 else 0)
    return np.asarray(img, dtype=bool)
