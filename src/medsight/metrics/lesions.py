"""Lesion-wise (instance) evaluation: connected components matched one-to-one between prediction and reference.

Following Metrics Reloaded's advice for instance tasks, a voxel Dice of a lesion class says little when a case
holds several lesions of very different size: one large lesion hides ten missed small ones. Here:

- Lesions are the connected components of a binary mask, full connectivity (26-neighbourhood in 3D, 8 in 2D), so
  two lesions that touch at a corner or an edge are one component.
- Matching rule: a predicted and a reference lesion may match when their IoU exceeds ``iou_threshold`` (default
  0.1); among those pairs the one-to-one matching of largest total IoU is taken (Hungarian algorithm). A lesion
  split into two predicted pieces therefore gives one true positive and one false positive; two reference
  lesions merged into one predicted blob give one true positive and one false negative.
- Per case: TP, FP, FN, the summed IoU of the matches; per reference lesion its Dice with the matched
  prediction (0 when missed).
- Over a dataset (pooled counts): sensitivity TP/(TP+FN), precision TP/(TP+FP), F1 2TP/(2TP+FP+FN), FP per case,
  panoptic quality PQ = SQ x RQ with SQ = mean IoU of the matches and RQ = F1 (Kirillov et al. 2019); bootstrap
  CIs resample whole patients (cluster bootstrap), since one patient's lesions and visits are correlated.
- FROC: every predicted lesion carries a score (its maximum lesion probability, or 1 without probabilities);
  keeping lesions scoring >= t gives one operating point (sensitivity, FP per case). The matching is done once
  on all predicted lesions, as in LUNA16's FROC (``medsight.metrics.detection``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from medsight.errors import MetricError
from medsight.metrics.bootstrap import bootstrap_ci
from medsight.metrics.detection import CPM_FP_RATES, froc_curve, sensitivity_at_fp_rates

IOU_THRESHOLD = 0.1


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components with full connectivity: (label image 0..n, n)."""
    m = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(m, structure=ndimage.generate_binary_structure(m.ndim, m.ndim))
    return labels, int(n)


def iou_matrix(pred_labels: np.ndarray, n_pred: int, ref_labels: np.ndarray, n_ref: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(IoU, intersection voxels, predicted sizes, reference sizes); matrices are (n_pred, n_ref)."""
    p, r = pred_labels.ravel(), ref_labels.ravel()
    size_p = np.bincount(p, minlength=n_pred + 1)[1:]
    size_r = np.bincount(r, minlength=n_ref + 1)[1:]
    both = (p > 0) & (r > 0)
    inter = np.zeros((n_pred, n_ref), dtype=np.int64)
    if both.any():
        np.add.at(inter, (p[both] - 1, r[both] - 1), 1)
    union = size_p[:, None] + size_r[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return iou, inter, size_p, size_r


def match(iou: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> list[tuple[int, int]]:
    """(pred index, ref index) pairs: the one-to-one matching of largest total IoU among pairs above threshold."""
    if iou.size == 0:
        return []
    eligible = np.where(iou > iou_threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(eligible, maximize=True)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if eligible[i, j] > 0]


@dataclass
class CaseLesions:
    """One case's lesions and their matching (indices are 1-based component ids)."""

    case_id: str
    patient_id: str
    ref: list[dict[str, Any]] = field(default_factory=list)
    pred: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tp(self) -> int:
        return sum(1 for r in self.ref if r["matched_pred"] > 0)

    @property
    def fn(self) -> int:
        return len(self.ref) - self.tp

    @property
    def fp(self) -> int:
        return sum(1 for p in self.pred if p["matched_ref"] == 0)

    @property
    def sum_iou(self) -> float:
        return float(sum(r["iou"] for r in self.ref if r["matched_pred"] > 0))

    def counts(self) -> dict[str, Any]:
        tp, fp, fn = self.tp, self.fp, self.fn
        denom = tp + 0.5 * fp + 0.5 * fn
        return {"case_id": self.case_id, "patient_id": self.patient_id, "n_ref": len(self.ref),
                "n_pred": len(self.pred), "tp": tp, "fp": fp, "fn": fn, "sum_iou": self.sum_iou,
                "pq": self.sum_iou / denom if denom else math.nan}


def case_lesions(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], case_id: str = "case",
                 patient_id: str | None = None, scores: np.ndarray | None = None,
                 iou_threshold: float = IOU_THRESHOLD) -> CaseLesions:
    """Match one case's lesions. ``scores`` (a probability map, same shape) gives each predicted lesion the
    maximum probability inside it, the score FROC thresholds on; without it every lesion scores 1."""
    p, r = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    if p.shape != r.shape:
        raise MetricError(f"case {case_id}: prediction shape {p.shape} differs from reference shape {r.shape}")
    if scores is not None and np.shape(scores) != p.shape:
        raise MetricError(f"case {case_id}: probability map shape {np.shape(scores)} differs from {p.shape}")
    if not 0.0 <= iou_threshold < 1.0:
        raise MetricError(f"the lesion IoU threshold must lie in [0, 1), got {iou_threshold}")
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=float))) / 1000.0
    pl, n_p = components(p)
    rl, n_r = components(r)
    iou, inter, size_p, size_r = iou_matrix(pl, n_p, rl, n_r)
    pairs = dict(match(iou, iou_threshold))  # pred -> ref
    by_ref = {j: i for i, j in pairs.items()}
    if scores is not None and n_p:
        score = ndimage.maximum(np.asarray(scores, dtype=float), pl, index=np.arange(1, n_p + 1))
    else:
        score = np.ones(n_p)
    out = CaseLesions(case_id, patient_id or case_id)
    for j in range(n_r):
        i = by_ref.get(j)
        out.ref.append({"id": j + 1, "volume_ml": float(size_r[j]) * voxel_ml,
                        "matched_pred": 0 if i is None else i + 1,
                        "iou": 0.0 if i is None else float(iou[i, j]),
                        "dice": 0.0 if i is None else 2.0 * float(inter[i, j]) / float(size_p[i] + size_r[j])})
    for i in range(n_p):
        j = pairs.get(i)
        out.pred.append({"id": i + 1, "volume_ml": float(size_p[i]) * voxel_ml, "score": float(score[i]),
                         "matched_ref": 0 if j is None else j + 1, "iou": 0.0 if j is None else float(iou[i, j])})
    return out


