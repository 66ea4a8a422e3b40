"""Classification metrics: ROC AUC with a DeLong interval, PR AUC, threshold metrics, kappa, confusion matrix.

Convention everywhere: a case is called positive when ``score >= threshold``. Undefined ratios (a PPV with no
predicted positives, a sensitivity with no positive cases) are NaN, never a silent 0; inputs that make a metric
meaningless (NaN scores, one class only where both are needed) raise ``MetricError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import norm, rankdata

from medsight.errors import MetricError
from medsight.metrics._inputs import as_labels, as_scores, labels_and_scores

ArrayLike = Sequence[float] | np.ndarray


def roc_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Area under the ROC curve (ties count one half): the Mann-Whitney U statistic over n_pos * n_neg."""
    y, s = labels_and_scores(y_true, y_score, need_both_classes=True)
    pos = s[y == 1]
    m, n = pos.shape[0], s.shape[0] - pos.shape[0]
    # a bootstrap calls this thousands of times: the positives' joint midranks from one sort and two binary
    # searches (midrank = (#below + #not above + 1) / 2) instead of scipy's rankdata of every case. Midranks are
    # half-integers, so their sum is exact whatever the order and the AUC is _delong's to the last bit
    ordered = np.sort(s)
    twice = np.searchsorted(ordered, pos, "left") + np.searchsorted(ordered, pos, "right") + 1
    return float((int(twice.sum()) / 2.0 - m * (m + 1) / 2.0) / (m * n))


def delong_variance(y_true: ArrayLike, y_score: ArrayLike) -> tuple[float, float]:
    """(AUC, variance of the AUC) by DeLong et al. 1988, computed with Sun & Xu's 2014 midrank algorithm.

    O(n log n) instead of the O(n_pos * n_neg) pairwise placements; the variance is NaN when either class
    has a single case (its sample variance is undefined).
    """
    y, s = labels_and_scores(y_true, y_score, need_both_classes=True)
    return _delong(y, s)


