from __future__ import annotations

import numpy as np
import pytest

from medsight.safety.risk_coverage import aurc, risk_at_coverage, risk_coverage_curve


def test_curve_by_hand() -> None:
    errors = np.array([1, 0, 0, 1, 0])
    unc = np.array([0.9, 0.1, 0.2, 0.5, 0.3])  # order: 0.1(0) 0.2(0) 0.3(0) 0.5(1) 0.9(1)
    c = risk_coverage_curve(errors, unc)
    np.testing.assert_allclose(c["coverage"], [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(c["risk"], [0, 0, 0, 0.25, 0.4])
    assert aurc(errors, unc) == pytest.approx(0.65 / 5)
    assert risk_at_coverage(errors, unc, 0.8) == pytest.approx(0.25)
    assert risk_at_coverage(errors, unc, 1.0) == pytest.approx(0.4)
    # an uninformative score gives (in expectation) the same risk at every coverage; a perfect one the minimum AURC
    assert aurc(errors, errors.astype(float)) < aurc(errors, -errors.astype(float))
