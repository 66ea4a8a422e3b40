"""Follow-up: lesions of a prior and a current study matched after registration, and how each one changed.

Lesions are the 26-connected components of the lesion label (measured by ``explain.lesion_table``: volume in ml,
longest diameter in mm between voxel centres, centroid in LPS mm), each in its own study's native grid, so the
registration never changes a measured size; it only decides which lesion is which.

Matching (one-to-one, greedy): first by voxel overlap between the prior lesions carried onto the current grid
(nearest neighbour through the registration) and the current lesions, largest overlap first; then the lesions
left over by centroid distance (carried prior centroid to current centroid) up to ``max_distance_mm``. A prior
lesion without a partner is *resolved*, a current one *new*.

Change rule (RECIST 1.1-like on the longest diameter, with a volume rule of the same size for a sphere):
- growing: diameter +20 % or more AND at least +5 mm, OR volume +72.8 % or more (1.2^3 = 1.728);
- shrinking: diameter -30 % or more, OR volume -65.7 % or more (0.7^3 = 0.343);
- otherwise stable. (RECIST's own thresholds apply to sums of diameters of target lesions; here they are applied
  per lesion, which is what a radiologist's lesion-by-lesion comparison does.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medsight.explain.lesion_table import components, match, measure
from medsight.image import Geometry

DIAMETER_GROWTH, DIAMETER_GROWTH_MM, DIAMETER_SHRINK = 0.20, 5.0, 0.30
VOLUME_GROWTH, VOLUME_SHRINK = 1.2 ** 3 - 1.0, 1.0 - 0.7 ** 3
MAX_DISTANCE_MM = 15.0
RULE = ("growing: diameter >= +20 % and >= +5 mm, or volume >= +72.8 %; shrinking: diameter <= -30 %, or volume "
        "<= -65.7 %; otherwise stable; new: no prior partner; resolved: no current partner. Matching: overlap after "
        f"registration, then centroid distance <= {MAX_DISTANCE_MM:g} mm")


@dataclass
class Lesions:
    """One study's lesions: a map of lesion ids (0 = none) on its grid and their measurements."""

    ids: np.ndarray
    rows: list[dict[str, Any]]
    geometry: Geometry


@dataclass
class Change:
    """One tracked lesion across the two time points."""

    track_id: int
    prior: dict[str, Any] | None
    current: dict[str, Any] | None
    matched_by: str  # overlap | distance | -
    overlap_voxels: int = 0
    distance_mm: float | None = None
    status: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def lesions_of(mask: np.ndarray, geometry: Geometry) -> Lesions:
    """Measured lesions of a binary mask (ids 1 = largest), with the id map that lesion_table.match assigns."""
    rows = measure(mask, geometry)
    labelled, n = components(mask)
    ids = np.zeros(labelled.shape, np.int32)
    for comp, lesion_id in match(rows, labelled, n, geometry).items():
        ids[labelled == comp] = lesion_id
    return Lesions(ids, rows, geometry)


def status(prior: dict[str, Any] | None, current: dict[str, Any] | None) -> str:
    """The change class of one track under the module's stated rule."""
    if prior is None:
        return "new"
    if current is None:
        return "resolved"
    d0, d1 = prior["longest_diameter_mm"], current["longest_diameter_mm"]
    v0, v1 = prior["volume_ml"], current["volume_ml"]
    grow_d = d1 - d0 >= DIAMETER_GROWTH_MM and (d0 == 0 or (d1 - d0) / d0 >= DIAMETER_GROWTH)
    grow_v = v0 > 0 and (v1 - v0) / v0 >= VOLUME_GROWTH
    shrink_d = d0 > 0 and (d0 - d1) / d0 >= DIAMETER_SHRINK
    shrink_v = v0 > 0 and (v0 - v1) / v0 >= VOLUME_SHRINK
    if grow_d or grow_v:
        return "growing"
    if shrink_d or shrink_v:
        return "shrinking"
    return "stable"


