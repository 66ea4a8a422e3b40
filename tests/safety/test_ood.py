"""OOD scores against direct NumPy/SciPy computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import roc_curve

from medsight.errors import ConfigError
from medsight.safety.ood import Mahalanobis, energy_score, msp_score, ood_detection_metrics


def test_mahalanobis_matches_direct_numpy() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (60, 5)) @ rng.normal(0, 1, (5, 5))
    b = rng.normal(0, 1, (40, 5)) @ rng.normal(0, 1, (5, 5)) + 3
    x, y = np.vstack([a, b]), np.r_[np.zeros(60), np.ones(40)]
    det = Mahalanobis(shrinkage=0.0).fit(x, y)
    # reference: pooled within-class covariance (np.cov per class, weighted by dof), explicit inverse
    pooled = (np.cov(a, rowvar=False) * 59 + np.cov(b, rowvar=False) * 39) / 98
    inv = np.linalg.inv(pooled)
    q = rng.normal(1, 2, (7, 5))
    ref = np.array([[(v - m) @ inv @ (v - m) for m in (a.mean(0), b.mean(0))] for v in q])
    np.testing.assert_allclose(det.distances(q), ref, rtol=1e-8)
    np.testing.assert_allclose(det.score(q), ref.min(1), rtol=1e-8)
    np.testing.assert_allclose(Mahalanobis.from_dict(det.to_dict()).score(q), ref.min(1), rtol=1e-8)


def test_mahalanobis_unfitted_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="fit"):
        Mahalanobis().score(np.zeros((1, 3)))


def test_msp_and_energy_by_hand() -> None:
    z = np.array([[2.0, 0.0], [0.0, 0.0]])
    p0 = np.exp(2) / (np.exp(2) + 1)
    np.testing.assert_allclose(msp_score(z), [1 - p0, 0.5])
    np.testing.assert_allclose(energy_score(z), [-np.log(np.exp(2) + 1), -np.log(2)])
    # sigmoid head: one label with logit 2 is the two-class problem [0, 2]
    np.testing.assert_allclose(msp_score(np.array([2.0]), "sigmoid"), [1 - p0])
    np.testing.assert_allclose(energy_score(np.array([[2.0, -1.0]]), activation="sigmoid"),
                               [-(np.log1p(np.exp(2)) + np.log1p(np.exp(-1)))])


def test_detection_metrics_against_mann_whitney_and_roc_curve() -> None:
    rng = np.random.default_rng(3)
    s_in, s_out = rng.normal(0, 1, 300), rng.normal(1.5, 1, 200)
    m = ood_detection_metrics(s_in, s_out)
    u = mannwhitneyu(s_out, s_in).statistic
    assert m["auroc"] == pytest.approx(u / (300 * 200))
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(300), np.ones(200)], np.r_[s_in, s_out])
    assert m["fpr_at_95tpr"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
