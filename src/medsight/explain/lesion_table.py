"""Lesion tables for the evidence figures: read the segmentation's own table (``lesions.csv``) and find each
listed lesion's connected component, so the id drawn beside an outline is the id in the table.

The table is taken as given (list of dicts or a DataFrame with ``lesion_id``, ``volume_ml``,
``longest_diameter_mm`` and, ideally, a centroid in LPS mm). Only when a prediction comes without one do we
measure components here (volume = voxels x voxel volume; longest diameter = the maximum Feret diameter of the
component's voxels, in world mm, as ``medsight.metrics.diameter`` and the segmentation's own table measure it) and
say so in the caption.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from medsight.image import Geometry
from medsight.metrics.diameter import longest_diameter_mm

STRUCTURE_3D = np.ones((3, 3, 3), bool)  # 26-connectivity: voxels touching at a corner are one lesion


def normalise(table: Any) -> list[dict[str, Any]]:
    """List of dicts with lesion_id, volume_ml, longest_diameter_mm and centroid (LPS mm tuple or None)."""
    if table is None:
        return []
    rows: Iterable[Mapping[str, Any]] = table.to_dict("records") if hasattr(table, "to_dict") else table
    out = []
    for r in rows:
        out.append({**r, "lesion_id": r.get("lesion_id", r.get("id")), "volume_ml": float(r["volume_ml"]),
                    "longest_diameter_mm": float(r["longest_diameter_mm"]), "centroid": _centroid(r)})
    return out


def _centroid(r: Mapping[str, Any]) -> tuple[float, ...] | None:
    value = r.get("centroid", r.get("centroid_mm", r.get("centroid_lps_mm")))
    if isinstance(value, str):
        nums = [float(v) for v in re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", value)]
        return tuple(nums) if len(nums) in (2, 3) else None
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(float(v) for v in value)
    # one column per axis: centroid_x/_y/_z or centroid_l/_p/_s (LPS), with or without a _mm suffix
    axis = {"x": 0, "l": 0, "y": 1, "p": 1, "z": 2, "s": 2}
    keys = {axis[str(k).lower().removesuffix("_mm")[-1]]: k for k in r if str(k).lower().startswith("centroid_")
            and str(k).lower().removesuffix("_mm")[-2:-1] == "_" and str(k).lower().removesuffix("_mm")[-1] in axis}
    return tuple(float(r[keys[a]]) for a in range(3)) if len(keys) == 3 else None


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a binary mask (26-connected in 3D, 8 in 2D)."""
    m = np.asarray(mask, bool)
    return ndimage.label(m, structure=np.ones((3,) * m.ndim, bool))


def match(lesions: list[dict[str, Any]], labelled: np.ndarray, n: int, geometry: Geometry) -> dict[int, Any]:
    """component number -> lesion id: the component holding the lesion's centroid, else the nearest one; a
    lesion without a centroid takes the unclaimed component of the closest volume."""
    if n == 0 or not lesions:
        return {}
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    idx = np.arange(1, n + 1)
    centres = np.asarray(ndimage.center_of_mass(np.ones_like(labelled), labelled, idx), dtype=float).reshape(n, -1)
    sizes = ndimage.sum_labels(np.ones_like(labelled), labelled, idx) * voxel_ml
    out: dict[int, Any] = {}
    for les in sorted(lesions, key=lambda r: -r["volume_ml"]):
        free = [c for c in idx if c not in out]
        if not free:
            break
        if les["centroid"] is not None and len(les["centroid"]) == geometry.ndim:
            at = np.round(geometry.world_to_index(les["centroid"])).astype(int)
            inside = all(0 <= a < s for a, s in zip(at, labelled.shape))
            comp = int(labelled[tuple(at)]) if inside else 0
            if comp == 0 or comp in out:
                want = geometry.world_to_index(les["centroid"])
                comp = min(free, key=lambda c: float(np.sum((centres[c - 1] - want) ** 2)))
        else:
            comp = min(free, key=lambda c: abs(sizes[c - 1] - les["volume_ml"]))
        out[int(comp)] = les["lesion_id"]
    return out


def measure(mask: np.ndarray, geometry: Geometry) -> list[dict[str, Any]]:
    """Our own table when the prediction has none: id (1 = largest), volume (ml), longest diameter (mm), centroid."""
    labelled, n = components(mask)
    if n == 0:
        return []
    lin = geometry.direction_matrix * np.asarray(geometry.spacing)
    voxel_ml = abs(float(np.linalg.det(lin))) / 1000.0
    rows = []
    for comp, sl in enumerate(ndimage.find_objects(labelled), start=1):
        pts = np.argwhere(labelled[sl] == comp) + np.array([s.start for s in sl])
        world = geometry.index_to_world(pts)
        rows.append({"volume_ml": len(pts) * voxel_ml,  # a diameter does not depend on the origin: the crop will do
                     "longest_diameter_mm": longest_diameter_mm(labelled[sl] == comp, geometry),
                     "centroid": tuple(float(v) for v in world.mean(axis=0))})
    rows.sort(key=lambda r: (-r["volume_ml"], r["centroid"]))
    return [{"lesion_id": i, **r} for i, r in enumerate(rows, start=1)]
