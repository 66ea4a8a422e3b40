"""Operating points survive calibration: with a temperature far from 1, thresholds are re-chosen on the calibrated
validation probabilities, so the validation sensitivity at the stored threshold is what it was before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.classification.package import calibrate_package, recalibrated_config
from medsight.package import load_package
from medsight.package.calibration import Calibration

from .conftest import run_cli


def _sens(y: np.ndarray, p: np.ndarray, t: float) -> tuple[int, int]:
    """(true positives, positives) at threshold t, counted by hand."""
    pos = y == 1
    return int(np.sum(p[pos] >= t)), int(pos.sum())


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@pytest.mark.parametrize("temperature", [0.2, 6.0])
def test_sensitivity_at_stored_threshold_unchanged_by_calibration(temperature: float) -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.3).astype(int)
    z = rng.normal(0, 1, 300) + 2.0 * y
    before = {"square": {"threshold": 0.0}}
    config = {"task": "binary", "labels": ["square"], "training": {"target_sensitivity": 0.9}, "thresholds": {},
              "threshold_selection": before}
    # the uncalibrated operating point, chosen by hand: the k-th highest positive probability, k = ceil(0.9 n_pos)
    p0 = _sigmoid(z)
    k = int(np.ceil(0.9 * y.sum()))
    t0 = np.sort(p0[y == 1])[::-1][k - 1]
    cal = Calibration("temperature", "sigmoid", ["square"], {"square": temperature})
    out = recalibrated_config(config, {"y": y.reshape(-1, 1).tolist(), "logits": z.reshape(-1, 1).tolist()}, cal)
    t1 = out["thresholds"]["square"]
    p1 = _sigmoid(z / temperature)
    tp0, npos = _sens(y, p0, t0)
    tp1, _ = _sens(y, p1, t1)
    # the target still holds, within one case (the boundary case may round either way in float32)
    assert abs(tp1 - tp0) <= 1 and tp1 >= k - 1
    assert _sens(y, p1, t0)[0] != tp0  # ...whereas keeping the old threshold would have moved it
    rec = out["threshold_selection"]["square"]
    assert rec["calibrated"] is True and rec["target_sensitivity"] == 0.9
    assert abs(rec["val_sensitivity"] * npos - tp1) <= 1 and rec["val_sensitivity"] >= 0.9
    assert abs(rec["val_specificity"] - np.mean(p1[y == 0] < t1)) <= 1 / np.sum(y == 0) + 1e-12
    assert out["uncalibrated_threshold_selection"] == before


def test_calibrating_a_package_writes_a_new_version_with_rederived_thresholds(cls_package: Path, square_manifest: Path,
                                                                               tmp_path: Path) -> None:
    table = pd.read_csv(square_manifest)
    parent = load_package(cls_package)
    patients = set(parent.read_json("config.json")["data"]["val_patients"])
    images = [square_manifest.parent / p for p, pid in zip(table["image"], table["patient_id"]) if pid in patients]
    assert run_cli("-q", "predict-cls", "squares@1", *images, tmp_path / "before.csv", "--no-gradcam") == 0
    val = parent.read_json("validation_predictions.json")
    cfg0 = parent.read_json("config.json")
    child = calibrate_package(parent, Calibration("temperature", "sigmoid", ["square"], {"square": 5.0}))
    assert child.parent_id == parent.id and child.version == 2 and child.has("calibration.json")
    cfg1 = child.read_json("config.json")
    y = np.asarray(val["y"])[:, 0]
    z = np.asarray(val["logits"])[:, 0]
    t0, t1 = cfg0["thresholds"]["square"], cfg1["thresholds"]["square"]
    assert t1 != pytest.approx(t0)
    assert abs(_sens(y, _sigmoid(z / 5.0), t1)[0] - _sens(y, _sigmoid(z), t0)[0]) <= 1
    # predict-cls with the calibrated package takes the same decisions on the validation images as before (a case
    # sitting exactly on the threshold may flip by float rounding between batch sizes: at most one)
    assert run_cli("-q", "predict-cls", "squares@2", *images, tmp_path / "after.csv", "--no-gradcam") == 0
    before, after = pd.read_csv(tmp_path / "before.csv"), pd.read_csv(tmp_path / "after.csv")
    assert np.sum(before["decision_square"] != after["decision_square"]) <= 1
    assert abs(int(after["decision_square"][y == 1].sum()) - int(before["decision_square"][y == 1].sum())) <= 1
    assert np.allclose(after["p_square"], _sigmoid(z / 5.0), atol=1e-5)
    assert np.allclose(before["p_square"], _sigmoid(z), atol=1e-5)
    # the derived version has its own folder; the parent's folder and @1 are untouched and still load
    assert json.loads((child.path / "manifest.json").read_text())["parent_id"] == parent.id
    assert child.path != parent.path and load_package("squares@1").id == parent.id
    assert json.loads((cls_package / "manifest.json").read_text())["id"] == parent.id
