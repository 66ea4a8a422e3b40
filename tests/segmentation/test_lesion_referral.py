"""The per-lesion referral rule is fitted on validation lesions and stored in the package (issue 33 point 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medsight.segmentation.lesion_study import (MIN_TRUE_LESIONS, case_lesion_records, fit_lesion_referral,
                                                lesion_study)
from medsight.segmentation.lesions import REFERRAL_FILE, load_policy

POST = {"lesion_labels": {"3": "lesion"}, "min_lesion_volume_ml": 0.0,
        "refer_mean_probability_below": 0.6, "refer_mean_entropy_above": 0.6}


def _volume() -> tuple[np.ndarray, np.ndarray]:
    """Softmax (4, 12, 12, 12) with two predicted lesions: a 2x2x2 cube on the reference lesion (p = 0.9) and a
    2x2x2 cube where the reference has none (p = 0.7); every other voxel is background with p = 1."""
    ref = np.zeros((12, 12, 12), np.int16)
    ref[2:4, 2:4, 2:4] = 3
    prob = np.zeros((4, 12, 12, 12), np.float32)
    prob[0] = 1.0
    for box, p in (((slice(2, 4),) * 3, 0.9), ((slice(8, 10),) * 3, 0.7)):
        prob[(0, *box)] = 0.0
        prob[(3, *box)] = p
        prob[(2, *box)] = 1.0 - p
    return prob, ref


def test_case_records_mark_true_and_false_lesions_with_their_signals() -> None:
    prob, ref = _volume()
    rec = case_lesion_records(prob, ref, (2.0, 2.0, 2.0), {3: "lesion"}, 0.0, "c1")
    assert rec["n_ref"] == 1 and rec["tp"] == 1
    by_truth = {r["true_lesion"]: r for r in rec["lesions"]}
    assert set(by_truth) == {True, False}
    assert by_truth[True]["low_confidence"] == pytest.approx(0.1)  # 1 - mean lesion probability 0.9
    assert by_truth[False]["low_confidence"] == pytest.approx(0.3)
    # entropy of (0.9, 0.1) and (0.7, 0.3) in nats, worked by hand
    assert by_truth[True]["high_uncertainty"] == pytest.approx(-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)), abs=1e-4)
    assert by_truth[False]["high_uncertainty"] == pytest.approx(-(0.7 * np.log(0.7) + 0.3 * np.log(0.3)), abs=1e-4)
    assert by_truth[True]["volume_ml"] == pytest.approx(8 * 8 / 1000)


def test_study_counts_sensitivity_and_false_positives_per_case() -> None:
    prob, ref = _volume()
    empty = np.zeros_like(ref)
    study = lesion_study(lambda image: image, [("a", prob, ref), ("b", prob, empty)], (2.0,) * 3, POST)
    assert (study["n_ref_lesions"], study["tp"], study["fp"]) == (1, 1, 3)  # case b: both predicted lesions false
    assert study["sensitivity"] == 1.0 and study["fp_per_case"] == 1.5


def _study(true_conf: list[float], false_conf: list[float]) -> dict:
    lesions = [{"low_confidence": c, "high_uncertainty": c / 2, "true_lesion": True} for c in true_conf]
    lesions += [{"low_confidence": c, "high_uncertainty": c / 2, "true_lesion": False} for c in false_conf]
    return {"lesions": lesions}


def test_thresholds_are_fitted_on_true_validation_lesions() -> None:
    true = [i / 20 for i in range(20)]  # 0.00 .. 0.95
    policy = fit_lesion_referral([_study(true[:10], [0.97]), _study(true[10:], [0.92, 0.5])], POST, target_keep=0.9)
    # 90% of 20 true lesions kept: the 19th smallest score is the threshold (0.90 and 0.45), by hand
    assert policy.thresholds["low_confidence"] == pytest.approx(0.9)
    assert policy.thresholds["high_uncertainty"] == pytest.approx(0.45)
    assert policy.fit["fitted"] is True and policy.fit["n_true_lesions"] == 20
    assert policy.fit["false_lesions_referred"] == pytest.approx(2 / 3)  # 0.97 and 0.92 refer, 0.5 does not
    assert policy.decide({"low_confidence": 0.95, "high_uncertainty": 0.1}).action == "refer"


def test_too_few_true_lesions_keep_the_plan_defaults_and_say_so() -> None:
    policy = fit_lesion_referral([_study([0.1] * (MIN_TRUE_LESIONS - 1), [0.5])], POST)
    assert policy.thresholds == {"low_confidence": pytest.approx(0.4), "high_uncertainty": pytest.approx(0.6)}
    assert policy.fit["fitted"] is False and "fewer than" in policy.fit["reason"]


def test_predictor_policy_comes_from_the_package_file(tmp_path) -> None:
    fit_lesion_referral([_study([i / 20 for i in range(20)], [])], POST, 0.9).save(tmp_path / REFERRAL_FILE)
    assert load_policy(tmp_path, POST).thresholds["low_confidence"] == pytest.approx(0.9)
    assert json.loads((tmp_path / REFERRAL_FILE).read_text())["fit"]["fitted"] is True
    assert load_policy(tmp_path / "none", POST).thresholds["low_confidence"] == pytest.approx(0.4)  # no file: defaults
