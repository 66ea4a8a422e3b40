"""Lesion detection operating point fitted on validation lesions: which voxels and components count as lesions.

Argmax of the softmax is one operating point among many: a small lesion the network sees at probability 0.3 is
lost to the tissue class, and a one-voxel blob at 0.55 becomes a false lesion. After a fold is trained its
validation cases are predicted once (``lesion_study``) and every candidate rule of a small grid is scored there:

- ``threshold``: a voxel is lesion when its lesion probability is >= threshold (or argmax says lesion);
- ``min_volume_ml``: components smaller than this are dropped (0, the plan's ``min_lesion_volume_ml``, twice it);
- ``min_score``: components whose maximum lesion probability (the FROC score) is below this are dropped.

Counts are pooled over the folds' validation cases (unit: validation lesion, matched at IoU > 0.1 as
``medsight.metrics.lesions``) and the rule with the highest lesion-wise sensitivity at <= ``MAX_FP_PER_CASE``
false lesions per case is kept (ties: the rule closest to argmax, i.e. the lowest score and volume filters and the
highest threshold, so the filters keep a margin below the validation lesions' scores); when no rule meets the FP
bound, the one with the fewest false lesions. With fewer than ``MIN_REF_LESIONS`` validation lesions nothing is fitted. It is stored in the package as ``lesion_detection.json`` and
``predict`` applies it; a package without one keeps argmax and the plan's minimum volume.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsight.files import atomic_write_text
from medsight.metrics.lesions import components, iou_matrix, match

DETECTION_FILE = "lesion_detection.json"
MAX_FP_PER_CASE = 1.0
THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1)
MIN_SCORES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
VOLUME_FACTORS = (0.0, 1.0, 2.0)  # x the plan's min_lesion_volume_ml
MIN_REF_LESIONS = 5  # fewer validation lesions: a rule chosen on them would be noise, predict keeps argmax


@dataclass
class LesionDetection:
    """One detection rule (see the module docstring); ``fit`` says how it was chosen."""

    threshold: float = 0.5
    min_volume_ml: float = 0.0
    min_score: float = 0.0
    fit: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        atomic_write_text(path, json.dumps(asdict(self), indent=2, sort_keys=True))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "LesionDetection":
        d = json.loads(Path(path).read_text())
        return cls(float(d["threshold"]), float(d["min_volume_ml"]), float(d["min_score"]), dict(d.get("fit", {})))


def candidates(plan_min_ml: float) -> list[tuple[float, float, float]]:
    """(threshold, min_volume_ml, min_score) of every rule tried."""
    vols = sorted({round(f * plan_min_ml, 6) for f in VOLUME_FACTORS})
    return list(itertools.product(THRESHOLDS, vols, MIN_SCORES))


def lesion_candidates(prob: np.ndarray, value: int, threshold: float) -> np.ndarray:
    """Voxels that are lesion ``value`` under ``threshold``: argmax says so or its probability reaches it."""
    return (prob.argmax(0) == value) | (prob[value] >= threshold)


def apply_detection(prob: np.ndarray, lesion_labels: Mapping[int, str], rule: LesionDetection,
                    voxel_ml: float) -> np.ndarray:
    """Label map (uint8) from the softmax (C, *S) under ``rule``: argmax, then each lesion label's voxels by the
    threshold, components below ``min_volume_ml`` or ``min_score`` given back to the most probable other class."""
    labels = prob.argmax(0).astype(np.uint8)
    for value in lesion_labels:
        mask = lesion_candidates(prob, value, rule.threshold)
        comp, n = components(mask)
        keep = np.zeros(n + 1, dtype=bool)
        if n:
            sizes = np.bincount(comp.ravel(), minlength=n + 1)
            score = _component_max(prob[value], comp, n)
            keep[1:] = (sizes[1:] * voxel_ml >= rule.min_volume_ml) & (score[1:] >= rule.min_score)
        lesion = keep[comp]
        others = prob.copy()
        others[value] = -1.0
        other = others.argmax(0).astype(np.uint8)
        labels = np.where(lesion, np.uint8(value), np.where(labels == value, other, labels)).astype(np.uint8)
    return labels


def _component_max(p: np.ndarray, comp: np.ndarray, n: int) -> np.ndarray:
    score = np.zeros(n + 1, dtype=np.float64)
    np.maximum.at(score, comp.ravel(), p.ravel().astype(np.float64))
    score[0] = 0.0
    return score


def operating_points(prob: np.ndarray, ref: np.ndarray, value: int, voxel_ml: float,
                     rules: Sequence[tuple[float, float, float]]) -> tuple[int, list[tuple[int, int]]]:
    """(reference lesions, [(tp, fp) per rule]) of one case and lesion label; matching as medsight.metrics.lesions.
    Components are labelled once per threshold; the volume/score filters select rows of one IoU matrix."""
    ref_comp, n_ref = components(ref == value)
    out: dict[tuple[float, float, float], tuple[int, int]] = {}
    for t in sorted({r[0] for r in rules}):
        comp, n = components(lesion_candidates(prob, value, t))
        iou = iou_matrix(comp, n, ref_comp, n_ref)[0] if n else np.zeros((0, n_ref))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:] * voxel_ml
        score = _component_max(prob[value], comp, n)[1:]
        for _, vol, s in (r for r in rules if r[0] == t):
            rows = np.nonzero((sizes >= vol) & (score >= s))[0]
            tp = len(match(iou[rows])) if len(rows) and n_ref else 0
            out[(t, vol, s)] = (tp, len(rows) - tp)
    return n_ref, [out[r] for r in rules]


def fit_detection(tables: Sequence[Mapping[str, Any]], max_fp_per_case: float = MAX_FP_PER_CASE
                  ) -> LesionDetection | None:
    """The rule from the folds' pooled validation tables (``{"rules", "tp", "fp", "n_ref", "n_cases"}``, the same
    rules in each); None without tables or with fewer than ``MIN_REF_LESIONS`` reference lesions."""
    tables = [t for t in tables if t and t.get("rules")]
    if not tables:
        return None
    rules = [tuple(r) for r in tables[0]["rules"]]
    if any([tuple(r) for r in t["rules"]] != rules for t in tables):
        return None  # folds tried different grids (plans differ): no pooled choice
    n_ref = sum(int(t["n_ref"]) for t in tables)
    n_cases = sum(int(t["n_cases"]) for t in tables)
    if n_ref < MIN_REF_LESIONS or n_cases == 0:
        return None
    tp = np.sum([t["tp"] for t in tables], axis=0)
    fp = np.sum([t["fp"] for t in tables], axis=0)
    fpc = fp / n_cases
    ok = fpc <= max_fp_per_case
    # within the FP bound: most lesions found, then the rule closest to argmax (lowest score and volume filters,
    # highest threshold: the filters stop as far from the true lesions' scores as validation allows, which
    # leaves a margin for unseen cases); none within it: fewest false lesions, then most found
    order = sorted(range(len(rules)), key=lambda i: (0, -tp[i], rules[i][2], rules[i][1], -rules[i][0]) if ok[i]
                   else (1, fp[i], -tp[i], rules[i][2], rules[i][1], -rules[i][0]))
    i = order[0]
    argmax = [j for j, r in enumerate(rules) if r[0] == 0.5 and r[2] == 0.0]
    t, vol, s = rules[i]
    return LesionDetection(t, vol, s, {
        "unit": "validation lesion", "n_ref_lesions": n_ref, "n_cases": n_cases, "rules_tried": len(rules),
        "sensitivity": float(tp[i] / n_ref), "fp_per_case": float(fpc[i]), "met_fp_bound": bool(ok[i]),
        "max_fp_per_case": max_fp_per_case,
        "argmax": ({"sensitivity": float(tp[argmax[0]] / n_ref), "fp_per_case": float(fpc[argmax[0]])}
                   if argmax else None),
        "how": f"highest lesion-wise sensitivity at <= {max_fp_per_case:g} false lesions per validation case "
               "(ties: the rule closest to argmax); matched at IoU > 0.1"})


def load_detection(model_dir: str | Path) -> LesionDetection | None:
    path = Path(model_dir) / DETECTION_FILE
    return LesionDetection.load(path) if path.is_file() else None


__all__ = ["DETECTION_FILE", "LesionDetection", "apply_detection", "candidates", "fit_detection", "load_detection",
           "operating_points"]
