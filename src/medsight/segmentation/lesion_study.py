"""Validation lesions after training: which predicted lesions were right, and the referral rule fitted on them.

After a fold is trained, its validation cases are predicted once (no mirroring, on the plan grid, the same
post-processing as ``predict``: argmax, components under ``min_lesion_volume_ml`` dropped) and every predicted lesion
is matched to the reference (``medsight.metrics.lesions``, IoU > 0.1). Each lesion keeps its two referral signals,
``low_confidence`` = 1 - mean lesion probability and ``high_uncertainty`` = mean entropy (nats), and whether it was
a true lesion. The package (``package_segmentation``) pools the folds' lesions and fits the per-lesion
``ReferralPolicy`` on them: thresholds that accept ``TARGET_KEEP`` of the correctly found validation lesions
(``ReferralPolicy.fit_on_validation``), stored as ``lesion_referral.json`` in the package. With fewer than
``MIN_TRUE_LESIONS`` correctly found lesions nothing is fitted: the plan's defaults are stored, marked "not fitted",
with the reason. The same pass gives the fold's validation lesion-wise sensitivity, false positives per case and
the mean Dice of the other (tissue) labels, which a stated validation target is checked against, and the counts of
every candidate detection rule (``lesion_detection``), from which the package fits the rule ``predict`` applies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medsight.image import Geometry
from medsight.metrics.lesions import case_lesions
from medsight.safety.referral import ReferralPolicy
from medsight.segmentation.lesion_detection import candidates, operating_points
from medsight.segmentation.lesions import REFERRAL_FILE, default_policy, measure_lesions
TARGET_KEEP = 0.9  # share of correctly found validation lesions the fitted rule accepts
MIN_TRUE_LESIONS = 5  # fewer correctly found validation lesions: thresholds would be noise, keep the defaults
SIGNALS = ("low_confidence", "high_uncertainty")


def case_lesion_records(prob: np.ndarray, ref: np.ndarray, spacing: Sequence[float], lesion_labels: Mapping[int, str],
                        min_volume_ml: float, case_id: str = "case") -> dict[str, Any]:
    """One case's predicted lesions with their signals and whether each matched a reference lesion.

    ``prob`` is the softmax (C, *S) and ``ref`` the reference label map on the same grid."""
    labels = prob.argmax(0).astype(np.uint8)
    geom = Geometry(tuple(float(s) for s in spacing), (0.0,) * len(spacing),
                    tuple(tuple(float(v) for v in row) for row in np.eye(len(spacing))))
    cleaned, table = measure_lesions(labels, prob, geom, lesion_labels, min_volume_ml)
    lesions, n_ref, n_tp = [], 0, 0
    for value, name in lesion_labels.items():
        rows = [r for r in table.rows if r["label"] == name]
        matched = case_lesions(cleaned == value, ref == value, spacing, case_id)
        assert len(matched.pred) == len(rows), "measured and matched lesions disagree"  # same components, same order
        n_ref, n_tp = n_ref + len(matched.ref), n_tp + matched.tp
        for row, p in zip(rows, matched.pred):
            lesions.append({"case_id": case_id, "label": name, "volume_ml": row["volume_ml"],
                            "low_confidence": round(1.0 - row["mean_probability"], 6),
                            "high_uncertainty": row["mean_entropy"], "true_lesion": bool(p["matched_ref"])})
    return {"case_id": case_id, "n_ref": n_ref, "tp": n_tp, "lesions": lesions}


def lesion_study(probabilities: Callable[[np.ndarray], np.ndarray], cases: Sequence[tuple[str, np.ndarray, np.ndarray]],
                 spacing: Sequence[float], postprocess: Mapping[str, Any]) -> dict[str, Any] | None:
    """Records of every validation case (id, preprocessed image, plan-grid label) and the fold's lesion-wise
    sensitivity / FPs per case; None when the plan names no lesion label. ``probabilities(image)`` is the softmax
    (C, *S) on the plan grid (3D configurations: ``spacing`` is that grid's)."""
    lesion_labels = {int(k): str(v) for k, v in (postprocess.get("lesion_labels") or {}).items()}
    if not lesion_labels or not cases:
        return None
    min_ml = float(postprocess.get("min_lesion_volume_ml", 0.0))
    rules = candidates(min_ml)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    per_case, tissue, points = [], [], np.zeros((len(rules), 2), dtype=np.int64)
    for cid, image, label in cases:
        prob = probabilities(image)
        per_case.append(case_lesion_records(prob, label, spacing, lesion_labels, min_ml, cid))
        for value in lesion_labels:
            points += np.asarray(operating_points(prob, label, value, voxel_ml, rules)[1], dtype=np.int64)
        pred = prob.argmax(0)
        tissue += [_dice(pred == c, label == c) for c in range(1, prob.shape[0])
                   if c not in lesion_labels and (label == c).any()]
    n_ref = sum(c["n_ref"] for c in per_case)
    tp = sum(c["tp"] for c in per_case)
    fp = sum(1 for c in per_case for r in c["lesions"] if not r["true_lesion"])
    return {"n_cases": len(per_case), "unit": "validation lesion", "n_ref_lesions": n_ref, "tp": tp, "fp": fp,
            "sensitivity": tp / n_ref if n_ref else None, "fp_per_case": fp / len(per_case),
            "tissue_dice_mean": float(np.mean(tissue)) if tissue else None,
            "detection": {"rules": [list(r) for r in rules], "tp": points[:, 0].tolist(), "fp": points[:, 1].tolist(),
                          "n_ref": n_ref, "n_cases": len(per_case)},  # lesion_detection.fit_detection
            "lesions": [r for c in per_case for r in c["lesions"]]}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def fit_lesion_referral(studies: Sequence[Mapping[str, Any]], postprocess: Mapping[str, Any],
                        target_keep: float = TARGET_KEEP) -> ReferralPolicy:
    """The per-lesion referral rule from the folds' validation lesions (see the module docstring)."""
    lesions = [r for s in studies for r in s.get("lesions", [])]
    true = [r for r in lesions if r["true_lesion"]]
    false = [r for r in lesions if not r["true_lesion"]]
    if len(true) < MIN_TRUE_LESIONS:
        policy = default_policy(postprocess)
        policy.fit = {"fitted": False, "n_true_lesions": len(true), "n_false_lesions": len(false),
                      "reason": f"{len(true)} correctly found validation lesions (fewer than {MIN_TRUE_LESIONS}): "
                                "the plan's default thresholds are kept"}
        return policy
    policy = ReferralPolicy.fit_on_validation({k: [r[k] for r in true] for k in SIGNALS}, target_keep)
    referred_false = sum(1 for d in policy.decide_many({k: [r[k] for r in false] for k in SIGNALS}) if not d.accepted) \
        if false else 0
    policy.fit.update({"fitted": True, "unit": "validation lesion", "n_true_lesions": len(true),
                       "n_false_lesions": len(false),
                       "false_lesions_referred": (referred_false / len(false)) if false else None,
                       "how": f"thresholds accept {target_keep:g} of the correctly found (matched, IoU > 0.1) "
                              "validation lesions of every fold; the share of false-positive validation lesions "
                              "they refer is recorded beside"})
    return policy


__all__ = ["REFERRAL_FILE", "case_lesion_records", "fit_lesion_referral", "lesion_study"]
