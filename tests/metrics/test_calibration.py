"""Calibration metrics against scikit-learn (Brier, calibration_curve) and a hand-worked ECE/MCE."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from medsight.errors import MetricError
from medsight.metrics.calibration import (brier_score, expected_calibration_error, maximum_calibration_error,
                                          reliability_curve)


def _data(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 3, n)
    y = (rng.random(n) < p**1.3).astype(int)  # mildly over-confident
    return y, p


def test_brier_matches_sklearn() -> None:
    y, p = _data()
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-14)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_points_match_sklearn(strategy: str) -> None:
    y, p = _data(1)
    c = reliability_curve(y, p, n_bins=10, strategy=strategy)
    frac, mean = calibration_curve(y, p, n_bins=10, strategy=strategy)
    np.testing.assert_allclose(c["bin_frac_pos"], frac, atol=1e-12)
    np.testing.assert_allclose(c["bin_mean_pred"], mean, atol=1e-12)
    assert c["bin_count"].sum() == len(y)
    if strategy == "quantile":
        assert c["bin_count"].max() - c["bin_count"].min() <= 1  # equal mass


def test_ece_and_mce_by_hand() -> None:
    # two equal-width bins: [0, 0.5] holds p=0.2,0.4 (y=0,1) ; (0.5, 1] holds p=0.6,0.8,1.0 (y=1,1,0)
    y = [0, 1, 1, 1, 0]
    p = [0.2, 0.4, 0.6, 0.8, 1.0]
    gap_lo = abs(0.3 - 0.5)
    gap_hi = abs(0.8 - 2 / 3)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx((2 * gap_lo + 3 * gap_hi) / 5)
    assert maximum_calibration_error(y, p, n_bins=2) == pytest.approx(max(gap_lo, gap_hi))


def test_perfect_calibration_has_zero_error() -> None:
    y = [0, 0, 0, 1] * 5 + [1, 1, 1, 0] * 5
    p = [0.25] * 20 + [0.75] * 20
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.0)


def test_bad_inputs() -> None:
    with pytest.raises(MetricError, match="row 1"):
        brier_score([0, 1], [0.2, float("nan")])
    with pytest.raises(MetricError, match="lie in"):
        brier_score([0, 1], [0.2, 1.2])
    with pytest.raises(MetricError, match="strategy"):
        expected_calibration_error([0, 1], [0.2, 0.3], strategy="kmeans")
    # one class only is still defined for calibration
    assert brier_score([1, 1], [1.0, 0.5]) == pytest.approx(0.125)
