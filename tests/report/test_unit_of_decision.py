"""The unit of decision: scan-level calibration and operating point fitted on validation scans, CIs that resample
patients, and the operating point read from the model folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from medsight.classification.scan_level import ScanLevel, aggregate_slices, fit_scan_level
from medsight.report.assemble import operating_point
from medsight.report.validate import classification_cohort


def _slices(n_scans: int, seed: int, split: str) -> pd.DataFrame:
    """20 slices a scan; a positive scan has 3 lesion slices. The highest of 20 slice logits is biased upwards,
    so the uncalibrated scan probability is over-confident for negative scans."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_scans):
        pos = i % 2
        for z in range(20):
            y = int(pos and z < 3)
            rows.append({"case_id": f"{split}{i:03d}", "split": split, "y_true": y,
                         "logit": float(rng.normal(1.5 if y else -1.5, 1.0)), "referred": int(z == 0 and i % 7 == 0)})
    return pd.DataFrame(rows)


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).sum() for b in range(bins)
               if (idx == b).any()) / len(y)


def test_scan_level_fit_matches_logistic_regression_and_improves_ece() -> None:
    val = aggregate_slices(_slices(80, 0, "val"))
    test = aggregate_slices(_slices(80, 1, "test"))
    assert len(val) == 80 and (val.n_slices == 20).all() and val.y_true.sum() == 40
    y, z = val.y_true.to_numpy(), val.logit.to_numpy()
    lv = fit_scan_level(y, z, "lesion", 0.9)
    ref = LogisticRegression(C=1e9, tol=1e-10, max_iter=10_000).fit(z[:, None], y)  # Platt, independently
    assert 1 / lv.temperature == pytest.approx(ref.coef_[0, 0], rel=2e-3)
    assert lv.bias == pytest.approx(ref.intercept_[0], abs=5e-3)
    p = lv.probabilities(z)
    # the stored operating point: the highest threshold giving sensitivity >= 0.9 on validation scans
    assert np.mean(p[y == 1] >= lv.threshold) >= 0.9 > np.mean(p[y == 1] >= np.nextafter(lv.threshold, 1))
    assert lv.validation["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= lv.threshold))
    before, after = _ece(y, 1 / (1 + np.exp(-z))), _ece(y, p)
    assert lv.validation["ece_before"] == pytest.approx(before) and lv.validation["ece_after"] == pytest.approx(after)
    assert after < before  # fitted there, at the unit shown
    yt, zt = test.y_true.to_numpy(), test.logit.to_numpy()
    assert _ece(yt, lv.probabilities(zt)) < _ece(yt, 1 / (1 + np.exp(-zt)))


def test_scan_level_round_trip_and_one_class_validation(tmp_path: Path) -> None:
    lv = fit_scan_level(np.zeros(5), np.linspace(-1, 1, 5), "lesion")
    assert (lv.temperature, lv.bias, lv.threshold) == (1.0, 0.0, 0.5) and "one class" in lv.method
    lv.save(tmp_path)
    assert ScanLevel.load(tmp_path) == lv
    op = operating_point(tmp_path, "scan")
    assert op["threshold"] == 0.5 and op["unit"] == "scan" and op["validation"]["n"] == 5


def test_operating_point_of_a_slice_classifier_is_its_stored_threshold(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"thresholds": {"lesion": 0.37, "large": 0.6},
                                                      "threshold_selection": {"lesion": {
                                                          "method": "validation sensitivity >= 0.9",
                                                          "val_sensitivity": 0.92, "val_specificity": 0.5}}}))
    op = operating_point(tmp_path, "slice", "lesion")
    assert op["threshold"] == 0.37 and op["target"] == "validation sensitivity >= 0.9"
    assert op["validation"] == {"sensitivity": 0.92, "specificity": 0.5} and op["unit"] == "slice"
    assert operating_point(tmp_path / "absent", "scan") is None


def test_cis_resample_patients() -> None:
    """Five scans of each patient, nearly identical: a row bootstrap takes them as 5x the evidence; the cluster
    bootstrap does not, so its interval is clearly wider."""
    rng = np.random.default_rng(4)
    n = 40
    y = np.repeat(np.arange(n) % 2, 5)
    p = np.clip(np.repeat(rng.uniform(0.2, 0.7, n), 5) + 0.2 * y + rng.normal(0, 0.01, 5 * n), 0, 1)
    pid = np.repeat([f"P{i}" for i in range(n)], 5)
    rows = classification_cohort("t", "internal", y, p, n_boot=300, unit="scan")
    clustered = classification_cohort("t", "internal", y, p, n_boot=300, unit="scan", groups=pid)
    assert clustered["n"] == 5 * n and clustered["n_patients"] == n and clustered["unit"] == "scan"
    assert clustered["auc"]["value"] == pytest.approx(rows["auc"]["value"])
    width = lambda c: c["hi"] - c["lo"]  # noqa: E731
    assert width(clustered["auc"]) > 1.6 * width(rows["auc"])
    assert width(clustered["sensitivity"]) > 1.6 * width(rows["sensitivity"])


def test_a_calibration_that_would_raise_validation_ece_is_not_applied() -> None:
    """Six validation scans on which Platt's NLL optimum (T ~ 2.7) raises the 10-bin ECE (0.290 -> 0.320): the fit
    keeps the identity and says why, so the report never shows a worse ECE where the calibration was fitted."""
    y, z = np.array([0, 0, 1, 0, 1, 1]), np.array([-0.7, 0.2, -1.9, -0.7, 2.1, 0.2])
    lv = fit_scan_level(y, z, "lesion")
    assert lv.validation["ece_before"] == pytest.approx(_ece(y, 1 / (1 + np.exp(-z))))
    assert lv.validation["ece_after"] == pytest.approx(lv.validation["ece_before"])
    assert (lv.temperature, lv.bias) == (1.0, 0.0) and "did not lower" in lv.method


def test_too_few_patients_for_a_ci_still_give_the_estimate() -> None:
    """Two patients (one with all the negative scans): most patient resamples hold one class, so AUC has no CI,
    but its value is still reported."""
    y, p = [1] + [0] * 7, [0.7, 0.2] + [0.1] * 6
    c = classification_cohort("t", "external", y, p, n_boot=200, groups=["a"] + ["b"] * 7)
    assert c["auc"]["value"] == 1.0 and c["auc"]["lo"] is None and c["n_patients"] == 2
