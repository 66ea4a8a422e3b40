"""Per-class segmentation metrics honouring anisotropic voxel spacing.

Overlap (Dice, IoU, sensitivity, specificity, precision), volumes in ml, and surface metrics (Hausdorff, HD95,
ASSD, normalised surface Dice) defined exactly as MONAI 1.6 defines them with ``spacing`` given (see
``medsight.metrics.surface`` and docs/metrics.md), computed only inside the masks' bounding box.

Empty masks follow the conventions in docs/metrics.md (after Metrics Reloaded): a class absent from both
prediction and reference is a correct "true negative" case (Dice 1, distances 0, NSD 1); absent from exactly one,
Dice and NSD are 0 and the distances infinite; ratios with a zero denominator are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medsight.errors import MetricError
from medsight.metrics.surface import (METHODS, bounding_box, check_pair, check_spacing, padded_surfaces, pair_distances,
                                      union_box)

KEYS = ("label", "name", "dice", "iou", "sensitivity", "specificity", "precision", "volume_pred_ml",
        "volume_ref_ml", "volume_diff_ml", "hd", "hd95", "assd", "nsd")


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def dice(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice = 2|P & R| / (|P| + |R|); 1.0 when both masks are empty (nothing to find, nothing found)."""
    p, r = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    if p.shape != r.shape:
        raise MetricError(f"prediction shape {p.shape} differs from reference shape {r.shape}")
    denom = int(np.count_nonzero(p)) + int(np.count_nonzero(r))
    return 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(p & r)) / denom


def _percentile(d: np.ndarray, q: float) -> float:
    return float(np.percentile(d, q)) if d.size else 0.0


def mask_metrics(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float] | float | None = None,
                 nsd_tolerance_mm: float = 1.0, surface: bool = True, method: str = "auto") -> dict[str, Any]:
    """All metrics for one binary prediction/reference pair (see the module docstring for empty masks).

    ``surface=False`` skips the distance metrics; ``method`` picks the exact distance algorithm ("auto",
    "edt", "kdtree", "grid"; see ``medsight.metrics.surface``), which changes the speed, never the values.
    """
    p, r = np.asarray(pred_mask, dtype=bool), np.asarray(ref_mask, dtype=bool)
    check_pair(p, r)
    sp = check_spacing(spacing, p.ndim)
    if not math.isfinite(nsd_tolerance_mm) or nsd_tolerance_mm < 0:
        raise MetricError(f"the NSD tolerance must be a finite number of mm >= 0, got {nsd_tolerance_mm}")
    if method not in METHODS:
        raise MetricError(f"distance method must be one of {METHODS}, got {method!r}")
    box = union_box(bounding_box(p), bounding_box(r))
    voxel_ml = float(np.prod(sp)) / 1000.0
    if box is None:
        n_p = n_r = tp = 0
    else:
        pb, rb = p[box], r[box]
        n_p, n_r = int(np.count_nonzero(pb)), int(np.count_nonzero(rb))
        tp = int(np.count_nonzero(pb & rb))
    fp, fn = n_p - tp, n_r - tp
    tn = p.size - tp - fp - fn
    out: dict[str, Any] = {
        "dice": 1.0 if n_p + n_r == 0 else 2.0 * tp / (n_p + n_r),
        "iou": 1.0 if n_p + n_r == 0 else tp / (tp + fp + fn),
        "sensitivity": _ratio(tp, n_r),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, n_p),
        "volume_pred_ml": n_p * voxel_ml,
        "volume_ref_ml": n_r * voxel_ml,
        "volume_diff_ml": (n_p - n_r) * voxel_ml,
        "n_pred_voxels": n_p,
        "n_ref_voxels": n_r,
        "pred_empty": n_p == 0,
        "ref_empty": n_r == 0,
    }
    if surface:
        out.update(_surface_metrics(p, r, box, sp, nsd_tolerance_mm, method))
    return out


def _surface_metrics(p: np.ndarray, r: np.ndarray, box: tuple[slice, ...] | None, sp: tuple[float, ...],
                     tol: float, method: str) -> dict[str, float]:
    if box is None:  # both empty: perfect agreement
        return {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    ep, er = padded_surfaces(p, r, box)
    d_pr, d_rp = pair_distances(ep, er, sp, method)
    n = d_pr.size + d_rp.size
    if d_pr.size == 0 or d_rp.size == 0:  # exactly one empty
        return {"hd": math.inf, "hd95": math.inf, "assd": math.inf, "nsd": 0.0}
    return {
        "hd": float(max(d_pr.max(), d_rp.max())),
        "hd95": max(_percentile(d_pr, 95.0), _percentile(d_rp, 95.0)),
        "assd": float((d_pr.sum() + d_rp.sum()) / n),
        "nsd": float((np.count_nonzero(d_pr <= tol) + np.count_nonzero(d_rp <= tol)) / n),
    }


def segmentation_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], labels: Mapping[int, str],
                         nsd_tolerance_mm: float = 1.0, method: str = "auto") -> list[dict[str, Any]]:
    """One dict per foreground label (label 0 is skipped) comparing two label maps on the same grid.

    Keys: label, name, dice, iou, sensitivity, specificity, precision, volume_pred_ml, volume_ref_ml,
    volume_diff_ml, hd, hd95, assd, nsd (mm where a length), plus n_pred_voxels, n_ref_voxels, pred_empty and
    ref_empty so that aggregators can apply their own empty-case policy.
    """
    p, r = np.asarray(pred), np.asarray(ref)
    check_pair(p, r)
    sp = check_spacing(spacing, p.ndim)
    for name, arr in (("prediction", p), ("reference", r)):
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise MetricError(f"the {name} label map holds NaN or infinite values; label maps must be integers")
    rows = []
    for label, name in labels.items():
        if int(label) == 0:
            continue
        row: dict[str, Any] = {"label": int(label), "name": str(name)}
        row.update(mask_metrics(p == label, r == label, sp, nsd_tolerance_mm, method=method))
        rows.append(row)
    if not rows:
        raise MetricError(f"no foreground labels in {dict(labels)}; give at least one label other than 0")
    return rows
