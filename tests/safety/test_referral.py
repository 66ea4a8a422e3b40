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


def test_assessor_round_trip_and_decision(tmp_path) -> None:
    from medsight.image import Geometry, Image, Provenance
    from medsight.safety.assess import SafetyAssessor
    from medsight.safety.ood import Mahalanobis
    from medsight.safety.quality import QualitySpec
    from medsight.safety.temperature import Calibration

    rng = np.random.default_rng(0)
    feats = rng.normal(0, 1, (200, 3))
    imgs = [Image(rng.normal(100, 10, (8, 8)), Geometry.identity(2), Provenance(modality="MR")) for _ in range(5)]
    a = SafetyAssessor("sigmoid", Calibration("temperature", "sigmoid", ["lesion"], {"lesion": 2.0}),
                       Mahalanobis().fit(feats), ReferralPolicy({"low_confidence": 0.4, "out_of_distribution": 20.0}),
                       QualitySpec.fit(imgs))
    a.save(tmp_path)
    b = SafetyAssessor.from_model_dir(tmp_path)
    ok = b.assess(imgs[0], np.array([4.0]), np.zeros(3))
    assert ok["decision"] == "accept"
    assert ok["probabilities"][0] == pytest.approx(1 / (1 + np.exp(-2.0)))  # logit 4 / T 2
    far = b.assess(Image(imgs[0].array, imgs[0].geometry, Provenance(modality="CT")), np.array([0.2]), np.full(3, 9.0))
    assert far["decision"] == "refer"
    assert far["reason_codes"] == ["wrong_modality", "low_confidence", "out_of_distribution"]