def _delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    pos, neg = s[y == 1], s[y == 0]
    m, n = pos.shape[0], neg.shape[0]
    tx, ty = rankdata(pos), rankdata(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
    v10 = (tz[:m] - tx) / n  # per positive: fraction of negatives it outranks (structural component)
    v01 = 1.0 - (tz[m:] - ty) / m  # per negative: fraction of positives that outrank it
    if m < 2 or n < 2:
        return auc, math.nan
    var = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    return auc, var


def roc_auc_delong(y_true: ArrayLike, y_score: ArrayLike, alpha: float = 0.05) -> tuple[float, float, float]:
    """(AUC, lower, upper): the two-sided 1-alpha DeLong interval AUC +- z * SE, clipped to [0, 1] (as pROC).

    Raises MetricError when all cases share one class or a score is NaN. The bounds are NaN when a class has
    a single case.
    """
    if not 0 < alpha < 1:
        raise MetricError(f"alpha must lie in (0, 1), got {alpha}")
    auc, var = delong_variance(y_true, y_score)
    if not math.isfinite(var):
        return auc, math.nan, math.nan
    half = float(norm.ppf(1 - alpha / 2)) * math.sqrt(max(var, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def delong_test(y_true: ArrayLike, score_a: ArrayLike, score_b: ArrayLike) -> tuple[float, float]:
    """(AUC_a - AUC_b, two-sided p-value) for two models scored on the same cases (DeLong's paired test)."""
    y = as_labels(y_true)
    a, b = as_scores(score_a, y.shape[0], "score_a"), as_scores(score_b, y.shape[0], "score_b")
    labels_and_scores(y, a, need_both_classes=True)
    m, n = int((y == 1).sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        raise MetricError("DeLong's test needs at least two positive and two negative cases")
    comps = []
    for s in (a, b):
        pos, neg = s[y == 1], s[y == 0]
        tz = rankdata(np.concatenate([pos, neg]))
        comps.append(((tz[:m] - rankdata(pos)) / n, 1.0 - (tz[m:] - rankdata(neg)) / m,
                      float((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))))
    s10 = np.cov(np.vstack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.vstack([comps[0][1], comps[1][1]]))
    cov = s10 / m + s01 / n
    diff = comps[0][2] - comps[1][2]
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 0:
        return diff, 1.0 if diff == 0 else 0.0
    z = diff / math.sqrt(var)
    return diff, float(2 * norm.sf(abs(z)))


def pr_auc(y_true: ArrayLike, y_score: ArrayLike) -> float:
    """Average precision: sum over distinct thresholds of (R_k - R_{k-1}) * P_k (no interpolation).

    This is the step-wise PR area scikit-learn's ``average_precision_score`` reports; it needs at least one
    positive case (MetricError otherwise).
    """
    y, s = labels_and_scores(y_true, y_score)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise MetricError("PR AUC is undefined without positive cases")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.shape[0] - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    predicted = last_of_tie + 1
    precision = tp / predicted
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_curve_points(y_true: ArrayLike, y_score: ArrayLike) -> dict[str, np.ndarray]:
    """ROC operating points at every distinct threshold, from (0, 0) to (1, 1): fpr, tpr, threshold."""
    y, s = labels_and_scores(y_true, y_score, need_both_classes=True)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.shape[0] - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    return {
        "fpr": np.r_[0.0, fp / (y == 0).sum()],
        "tpr": np.r_[0.0, tp / (y == 1).sum()],
        "threshold": np.r_[np.inf, s_sorted[last]],
    }


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def binary_metrics(y_true: ArrayLike, y_score: ArrayLike, threshold: float) -> dict[str, float]:
    """Confusion counts and rates when ``score >= threshold`` calls a case positive.

    Returns sensitivity, specificity, ppv, npv, f1, accuracy, tp, fp, tn, fn. A ratio whose denominator is zero
    is NaN (e.g. sensitivity when there are no positive cases); F1 is NaN when there are neither positive cases
    nor positive calls.
    """
    y, s = labels_and_scores(y_true, y_score)
    if not math.isfinite(threshold):
        raise MetricError(f"threshold must be finite, got {threshold}")
    called = s >= threshold
    tp = int(np.sum(called & (y == 1)))
    fp = int(np.sum(called & (y == 0)))
    fn = int(np.sum(~called & (y == 1)))
    tn = int(np.sum(~called & (y == 0)))
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def threshold_for_sensitivity(y_true: ArrayLike, y_score: ArrayLike, target: float) -> float:
    """The highest threshold whose sensitivity (score >= threshold) reaches ``target``.

    That is the k-th highest positive score with k = ceil(target * n_pos); the highest such threshold gives the
    best specificity at that sensitivity. Raises MetricError without positive cases or a target outside (0, 1].
    """
    y, s = labels_and_scores(y_true, y_score)
    if not 0 < target <= 1:
        raise MetricError(f"target sensitivity must lie in (0, 1], got {target}")
    pos = np.sort(s[y == 1])[::-1]
    if pos.shape[0] == 0:
        raise MetricError("no positive cases: a threshold for a target sensitivity cannot be chosen")
    k = math.ceil(target * pos.shape[0] - 1e-12)
    return float(pos[max(k, 1) - 1])


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int | None = None) -> np.ndarray:
    """Counts C[i, j] of cases with true class i predicted as j, for integer classes 0..n_classes-1."""
    t, p = _as_classes(y_true, "y_true"), _as_classes(y_pred, "y_pred")
    if t.shape != p.shape:
        raise MetricError(f"y_true has {t.shape[0]} cases but y_pred has {p.shape[0]}")
    k = int(max(t.max(initial=0), p.max(initial=0)) + 1) if n_classes is None else int(n_classes)
    if t.size and max(t.max(), p.max()) >= k:
        raise MetricError(f"a class index is >= n_classes={k}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _as_classes(v: ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=float).ravel()
    bad = ~np.isfinite(a) | (a < 0) | (a != np.round(a))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricError(f"{name} row {i} is {a[i]!r}; classes must be non-negative integers")
    return a.astype(np.int64)


def cohen_kappa(y_true: ArrayLike, y_pred: ArrayLike, weights: str | None = "quadratic",
                n_classes: int | None = None) -> float:
    """Cohen's kappa, unweighted, 'linear' or 'quadratic' weighted (ordinal grades such as DR severity).

    kappa = 1 - sum(W * O) / sum(W * E), O the observed confusion matrix, E the outer product of its margins
    over N, W_ij = 0/1, |i-j| or (i-j)^2. NaN when the raters agree trivially (every case in one class).
    """
    o = confusion_matrix(y_true, y_pred, n_classes).astype(float)
    k = o.shape[0]
    n = o.sum()
    if n == 0:
        raise MetricError("no cases given")
    e = np.outer(o.sum(1), o.sum(0)) / n
    i, j = np.indices((k, k))
    if weights is None:
        w = (i != j).astype(float)
    elif weights == "linear":
        w = np.abs(i - j).astype(float)
    elif weights == "quadratic":
        w = (i - j).astype(float) ** 2
    else:
        raise MetricError(f"weights must be None, 'linear' or 'quadratic', got {weights!r}")
    denom = float((w * e).sum())
    return 1.0 - float((w * o).sum()) / denom if denom > 0 else math.nan


def multilabel_metrics(y_true: np.ndarray, y_score: np.ndarray, names: Sequence[str],
                       thresholds: Mapping[str, float] | None = None, alpha: float = 0.05) -> list[dict[str, float]]:
    """One row per label of an (n_cases, n_labels) problem: AUC with DeLong CI, PR AUC and threshold metrics.

    Labels with a single class present get NaN AUC/PR AUC (reported, not raised) so one rare label does not hide
    the others. ``thresholds`` defaults to 0.5 for each label.
    """
    yt, ys = np.asarray(y_true, dtype=float), np.asarray(y_score, dtype=float)
    if yt.ndim != 2 or yt.shape != ys.shape or yt.shape[1] != len(names):
        raise MetricError(f"expected y_true and y_score of shape (n_cases, {len(names)}), "
                          f"got {yt.shape} and {ys.shape}")
    rows = []
    for c, name in enumerate(names):
        thr = float((thresholds or {}).get(name, 0.5))
        row: dict[str, float] = {"label": name, "n": int(yt.shape[0]), "n_pos": int(np.nansum(yt[:, c])),
                                 "threshold": thr}
        y, s = labels_and_scores(yt[:, c], ys[:, c])
        if y.min() != y.max():
            row["auc"], row["auc_lo"], row["auc_hi"] = roc_auc_delong(y, s, alpha)
            row["pr_auc"] = pr_auc(y, s)
        else:
            row["auc"] = row["auc_lo"] = row["auc_hi"] = row["pr_auc"] = math.nan
        row.update(binary_metrics(y, s, thr))
        rows.append(row)
    return rows