def match_lesions(prior: Lesions, carried_ids: np.ndarray, current: Lesions,
                  carried_centroids: dict[int, np.ndarray], max_distance_mm: float = MAX_DISTANCE_MM) -> list[Change]:
    """Tracks over both studies. ``carried_ids`` are the prior ids on the current grid; ``carried_centroids`` the
    prior centroids in the current study's world (LPS mm)."""
    n_p, n_c = len(prior.rows), len(current.rows)
    pairs: dict[int, tuple[int, str, int, float | None]] = {}  # prior id -> (current id, how, overlap, distance)
    if n_p and n_c:
        both = (carried_ids > 0) & (current.ids > 0)
        counts = np.bincount(carried_ids[both].astype(np.int64) * (n_c + 1) + current.ids[both],
                             minlength=(n_p + 1) * (n_c + 1)).reshape(n_p + 1, n_c + 1)
        for flat in np.argsort(-counts, axis=None):
            p, c = divmod(int(flat), n_c + 1)
            if counts[p, c] == 0:
                break
            if p not in pairs and c not in {v[0] for v in pairs.values()}:
                pairs[p] = (c, "overlap", int(counts[p, c]), None)
        cur_centre = {r["lesion_id"]: np.asarray(r["centroid"]) for r in current.rows}
        options = sorted((float(np.linalg.norm(carried_centroids[p] - cur_centre[c])), p, c)
                         for p in carried_centroids for c in cur_centre)
        for dist, p, c in options:
            if dist > max_distance_mm:
                break
            if p not in pairs and c not in {v[0] for v in pairs.values()}:
                pairs[p] = (c, "distance", 0, dist)
    by_id_p = {r["lesion_id"]: r for r in prior.rows}
    by_id_c = {r["lesion_id"]: r for r in current.rows}
    tracks: list[Change] = []
    for p in sorted(by_id_p):
        if p in pairs:
            c, how, overlap, dist = pairs[p]
            if dist is None:
                dist = float(np.linalg.norm(carried_centroids[p] - np.asarray(by_id_c[c]["centroid"])))
            tracks.append(Change(len(tracks) + 1, by_id_p[p], by_id_c[c], how, overlap, dist))
        else:
            tracks.append(Change(len(tracks) + 1, by_id_p[p], None, "-"))
    matched_c = {v[0] for v in pairs.values()}
    for c in sorted(set(by_id_c) - matched_c):
        tracks.append(Change(len(tracks) + 1, None, by_id_c[c], "-"))
    for t in tracks:
        t.status = status(t.prior, t.current)
    return tracks


def table_rows(tracks: list[Change]) -> list[dict[str, Any]]:
    """One CSV row per track: ids, volume (ml) and longest diameter (mm) at each time, changes, status."""
    rows = []
    for t in tracks:
        p, c = t.prior or {}, t.current or {}
        v0, v1 = p.get("volume_ml", 0.0), c.get("volume_ml", 0.0)
        d0, d1 = p.get("longest_diameter_mm", 0.0), c.get("longest_diameter_mm", 0.0)
        rows.append({
            "track_id": t.track_id, "prior_lesion_id": p.get("lesion_id", ""), "current_lesion_id": c.get("lesion_id", ""),
            "prior_volume_ml": round(v0, 4), "current_volume_ml": round(v1, 4),
            "volume_change_ml": round(v1 - v0, 4), "volume_change_percent": _pct(v0, v1),
            "prior_diameter_mm": round(d0, 2), "current_diameter_mm": round(d1, 2),
            "diameter_change_mm": round(d1 - d0, 2), "diameter_change_percent": _pct(d0, d1),
            "matched_by": t.matched_by, "overlap_voxels": t.overlap_voxels,
            "centroid_distance_mm": "" if t.distance_mm is None else round(t.distance_mm, 2), "status": t.status,
            "prior_centroid_lps_mm": _point(p), "current_centroid_lps_mm": _point(c)})
    return rows


def _point(row: dict[str, Any]) -> str:
    return " ".join(f"{v:.1f}" for v in row["centroid"]) if row.get("centroid") is not None else ""


def _pct(a: float, b: float) -> float | str:
    return round(100.0 * (b - a) / a, 2) if a > 0 else ""
