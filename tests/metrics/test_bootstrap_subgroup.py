"""Bootstrap CIs against normal theory for a mean and against their own definition; subgroup tables by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from medsight.errors import MetricError
from medsight.metrics.bootstrap import bootstrap_ci, bootstrap_samples, cluster_samples
from medsight.metrics.classification import roc_auc
from medsight.metrics.subgroup import age_bands, metric_by_group, subgroup_table


def test_bootstrap_of_a_mean_matches_normal_theory() -> None:
    x = np.random.default_rng(0).normal(10.0, 2.0, 400)
    point, lo, hi = bootstrap_ci(np.mean, x, n_boot=2000, seed=1)
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert point == pytest.approx(x.mean())
    assert lo == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert hi == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)


def test_cluster_bootstrap_widens_the_interval_by_the_design_effect() -> None:
    """400 patients, each contributing m = 9 identical rows (perfectly correlated): the patient-level interval
    is that of 400 independent values (normal theory), the row-level one sqrt(9) = 3 times too narrow."""
    k, m = 400, 9
    x = np.random.default_rng(5).normal(0.0, 1.0, k)
    rows, patients = np.repeat(x, m), np.repeat(np.arange(k), m)
    se = x.std(ddof=1) / math.sqrt(k)
    _, lo, hi = bootstrap_ci(np.mean, rows, n_boot=2000, seed=1, groups=patients)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.12)
    _, lo_rows, hi_rows = bootstrap_ci(np.mean, rows, n_boot=2000, seed=1)
    assert (hi - lo) / (hi_rows - lo_rows) == pytest.approx(3.0, rel=0.15)
    for idx in cluster_samples(patients[:45], 20, seed=0):  # whole patients only: counts are multiples of 9
        assert (np.bincount(patients[:45][idx], minlength=5) % m == 0).all()
    with pytest.raises(MetricError, match="not both"):
        bootstrap_ci(np.mean, rows, strata=patients, groups=patients)


def test_seeded_and_stratified() -> None:
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(8), np.zeros(92)].astype(int)
    s = y + rng.normal(size=100)
    assert bootstrap_ci(roc_auc, y, s, n_boot=200, seed=3) == bootstrap_ci(roc_auc, y, s, n_boot=200, seed=3)
    idx = bootstrap_samples(100, 50, seed=0, strata=y)
    assert (y[idx].sum(axis=1) == 8).all()  # every resample keeps the 8 positives' count
    point, lo, hi = bootstrap_ci(roc_auc, y, s, n_boot=300, strata=y)
    assert point == pytest.approx(roc_auc_score(y, s)) and lo < point < hi


def test_undefined_resamples_are_reported() -> None:
    def picky(x: np.ndarray) -> float:  # defined only when case 0 is drawn exactly once (~37% of resamples)
        if (x == 0).sum() != 1:
            raise MetricError("undefined")
        return float(x.mean())

    with pytest.raises(MetricError, match="stratify"):
        bootstrap_ci(picky, np.arange(40), n_boot=200)
    y = np.r_[np.zeros(39), 1].astype(int)  # one positive (the top score): ~37% of resamples lack it and are skipped
    point, lo, hi = bootstrap_ci(roc_auc, y, np.linspace(0, 1, 40), n_boot=200)
    assert point == 1.0 and lo == hi == 1.0
    with pytest.raises(MetricError, match="array 1 has 3 cases"):
        bootstrap_ci(np.mean, np.ones(4), np.ones(3))


def test_metric_by_group_values_gaps_and_flags() -> None:
    rng = np.random.default_rng(4)
    n = 240
    site = np.repeat(["site_A", "site_B", "site_C", "tiny"], [100, 80, 55, 5])
    y = rng.integers(0, 2, n)
    noise = np.where(site == "site_C", 2.5, 0.7)  # the external site is harder
    s = y + rng.normal(size=n) * noise
    df = metric_by_group(roc_auc, site, y, s, min_cases=20, n_boot=200, stratify_by=0, attribute="site")
    by = df.set_index("group")
    for g in ("site_A", "site_B", "site_C"):
        sel = site == g
        assert by.loc[g, "value"] == pytest.approx(roc_auc_score(y[sel], s[sel]))
        assert by.loc[g, "lo"] <= by.loc[g, "value"] <= by.loc[g, "hi"]
    assert bool(by.loc["tiny", "too_few"]) and math.isnan(by.loc["tiny", "lo"])
    best = by.loc[["site_A", "site_B", "site_C"], "value"].max()
    assert by.loc["site_C", "gap_to_best"] == pytest.approx(best - by.loc["site_C", "value"])
    assert by["worst"].sum() == 1 and bool(by.loc["site_C", "worst"])


def test_subgroup_table_and_age_bands() -> None:
    table = pd.DataFrame({"y": [0, 1] * 30, "p": np.linspace(0, 1, 60), "sex": ["F", "M", "M"] * 20,
                          "age": np.linspace(20, 90, 60)})
    table["age_band"] = age_bands(table["age"])
    out = subgroup_table(roc_auc, table, ["y", "p"], ["sex", "age_band"], min_cases=5, n_boot=50)
    assert set(out["attribute"]) == {"sex", "age_band"}
    assert set(out.loc[out["attribute"] == "age_band", "group"]) == {"0-39", "40-59", "60-79", "80+"}
    with pytest.raises(MetricError, match="no column"):
        subgroup_table(roc_auc, table, ["y", "p"], ["scanner"])
