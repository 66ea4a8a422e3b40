"""Measured lesions in every prediction: one row per connected lesion with its size, place and confidence.

What a clinician reads off a lesion segmentation is a list: how many lesions, how large (ml), the longest diameter
(mm, the RECIST-style measure, here in 3D), where (centroid in LPS mm, the DICOM patient frame) and how sure the
model is (mean and max lesion probability, mean entropy) with the safety layer's accept/refer decision.

Rules (docs/segmentation.md "lesions.csv"):
- lesions are connected components of the predicted lesion label, full connectivity (as medsight.metrics.lesions);
- components smaller than the plan's ``min_lesion_volume_ml`` are dropped: their voxels take the most probable
  other class in the label map, and the number and total volume dropped are reported;
- longest diameter = the maximum Feret (caliper) diameter of the lesion's voxels taken as boxes, in world mm
  (``medsight.metrics.diameter``): a row of n voxels measures n voxels, a one-voxel lesion its voxel's diagonal;
- a 3D box per lesion (a detection, with ``score`` = its maximum lesion probability, the score FROC thresholds
  on): the lesion's voxel boxes enclosed in an LPS-aligned box in world mm (``box_min_*`` / ``box_max_*``) and its
  voxel index range ``box_voxels`` = "i0:i1,j0:j1,k0:k1" (stop exclusive, as Python slices);
- refer when the safety layer's ``ReferralPolicy`` (``lesion_referral.json`` in the model folder, else the plan's
  defaults) flags ``low_confidence`` = 1 - mean lesion probability or ``high_uncertainty`` = mean entropy (nats).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medsight.files import atomic_write_text
from medsight.image import Geometry
from medsight.metrics.diameter import longest_diameter_mm
from medsight.metrics.lesions import components
from medsight.safety.referral import ReferralPolicy

REFERRAL_FILE = "lesion_referral.json"  # in the model package, fitted on validation lesions (lesion_study.py)
BOX_COLUMNS = ("box_min_l_mm", "box_min_p_mm", "box_min_s_mm", "box_max_l_mm", "box_max_p_mm", "box_max_s_mm",
               "box_voxels")
COLUMNS = ("lesion_id", "label", "volume_ml", "n_voxels", "longest_diameter_mm", "centroid_l_mm", "centroid_p_mm",
           "centroid_s_mm", "mean_probability", "max_probability", "mean_entropy", "decision", "reasons",
           "score", *BOX_COLUMNS)


@dataclass
class LesionTable:
    """The measured lesions of one prediction and what was dropped."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    n_dropped: int = 0
    dropped_volume_ml: float = 0.0
    min_volume_ml: float = 0.0

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        return buf.getvalue()

    def summary(self) -> dict[str, Any]:
        return {"n_lesions": len(self.rows), "total_volume_ml": float(sum(r["volume_ml"] for r in self.rows)),
                "n_referred": sum(1 for r in self.rows if r["decision"] == "refer"), "n_dropped": self.n_dropped,
                "dropped_volume_ml": self.dropped_volume_ml, "min_volume_ml": self.min_volume_ml}


def default_policy(plan_postprocess: Mapping[str, Any]) -> ReferralPolicy:
    """The plan's per-lesion referral thresholds as a safety-layer policy."""
    return ReferralPolicy(thresholds={
        "low_confidence": 1.0 - float(plan_postprocess.get("refer_mean_probability_below", 0.6)),
        "high_uncertainty": float(plan_postprocess.get("refer_mean_entropy_above", 0.6))})


def measure_lesions(labels: np.ndarray, probabilities: np.ndarray, geometry: Geometry, lesion_labels: Mapping[int, str],
                    min_volume_ml: float = 0.0, policy: ReferralPolicy | None = None
                    ) -> tuple[np.ndarray, LesionTable]:
    """(label map with small lesions removed, the lesion table). ``probabilities`` is (C, *S) on the same grid."""
    from medsight.segmentation.postprocess import entropy

    out = np.asarray(labels).copy()
    prob = np.asarray(probabilities, dtype=np.float32)
    ent = entropy(prob)
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    table = LesionTable(min_volume_ml=float(min_volume_ml))
    policy = policy or default_policy({})
    for value, name in lesion_labels.items():
        comp, n = components(out == value)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        objects = ndimage.find_objects(comp)
        for k in range(1, n + 1):
            box = objects[k - 1]
            mask = comp[box] == k
            volume = float(sizes[k]) * voxel_ml
            if volume < min_volume_ml:
                others = prob[(slice(None),) + box].copy()
                others[value] = -1.0
                out[box][mask] = others.argmax(0)[mask]
                table.n_dropped += 1
                table.dropped_volume_ml += volume
                continue
            p = prob[(value,) + box][mask]
            idx = np.argwhere(mask) + np.array([s.start for s in box])
            centroid = geometry.index_to_world(idx.mean(0))
            sub = Geometry(geometry.spacing, tuple(geometry.index_to_world([s.start for s in box])), geometry.direction)
            mean_p, mean_e = float(p.mean()), float(ent[box][mask].mean())
            decision = policy.decide({"low_confidence": 1.0 - mean_p, "high_uncertainty": mean_e})
            table.rows.append({
                "lesion_id": len(table.rows) + 1, "label": name, "volume_ml": round(volume, 6),
                "n_voxels": int(sizes[k]),
                "longest_diameter_mm": round(longest_diameter_mm(mask, sub), 3),
                **{f"centroid_{a}_mm": round(float(c), 3) for a, c in zip("lps", centroid)},
                "mean_probability": round(mean_p, 4), "max_probability": round(float(p.max()), 4),
                "mean_entropy": round(mean_e, 4), "decision": decision.action, "reasons": "; ".join(decision.reasons),
                "score": round(float(p.max()), 4), **lesion_box(box, geometry)})
    return out, table


def lesion_box(box: tuple[slice, ...], geometry: Geometry) -> dict[str, Any]:
    """The world-space (LPS mm) axis-aligned box around the voxel boxes of index range ``box``, and the range."""
    corners = np.array(list(itertools.product(*[(s.start - 0.5, s.stop - 0.5) for s in box])), dtype=float)
    world = np.asarray(geometry.index_to_world(corners), dtype=float)
    lo, hi = world.min(0), world.max(0)
    return {**{f"box_min_{a}_mm": round(float(v), 3) for a, v in zip("lps", lo)},
            **{f"box_max_{a}_mm": round(float(v), 3) for a, v in zip("lps", hi)},
            "box_voxels": ",".join(f"{s.start}:{s.stop}" for s in box)}


def write_lesion_table(table: LesionTable, path: str | Path) -> Path:
    atomic_write_text(path, table.to_csv())
    return Path(path)


def load_policy(model_dir: str | Path, plan_postprocess: Mapping[str, Any]) -> ReferralPolicy:
    """``lesion_referral.json`` in the model package (fitted on validation lesions when enough were found, see
    ``medsight.segmentation.lesion_study``; packages made before it have none) when present, else the plan's."""
    path = Path(model_dir) / REFERRAL_FILE
    return ReferralPolicy.load(path) if path.is_file() else default_policy(plan_postprocess)
