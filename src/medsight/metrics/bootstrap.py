"""Case-level bootstrap confidence intervals for any metric (percentile method, optionally stratified, seeded).

Cases are resampled with replacement as whole rows of every array passed in, so paired arrays (labels and
scores, prediction and reference statistics) stay aligned. Stratifying by the outcome keeps every resample
with both classes, which AUC-type metrics need. With ``groups`` (a patient id per row) whole groups are
resampled instead (cluster bootstrap): when one patient contributes many correlated rows (slices, lesions,
visits), a row-level interval treats them as independent and comes out too narrow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from medsight.errors import MetricError

log = logging.getLogger(__name__)


def _as_array(a: Any) -> np.ndarray:
    return a.to_numpy() if hasattr(a, "to_numpy") else np.asarray(a)


def bootstrap_samples(n: int, n_boot: int, seed: int = 0, strata: Sequence[Any] | np.ndarray | None = None
                      ) -> np.ndarray:
    """(n_boot, n) row indices; with ``strata`` each stratum is resampled within itself (its size kept)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n))
    st = _as_array(strata).ravel()
    if st.shape[0] != n:
        raise MetricError(f"strata has {st.shape[0]} values but there are {n} cases")
    out = np.empty((n_boot, n), dtype=np.int64)
    col = 0
    for value in np.unique(st.astype(str)):
        members = np.flatnonzero(st.astype(str) == value)
        k = members.shape[0]
        out[:, col:col + k] = members[rng.integers(0, k, size=(n_boot, k))]
        col += k
    return out


def cluster_samples(groups: Sequence[Any] | np.ndarray, n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """Row indices of ``n_boot`` cluster resamples: as many groups as there are, drawn with replacement, each
    bringing all of its rows (so resamples differ in length)."""
    g = _as_array(groups).ravel().astype(str)
    names, inverse = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(names))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[k] for k in draw]) for draw in rng.integers(0, len(names), (n_boot, len(names)))]


def _checked(arrays: tuple[Any, ...]) -> list[np.ndarray]:
    """Arrays with one row per case, all of the same length (MetricError otherwise)."""
    if not arrays:
        raise MetricError("bootstrap needs at least one array of cases")
    arrs = [_as_array(a) for a in arrays]
    n = arrs[0].shape[0]
    for i, a in enumerate(arrs):
        if a.shape[0] != n:
            raise MetricError(f"array {i} has {a.shape[0]} cases but array 0 has {n}; pass one row per case")
    if n == 0:
        raise MetricError("no cases to bootstrap")
    return arrs


def bootstrap_distribution(metric_fn: Callable[..., float], *arrays: Any, n_boot: int = 1000, seed: int = 0,
                           strata: Sequence[Any] | np.ndarray | None = None,
                           groups: Sequence[Any] | np.ndarray | None = None) -> np.ndarray:
    """The metric on each resample; resamples where it is undefined (MetricError or NaN) are dropped."""
    arrs = _checked(arrays)
    n = arrs[0].shape[0]
    if n_boot < 1:
        raise MetricError(f"n_boot must be at least 1, got {n_boot}")
    if groups is not None:
        if strata is not None:
            raise MetricError("pass strata or groups, not both (a cluster bootstrap resamples whole groups)")
        if _as_array(groups).ravel().shape[0] != n:
            raise MetricError(f"groups has {_as_array(groups).ravel().shape[0]} values but there are {n} cases")
        samples: Sequence[np.ndarray] | np.ndarray = cluster_samples(groups, n_boot, seed)
    else:
        samples = bootstrap_samples(n, n_boot, seed, strata)
    values = np.full(n_boot, math.nan)
    for b, idx in enumerate(samples):
        try:
            values[b] = float(metric_fn(*(a[idx] for a in arrs)))
        except MetricError:
            continue
    return values[np.isfinite(values)]


def bootstrap_ci(metric_fn: Callable[..., float], *arrays: Any, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0, strata: Sequence[Any] | np.ndarray | None = None,
                 groups: Sequence[Any] | np.ndarray | None = None) -> tuple[float, float, float]:
    """(point estimate on all cases, lower, upper) percentile interval at level 1 - alpha.

    Resamples on which the metric is undefined are skipped and logged; if more than half are, MetricError
    says to stratify (``strata=y_true``) or gather more cases. The point estimate is NaN-propagating.
    """
    if not 0 < alpha < 1:
        raise MetricError(f"alpha must lie in (0, 1), got {alpha}")
    point = float(metric_fn(*_checked(arrays)))
    values = bootstrap_distribution(metric_fn, *arrays, n_boot=n_boot, seed=seed, strata=strata, groups=groups)
    dropped = n_boot - values.shape[0]
    if dropped:
        log.info("bootstrap: %d of %d resamples had an undefined metric and were skipped", dropped, n_boot)
    if values.shape[0] < max(1, n_boot // 2):
        raise MetricError(
            f"the metric was undefined on {dropped} of {n_boot} bootstrap resamples; stratify by outcome "
            "(strata=y_true) or use more cases"
        )
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)