# ------------------------------------------------------------------------------------------- dataset summary
def _pooled(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, sum_iou: np.ndarray) -> dict[str, float]:
    TP, FP, FN, S = float(tp.sum()), float(fp.sum()), float(fn.sum()), float(sum_iou.sum())
    f1 = 2 * TP / (2 * TP + FP + FN) if (TP + FP + FN) else math.nan
    sq = S / TP if TP else math.nan
    return {"sensitivity": TP / (TP + FN) if TP + FN else math.nan,
            "precision": TP / (TP + FP) if TP + FP else math.nan, "f1": f1,
            "fp_per_case": FP / len(tp), "sq": sq, "pq": S / (TP + 0.5 * FP + 0.5 * FN) if (TP + FP + FN) else math.nan}


POOLED_METRICS = ("sensitivity", "precision", "f1", "fp_per_case", "sq", "pq")


def summarise_lesions(cases: Sequence[CaseLesions], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
                      ) -> dict[str, Any]:
    """Pooled lesion-wise metrics with patient-level bootstrap CIs, per-lesion Dice, and the FROC curve."""
    if not cases:
        raise MetricError("no cases to summarise lesions over")
    tp = np.array([c.tp for c in cases], dtype=float)
    fp = np.array([c.fp for c in cases], dtype=float)
    fn = np.array([c.fn for c in cases], dtype=float)
    s = np.array([c.sum_iou for c in cases], dtype=float)
    patients = np.array([c.patient_id for c in cases], dtype=str)
    point = _pooled(tp, fp, fn, s)
    out: dict[str, Any] = {"n_cases": len(cases), "n_patients": int(len(set(patients))),
                           "n_ref_lesions": int(tp.sum() + fn.sum()), "n_pred_lesions": int(tp.sum() + fp.sum()),
                           "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum()), "metrics": {}}
    for key in POOLED_METRICS:
        out["metrics"][key] = _with_ci(lambda a, b, c, d, k=key: _pooled(a, b, c, d)[k], point[key],
                                       (tp, fp, fn, s), patients, n_boot, alpha, seed)
    dice = np.array([r["dice"] for c in cases for r in c.ref], dtype=float)
    dice_groups = np.array([c.patient_id for c in cases for _ in c.ref], dtype=str)
    out["metrics"]["lesion_dice"] = (_with_ci(lambda d: float(np.mean(d)), float(np.mean(dice)), (dice,), dice_groups,
                                              n_boot, alpha, seed) if dice.size else _nan_ci())
    out["lesion_dice_median"] = float(np.median(dice)) if dice.size else math.nan
    out["froc"] = froc(cases)
    return out


def _nan_ci() -> dict[str, float]:
    return {"value": math.nan, "lo": math.nan, "hi": math.nan}


def _with_ci(fn: Any, point: float, arrays: tuple[np.ndarray, ...], groups: np.ndarray, n_boot: int, alpha: float,
             seed: int) -> dict[str, float]:
    if not math.isfinite(point):
        return _nan_ci()

    def metric(*a: np.ndarray) -> float:
        v = fn(*a)
        if not math.isfinite(v):
            raise MetricError("undefined on this resample")
        return v

    try:
        _, lo, hi = bootstrap_ci(metric, *arrays, n_boot=n_boot, alpha=alpha, seed=seed, groups=groups)
    except MetricError:
        lo = hi = math.nan
    return {"value": float(point), "lo": lo, "hi": hi}


def froc(cases: Sequence[CaseLesions]) -> dict[str, Any]:
    """FROC over every predicted lesion's score; sensitivity at the LUNA16 FP rates and at <= 1 FP per case."""
    scores, hits, offset = [], [], 0
    for c in cases:
        for p in c.pred:
            scores.append(p["score"])
            hits.append(offset + p["matched_ref"] - 1 if p["matched_ref"] else -1)
        offset += len(c.ref)
    if offset == 0:
        return {"points": [], "sensitivity_at_fp": {}, "sensitivity_at_1fp": math.nan,
                "note": "no reference lesions: FROC undefined"}
    curve = froc_curve(np.asarray(scores, dtype=float), np.asarray(hits, dtype=np.int64), offset, len(cases))
    at = sensitivity_at_fp_rates(curve, CPM_FP_RATES)
    ok = curve["fp_per_image"] <= 1.0
    return {"points": [{"threshold": float(t), "fp_per_case": float(f), "sensitivity": float(v)}
                       for t, f, v in zip(curve["threshold"], curve["fp_per_image"], curve["sensitivity"])],
            "sensitivity_at_fp": {f"{r:g}": float(v) for r, v in zip(CPM_FP_RATES, at)},
            "sensitivity_at_1fp": float(curve["sensitivity"][ok].max()),
            "cpm": float(np.mean(at))}


def lesion_rows(cases: Sequence[CaseLesions], label_name: str = "lesion") -> list[dict[str, Any]]:
    """One row per lesion (reference and predicted) for lesions.csv."""
    rows = []
    for c in cases:
        for r in c.ref:
            rows.append({"case_id": c.case_id, "patient_id": c.patient_id, "label": label_name, "source": "reference",
                         "lesion_id": r["id"], "volume_ml": r["volume_ml"], "matched_id": r["matched_pred"],
                         "iou": r["iou"], "dice": r["dice"], "score": math.nan})
        for p in c.pred:
            rows.append({"case_id": c.case_id, "patient_id": c.patient_id, "label": label_name, "source": "prediction",
                         "lesion_id": p["id"], "volume_ml": p["volume_ml"], "matched_id": p["matched_ref"],
                         "iou": p["iou"], "dice": math.nan, "score": p["score"]})
    return rows


LESION_WORDS = ("lesion", "tumour", "tumor", "nodule", "metasta", "cancer")


def is_lesion_name(name: str) -> bool:
    return any(w in name.lower() for w in LESION_WORDS)


def lesion_label(labels: Mapping[int, str]) -> dict[int, str]:
    """The lesion-like labels (name holds lesion, tumour/tumor, nodule, metastasis, cancer); every label if none."""
    found = {k: v for k, v in labels.items() if is_lesion_name(v)}
    return found or dict(labels)


def evaluate_lesion_folders(pred_dir: Any, ref_dir: Any, labels: Mapping[int, str],
                            patients: Mapping[str, str] | None = None, iou_threshold: float = IOU_THRESHOLD,
                            quiet: bool = False) -> dict[int, list[CaseLesions]]:
    """Label value -> matched lesions of every case, for NIfTI label maps matched by case id.

    A ``{case}_probabilities.nii.gz`` beside a prediction (``medsight predict --probabilities``) scores each
    predicted lesion by its maximum class probability, so FROC has a curve rather than one point."""
    from pathlib import Path

    from tqdm import tqdm

    from medsight.io.nifti import read_nifti
    from medsight.metrics.tables import match_cases

    out: dict[int, list[CaseLesions]] = {k: [] for k in labels}
    for case_id, p_path, r_path in tqdm(match_cases(Path(pred_dir), Path(ref_dir)), desc="evaluate lesions",
                                        unit="case", disable=quiet):
        pred, ref = read_nifti(p_path), read_nifti(r_path)
        if pred.array.shape != ref.array.shape:
            raise MetricError(f"case {case_id}: prediction shape {pred.array.shape} differs from reference "
                              f"{ref.array.shape}; resample the prediction onto the reference grid", p_path)
        prob_path = Path(pred_dir) / f"{case_id}_probabilities.nii.gz"
        prob = read_nifti(prob_path).array if prob_path.is_file() else None
        for value in labels:
            score = prob[..., value] if prob is not None and prob.ndim == 4 and prob.shape[-1] > value else None
            out[value].append(case_lesions(pred.array == value, ref.array == value, ref.geometry.spacing, case_id,
                                           (patients or {}).get(case_id), score, iou_threshold))
    return out
