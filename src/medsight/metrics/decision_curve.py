"""Decision-curve analysis (Vickers & Elkin 2006): net benefit of acting on the model over threshold probabilities.

At threshold probability p_t a case is treated when ``prob >= p_t``; net benefit = TP/N - FP/N * p_t / (1 - p_t),
the benefit in true positives per patient after charging each false positive at the odds p_t / (1 - p_t).
References: treat all (everyone treated) = prevalence - (1 - prevalence) * p_t / (1 - p_t); treat none = 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medsight.errors import MetricError
from medsight.metrics._inputs import as_labels, as_probabilities

ArrayLike = Sequence[float] | np.ndarray


def net_benefit(y_true: ArrayLike, prob: ArrayLike, thresholds: ArrayLike | None = None) -> pd.DataFrame:
    """A table with columns threshold, model, treat_all, treat_none (thresholds default to 0.01..0.99)."""
    y = as_labels(y_true)
    p = as_probabilities(prob, y.shape[0])
    n = y.shape[0]
    if n == 0:
        raise MetricError("no cases given; net benefit needs at least one case")
    t = np.linspace(0.01, 0.99, 99) if thresholds is None else np.asarray(thresholds, dtype=float).ravel()
    if t.size == 0 or not np.all((t > 0) & (t < 1)):
        raise MetricError("decision thresholds must lie strictly between 0 and 1")
    # count TP/FP at every threshold at once: cases sorted by probability, positives above each threshold
    order = np.sort(p)
    pos_sorted = np.sort(p[y == 1])
    called = n - np.searchsorted(order, t, side="left")
    tp = pos_sorted.shape[0] - np.searchsorted(pos_sorted, t, side="left")
    fp = called - tp
    odds = t / (1.0 - t)
    prevalence = float(y.mean())
    return pd.DataFrame({
        "threshold": t,
        "model": tp / n - fp / n * odds,
        "treat_all": prevalence - (1.0 - prevalence) * odds,
        "treat_none": np.zeros_like(t),
    })
