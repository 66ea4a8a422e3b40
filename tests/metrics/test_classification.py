"""Classification metrics against scikit-learn, a slow pairwise DeLong, and Hanley & McNeil's (1982) CT data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, cohen_kappa_score, roc_auc_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from medsight.errors import MetricError
from medsight.metrics.classification import (binary_metrics, cohen_kappa, confusion_matrix, delong_test,
                                             delong_variance, multilabel_metrics, pr_auc, roc_auc,
                                             roc_auc_delong, roc_curve_points, threshold_for_sensitivity)


def _data(seed: int, n: int = 150, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = y * 0.9 + rng.normal(size=n)
    return y, (np.round(s, 1) if ties else s)


def _slow_delong(y: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """DeLong 1988 straight from the definition: psi over all positive/negative pairs."""
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_and_delong_variance_match_references(seed: int) -> None:
    y, s = _data(seed)
    auc, var = delong_variance(y, s)
    slow_auc, slow_var = _slow_delong(y, s)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc == pytest.approx(slow_auc, abs=1e-12)
    assert var == pytest.approx(slow_var, rel=1e-10)
    a, lo, hi = roc_auc_delong(y, s, alpha=0.1)
    half = norm.ppf(0.95) * math.sqrt(slow_var)
    assert (lo, hi) == pytest.approx((max(0, slow_auc - half), min(1, slow_auc + half)), abs=1e-12)


def test_hanley_mcneil_1982_ct_ratings() -> None:
    """109 CT images rated 1-5 (58 normal, 51 abnormal); the paper reports AUC = 0.893."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(58), np.ones(51)]
    s = np.r_[normal, abnormal]
    auc, lo, hi = roc_auc_delong(y, s)
    assert round(auc, 3) == 0.893
    assert auc == pytest.approx(_slow_delong(y, s)[0])
    se = (hi - lo) / (2 * norm.ppf(0.975))
    assert se == pytest.approx(math.sqrt(_slow_delong(y, s)[1]), rel=1e-9)
    # DeLong's SE is close to, but not the same estimator as, Hanley-McNeil's published 0.032
    assert abs(se - 0.032) < 0.003


def test_delong_test_of_identical_models_and_of_a_better_one() -> None:
    y, s = _data(4, ties=False)
    assert delong_test(y, s, s) == (0.0, 1.0)
    noisy = s + np.random.default_rng(0).normal(scale=3.0, size=s.shape)
    diff, p = delong_test(y, s, noisy)
    assert diff == pytest.approx(roc_auc_score(y, s) - roc_auc_score(y, noisy))
    assert 0 <= p < 0.05


@pytest.mark.parametrize("seed", [0, 5])
def test_pr_auc_matches_sklearn_average_precision(seed: int) -> None:
    y, s = _data(seed)
    assert pr_auc(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_roc_curve_ends_at_corners() -> None:
    y, s = _data(3)
    c = roc_curve_points(y, s)
    assert (c["fpr"][0], c["tpr"][0], c["fpr"][-1], c["tpr"][-1]) == (0, 0, 1, 1)
    assert np.trapezoid(c["tpr"], c["fpr"]) == pytest.approx(roc_auc(y, s))


@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_kappa_matches_sklearn(weights: str | None) -> None:
    rng = np.random.default_rng(2)
    grade = rng.integers(0, 5, 200)  # diabetic-retinopathy-style grades 0-4
    read = np.clip(grade + rng.integers(-1, 2, 200), 0, 4)
    assert cohen_kappa(grade, read, weights=weights) == pytest.approx(
        cohen_kappa_score(grade, read, weights=weights), abs=1e-12)


def test_confusion_matrix_matches_sklearn() -> None:
    rng = np.random.default_rng(8)
    t, p = rng.integers(0, 4, 90), rng.integers(0, 4, 90)
    np.testing.assert_array_equal(confusion_matrix(t, p), sk_confusion_matrix(t, p))


def test_binary_metrics_by_hand() -> None:
    y = [1, 1, 1, 0, 0, 0, 0]
    s = [0.9, 0.6, 0.2, 0.6, 0.4, 0.1, 0.05]
    m = binary_metrics(y, s, 0.5)  # calls: 0.9, 0.6 (pos), 0.6 (neg) -> TP 2, FP 1, FN 1, TN 3
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 3)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(3 / 4)
    assert m["ppv"] == pytest.approx(2 / 3) and m["npv"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(4 / 6) and m["accuracy"] == pytest.approx(5 / 7)
    assert binary_metrics(y, s, 0.6)["tp"] == 2  # score == threshold is called positive


def test_threshold_for_sensitivity() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    s = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.4, 0.1, 0.0])
    assert threshold_for_sensitivity(y, s, 0.5) == 0.8
    assert threshold_for_sensitivity(y, s, 0.51) == 0.3
    assert threshold_for_sensitivity(y, s, 1.0) == 0.2
    y2, s2 = _data(6)
    for target in (0.8, 0.9, 0.95):
        t = threshold_for_sensitivity(y2, s2, target)
        assert binary_metrics(y2, s2, t)["sensitivity"] >= target
        above = s2[s2 > t]
        if above.size:  # the next higher threshold no longer reaches the target
            assert binary_metrics(y2, s2, above.min())["sensitivity"] < target


def test_degenerate_inputs() -> None:
    with pytest.raises(MetricError, match="row 2"):
        roc_auc_delong([0, 1, 1], [0.1, 0.2, float("nan")])
    with pytest.raises(MetricError, match="all 3 cases are negative"):
        roc_auc_delong([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="only 0 and 1"):
        roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="3 values but the labels have 2"):
        binary_metrics([0, 1], [0.1, 0.2, 0.3], 0.5)
    with pytest.raises(MetricError, match="no positive"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2], 0.9)
    m = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2], 0.5)  # all-negative labels: sensitivity undefined
    assert math.isnan(m["sensitivity"]) and m["specificity"] == pytest.approx(2 / 3)
    auc, lo, hi = roc_auc_delong([0, 1, 1], [0.1, 0.5, 0.4])  # a single negative: AUC defined, CI not
    assert auc == 1.0 and math.isnan(lo) and math.isnan(hi)
    assert math.isnan(cohen_kappa([2, 2, 2], [2, 2, 2]))


def test_multilabel_rows() -> None:
    y1, s1 = _data(1, 120)
    y2, s2 = _data(2, 120)
    rows = multilabel_metrics(np.c_[y1, np.zeros(120)], np.c_[s1, s2], ["effusion", "never_seen"])
    assert rows[0]["auc"] == pytest.approx(roc_auc_score(y1, s1))
    assert rows[0]["pr_auc"] == pytest.approx(average_precision_score(y1, s1))
    assert math.isnan(rows[1]["auc"]) and rows[1]["n_pos"] == 0


def test_roc_auc_is_delongs_auc_to_the_last_bit() -> None:
    """roc_auc counts midranks by binary search (the bootstrap's fast path); the value is DeLong's AUC exactly and the pairwise count."""
    from medsight.metrics.classification import delong_variance

    rng = np.random.default_rng(4)
    for _ in range(20):
        y = rng.integers(0, 2, int(rng.integers(3, 300)))
        y[:2] = (0, 1)
        s = rng.normal(y * 0.7, 1.0)
        s = np.round(s, 1) if _ % 2 else s  # rounded: many ties
        pos, neg = s[y == 1], s[y == 0]
        pairwise = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size)
        assert roc_auc(y, s) == delong_variance(y, s)[0]
        assert roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)
