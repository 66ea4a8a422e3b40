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


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed (row, col) ring; its sign gives the winding."""
    r, c = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(c[:-1], r[1:]) - np.dot(c[1:], r[:-1]))


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """A closed ring without the vertices that lie on a straight line between their neighbours (same shape)."""
    pts = ring[:-1] if len(ring) > 1 and np.array_equal(ring[0], ring[-1]) else ring
    if len(pts) < 4:
        return ring
    d_in, d_out = pts - np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0) - pts
    keep = np.abs(d_in[:, 0] * d_out[:, 1] - d_in[:, 1] * d_out[:, 0]) > 1e-9
    kept = pts[keep]
    return np.vstack([kept, kept[:1]]) if len(kept) >= 3 else ring


def mask_to_polygons(mask: np.ndarray, scale: float, min_points: int = 4,
                     tolerance: float = 0.0) -> list[list[list[list[float]]]]:
    """Polygons (level-0 coordinates) of the regions of ``mask``: each is its outer ring followed by its holes as
    interior rings, as GeoJSON requires (a lumen is a hole in the tissue, not more tissue).

    Contours are traced with the foreground on one side (skimage, ``positive_orientation="high"``), so an outer
    boundary and a hole boundary wind in opposite directions; each hole goes to the smallest outer ring that holds
    it (an island inside a hole is an outer ring of its own). By default the outline is exact at the mask's
    resolution (only collinear vertices dropped); ``tolerance`` > 0 simplifies it further (Douglas-Peucker)."""
    from matplotlib.path import Path as MplPath

    padded = np.pad(mask.astype(np.uint8), 1)
    outers, holes = [], []
    for contour in measure.find_contours(padded, 0.5, positive_orientation="high"):
        contour = _drop_collinear(contour)  # exact and vectorised: the simplifier then sees few points
        if tolerance > 0 and len(contour) > min_points:
            contour = measure.approximate_polygon(contour, tolerance)
        if len(contour) < min_points:
            continue
        if not np.array_equal(contour[0], contour[-1]):
            contour = np.vstack([contour, contour[:1]])
        area = _signed_area(contour)
        if area == 0:
            continue
        (outers if area < 0 else holes).append(contour)
    polygons = [[o] for o in outers]
    paths = [MplPath(o[:, ::-1]) for o in outers]
    areas = [abs(_signed_area(o)) for o in outers]
    for h in holes:
        inside = [i for i, p in enumerate(paths) if areas[i] > abs(_signed_area(h))
                  and p.contains_point(tuple(h[:-1, ::-1].mean(0)))]
        if inside:
            polygons[min(inside, key=lambda i: areas[i])].append(h)

    def to_xy(ring: np.ndarray) -> list[list[float]]:
        pts = [[round(float((c - 1 + 0.5) * scale), 1), round(float((r - 1 + 0.5) * scale), 1)] for r, c in ring]
        return pts if pts[0] == pts[-1] else pts + [pts[0]]
    return [[to_xy(r) for r in poly] for poly in polygons]


def feature(polygons: list[list[list[list[float]]]], name: str, colour: tuple[int, int, int],
            **props: Any) -> dict[str, Any]:
    """One QuPath annotation: a MultiPolygon whose polygons are [outer ring, hole rings...]."""
    return {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [list(p) for p in polygons]},
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
