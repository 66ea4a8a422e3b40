"""Calibration of predicted probabilities: Brier score, expected/maximum calibration error, reliability curve.

Binning follows scikit-learn's ``calibration_curve`` so the points can be compared with it: ``"uniform"`` uses
``n_bins`` equal-width bins on [0, 1], ``"quantile"`` uses edges at the quantiles of the predictions (equal-mass
bins); a prediction equal to an inner edge falls in the lower bin. ECE weights each non-empty bin's
|mean prediction - observed frequency| by its share of cases; MCE is the largest such gap.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsight.errors import MetricError
from medsight.metrics._inputs import as_labels, as_probabilities

ArrayLike = Sequence[float] | np.ndarray


def _inputs(y_true: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = as_labels(y_true)
    p = as_probabilities(prob, y.shape[0])
    if y.shape[0] == 0:
        raise MetricError("no cases given; calibration needs at least one case")
    return y, p


def brier_score(y_true: ArrayLike, prob: ArrayLike) -> float:
    """Mean squared difference between the predicted probability and the 0/1 outcome (lower is better)."""
    y, p = _inputs(y_true, prob)
    return float(np.mean((p - y) ** 2))


def _bins(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if n_bins < 1:
        raise MetricError(f"n_bins must be at least 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.percentile(p, np.linspace(0, 100, n_bins + 1))
    else:
        raise MetricError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    return np.searchsorted(edges[1:-1], p)


def reliability_curve(y_true: ArrayLike, prob: ArrayLike, n_bins: int = 15, strategy: str = "uniform"
                      ) -> dict[str, np.ndarray]:
    """Per non-empty bin: mean predicted probability, observed fraction of positives, number of cases."""
    y, p = _inputs(y_true, prob)
    ids = _bins(p, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y.astype(float), minlength=n_bins)
    keep = count > 0
    return {
        "bin_mean_pred": sum_p[keep] / count[keep],
        "bin_frac_pos": sum_y[keep] / count[keep],
        "bin_count": count[keep],
    }


def expected_calibration_error(y_true: ArrayLike, prob: ArrayLike, n_bins: int = 15, strategy: str = "uniform"
                               ) -> float:
    """ECE = sum_b (n_b / N) |mean_pred_b - frac_pos_b| over non-empty bins."""
    c = reliability_curve(y_true, prob, n_bins, strategy)
    gaps = np.abs(c["bin_mean_pred"] - c["bin_frac_pos"])
    return float(np.sum(gaps * c["bin_count"]) / np.sum(c["bin_count"]))


def maximum_calibration_error(y_true: ArrayLike, prob: ArrayLike, n_bins: int = 15, strategy: str = "uniform"
                              ) -> float:
    """MCE = the largest |mean_pred_b - frac_pos_b| over non-empty bins."""
    c = reliability_curve(y_true, prob, n_bins, strategy)
    return float(np.max(np.abs(c["bin_mean_pred"] - c["bin_frac_pos"])))
