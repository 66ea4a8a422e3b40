"""Net benefit worked by hand (Vickers & Elkin 2006 formula)."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import MetricError
from medsight.metrics.decision_curve import net_benefit


def test_net_benefit_by_hand() -> None:
    y = [1, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    p = [0.9, 0.4, 0.35, 0.1, 0.2, 0.15, 0.5, 0.05, 0.3, 0.25]
    t = net_benefit(y, p, [0.2, 0.5])
    # p_t = 0.2: treated p >= 0.2 -> 0.9,0.4,0.35,0.2,0.5,0.3,0.25: TP 2, FP 5; odds 0.25
    assert t.loc[0, "model"] == pytest.approx(2 / 10 - 5 / 10 * 0.25)
    assert t.loc[0, "treat_all"] == pytest.approx(0.3 - 0.7 * 0.25)
    # p_t = 0.5: treated 0.9, 0.5: TP 1, FP 1; odds 1
    assert t.loc[1, "model"] == pytest.approx(0.1 - 0.1)
    assert t.loc[1, "treat_all"] == pytest.approx(0.3 - 0.7)
    assert (t["treat_none"] == 0).all()


def test_default_grid_and_errors() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    t = net_benefit(y, rng.random(50))
    assert len(t) == 99 and list(t.columns) == ["threshold", "model", "treat_all", "treat_none"]
    with pytest.raises(MetricError, match="strictly between"):
        net_benefit([0, 1], [0.2, 0.8], [0.0, 0.5])
    with pytest.raises(MetricError, match="row 0"):
        net_benefit([0, 1], [float("nan"), 0.8], [0.5])
