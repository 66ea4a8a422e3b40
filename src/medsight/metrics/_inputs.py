"""Input checks shared by the metric modules: turn bad inputs into one-line MetricErrors, not NumPy surprises."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsight.errors import MetricError


def as_labels(y_true: Sequence[float] | np.ndarray, name: str = "y_true") -> np.ndarray:
    """Binary labels as an int8 vector; raises on NaN or values other than 0/1 (naming the first bad row)."""
    y = np.asarray(y_true, dtype=float).ravel()
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricError(f"{name} must hold only 0 and 1; row {i} is {y[i]!r}")
    return y.astype(np.int8)


def as_scores(y_score: Sequence[float] | np.ndarray, n: int | None = None, name: str = "y_score") -> np.ndarray:
    """Scores as a float64 vector of length ``n``; raises on NaN/inf (naming the first bad row)."""
    s = np.asarray(y_score, dtype=float).ravel()
    if n is not None and s.shape[0] != n:
        raise MetricError(f"{name} has {s.shape[0]} values but the labels have {n}; give one score per case")
    bad = ~np.isfinite(s)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricError(f"{name} row {i} is {s[i]!r}; scores must be finite (drop or impute missing predictions)")
    return s


def as_probabilities(prob: Sequence[float] | np.ndarray, n: int | None = None, name: str = "prob") -> np.ndarray:
    """Scores that must lie in [0, 1]."""
    p = as_scores(prob, n, name)
    bad = (p < 0) | (p > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MetricError(f"{name} row {i} is {p[i]!r}; probabilities must lie in [0, 1]")
    return p


def labels_and_scores(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray,
                      need_both_classes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    y = as_labels(y_true)
    s = as_scores(y_score, y.shape[0])
    if y.shape[0] == 0:
        raise MetricError("no cases given; metrics need at least one case")
    if need_both_classes and (y.min() == y.max()):
        only = "positive" if y[0] == 1 else "negative"
        raise MetricError(f"all {y.shape[0]} cases are {only}; this metric needs both positive and negative cases")
    return y, s
