"""``medsight calibrate`` on a real trained classifier package: a new version with its parent recorded, the
parent untouched; ECE and Brier of the check split recomputed here by hand from predict-cls's probabilities;
the stored threshold re-derived independently from the calibration split's logits; refusals exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.package import load_package

from .conftest import run_cli, write_square_dataset


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Hand-written ECE: equal-width bins on [0, 1], |mean p - fraction positive| weighted by bin size."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(np.sum(idx == b) / len(p) * abs(p[idx == b].mean() - y[idx == b].mean())
                     for b in range(bins) if np.any(idx == b)))


@pytest.fixture
def unseen(tmp_path: Path) -> Path:
    """New square images of new patients (Q...), never seen by the trained package."""
    manifest, _ = write_square_dataset(tmp_path / "unseen", n=64, size=32, side=8, seed=11)
    t = pd.read_csv(manifest)
    t["patient_id"] = "Q" + t["patient_id"].str[1:]
    t.to_csv(manifest, index=False)
    return manifest


def test_calibrate_writes_a_derived_version_with_checked_figures(cls_package: Path, unseen: Path,
                                                                   tmp_path: Path) -> None:
    parent = load_package(cls_package)
    manifest_before = (cls_package / "manifest.json").read_bytes()
    assert run_cli("-q", "calibrate", "squares@1", unseen, "-o", tmp_path / "cal", "--target-sensitivity", "0.8") == 0
    new = load_package(tmp_path / "cal")
    assert new.parent_id == parent.id and new.version == 2 and new.path == (tmp_path / "cal").resolve()
    assert (cls_package / "manifest.json").read_bytes() == manifest_before and load_package("squares@1").id == parent.id
    rep = new.read_json("calibration_report.json")
    t = new.read_json("calibration.json")["temperature"]["square"]

    # the operating point, re-derived independently from the calibration split's stored raw logits
    cal = new.read_json("calibration_predictions.json")
    z, y = np.asarray(cal["logits"])[:, 0], np.asarray(cal["y"])[:, 0]
    p = 1 / (1 + np.exp(-z / t))
    k = int(np.ceil(0.8 * y.sum()))
    expected = np.sort(p[y == 1])[::-1][k - 1]
    stored = new.read_json("config.json")["thresholds"]["square"]
    assert stored == pytest.approx(expected, abs=1e-6) and np.mean(p[y == 1] >= stored) >= 0.8
    assert rep["splits"]["calibration"]["n"] == len(z) and rep["unit"] == "image"

    # ECE / Brier on the check split, recomputed from what predict-cls outputs with the parent and the new version
    table = pd.read_csv(unseen)
    fit_patients = set(cal["patients"])
    check = table[~table["patient_id"].isin(fit_patients)]
    assert len(check) == rep["splits"]["check"]["n"] > 0 and not set(check.patient_id) & fit_patients
    images = [unseen.parent / i for i in check["image"]]
    assert run_cli("-q", "predict-cls", "squares@1", *images, tmp_path / "b.csv", "--no-gradcam") == 0
    assert run_cli("-q", "predict-cls", "squares@2", *images, tmp_path / "a.csv", "--no-gradcam") == 0
    yc = check["square"].to_numpy()
    for name, csv in (("before", "b.csv"), ("after", "a.csv")):
        pc = pd.read_csv(tmp_path / csv)["p_square"].to_numpy()
        assert rep["check_split"][name]["ece"] == pytest.approx(_ece(yc, pc), abs=1e-5)
        assert rep["check_split"][name]["brier"] == pytest.approx(np.mean((pc - yc) ** 2), abs=1e-5)
    assert new.has("referral.json") and new.has("ood_mahalanobis.json")


def test_calibrate_refuses_the_patients_that_chose_the_epoch(  # noqa: ANN001 - capsys
        cls_package: Path, square_manifest: Path, unseen: Path, tmp_path: Path, capsys) -> None:
    assert run_cli("calibrate", cls_package, square_manifest, "-o", tmp_path / "x") == 2  # the training manifest
    err = capsys.readouterr().err.strip()
    assert "trained on" in err and len(err.splitlines()) == 1
    val = json.loads((cls_package / "config.json").read_text())["data"]["val_patients"]
    t = pd.read_csv(unseen)
    t.loc[0, "patient_id"] = val[0]
    t.to_csv(tmp_path / "leaky.csv", index=False)
    for img in t["image"]:
        (tmp_path / img).symlink_to(unseen.parent / img)
    assert run_cli("calibrate", cls_package, tmp_path / "leaky.csv", "-o", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip()
    assert "validation patients that chose" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()
