from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import ConfigError
from medsight.safety.quality import QualityFinding
from medsight.safety.referral import ReferralPolicy


def test_thresholds_keep_the_target_share_of_validation_cases(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scores = {"low_confidence": rng.random(400), "out_of_distribution": rng.normal(0, 1, 400)}
    pol = ReferralPolicy.fit_on_validation(scores, target_keep=0.9)
    kept = np.mean([d.accepted for d in pol.decide_many(scores)])
    assert 0.9 <= kept <= 0.9 + 3 / 400  # at least the target, and no more than a few cases over it
    # independent check on fresh in-distribution data from the same distributions: keep rate near 90%
    fresh = {"low_confidence": rng.random(4000), "out_of_distribution": rng.normal(0, 1, 4000)}
    assert np.mean([d.accepted for d in pol.decide_many(fresh)]) == pytest.approx(0.9, abs=0.025)
    pol.save(tmp_path / "referral.json")
    assert ReferralPolicy.load(tmp_path / "referral.json").thresholds == pol.thresholds


def test_decisions_carry_reasons() -> None:
    pol = ReferralPolicy({"low_confidence": 0.3, "out_of_distribution": 10.0})
    assert pol.decide({"low_confidence": 0.1, "out_of_distribution": 2.0}).to_dict() == {
        "decision": "accept", "reasons": [], "reason_codes": []}
    d = pol.decide({"low_confidence": 0.4, "out_of_distribution": 12.0})
    assert d.action == "refer" and d.codes == ("low_confidence", "out_of_distribution")
    assert "low confidence" in d.reasons[0] and "out of distribution" in d.reasons[1]
    q = pol.decide({"low_confidence": 0.0}, [QualityFinding("missing_slices", "2 blank slice(s)")])
    assert q.action == "refer" and q.codes == ("missing_slices",) and "input-quality" in q.reasons[0]
    assert pol.decide({"low_confidence": float("nan")}).action == "refer"


def test_bad_target() -> None:
    with pytest.raises(ConfigError, match="target_keep"):
        ReferralPolicy.fit_on_validation({"x": [1, 2]}, target_keep=1.5)
