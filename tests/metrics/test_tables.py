"""Summary tables: non-finite handling, task discovery, label parsing, strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.errors import DatasetError, MetricError
from medsight.metrics.tables import (classification_tasks, false_positive_components, labels_from_dataset_json,
                                     parse_labels, summarise_segmentation, write_json)


def test_summary_leaves_out_and_counts_non_finite_cases() -> None:
    per_case = pd.DataFrame({
        "case_id": ["a", "b", "c", "d"], "label": 3, "name": "lesion",
        "dice": [0.8, 0.6, 0.0, 1.0], "hd95": [2.0, 4.0, math.inf, 0.0],
        "ref_empty": [False, False, False, True],
    })
    s = summarise_segmentation(per_case, metrics=("dice", "hd95"), n_boot=200)
    s = s[s.cases == "reference present"].set_index("metric")
    # case d's reference is empty: it is left out of Dice and distances (its Dice 1 would flatter)
    assert s.loc["dice", "mean"] == pytest.approx((0.8 + 0.6 + 0.0) / 3) and s.loc["dice", "n"] == 3
    assert s.loc["hd95", "mean"] == pytest.approx(3.0) and s.loc["hd95", "n_not_finite"] == 1
    assert s.loc["hd95", "median"] == pytest.approx(3.0) and s.loc["hd95", "n_ref_empty"] == 1
    assert s.loc["dice", "lo"] <= 0.4667 <= s.loc["dice", "hi"]


def test_empty_references_are_reported_as_false_positives() -> None:
    """Metrics Reloaded's rule against a brute-force count: Dice over reference-present cases only, and the
    reference-empty cases as false-positive rate / volume / findings."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(40):
        ref_n, pred_n = int(rng.integers(0, 3) and rng.integers(1, 50)), int(rng.integers(0, 2) * rng.integers(1, 9))
        dice = 1.0 if ref_n + pred_n == 0 else (0.0 if ref_n == 0 or pred_n == 0 else float(rng.uniform(0.2, 0.9)))
        rows.append({"case_id": f"c{i}", "label": 2, "name": "lesion", "dice": dice, "n_ref_voxels": ref_n,
                     "n_pred_voxels": pred_n, "volume_pred_ml": pred_n * 0.001, "volume_diff_ml": 0.0,
                     "n_pred_components": 1 if pred_n else 0})
    df = pd.DataFrame(rows)
    s = summarise_segmentation(df, metrics=("dice", "volume_diff_ml"), n_boot=100)
    present = [r for r in rows if r["n_ref_voxels"] > 0]
    empty = [r for r in rows if r["n_ref_voxels"] == 0]
    assert empty and present
    dice = s[(s.metric == "dice")].iloc[0]
    assert dice["n"] == len(present) and dice["cases"] == "reference present"
    assert dice["mean"] == pytest.approx(sum(r["dice"] for r in present) / len(present))
    assert s[s.metric == "volume_diff_ml"].iloc[0]["n"] == len(rows)  # defined on every case
    fp = s[s.metric == "fp_rate"].iloc[0]
    assert fp["n"] == len(empty) and fp["cases"] == "reference empty"
    assert fp["mean"] == pytest.approx(sum(r["n_pred_voxels"] > 0 for r in empty) / len(empty))
    vol = s[s.metric == "fp_volume_ml"].iloc[0]
    assert vol["mean"] == pytest.approx(sum(r["n_pred_voxels"] * 0.001 for r in empty) / len(empty))
    assert s[s.metric == "fp_components"].iloc[0]["mean"] == pytest.approx(
        sum(r["n_pred_components"] for r in empty) / len(empty))


def test_false_positive_components_counts_26_connected_findings() -> None:
    m = np.zeros((6, 6, 6), bool)
    m[0, 0, 0] = m[1, 1, 1] = True  # diagonal neighbours: one finding
    m[4, 4, 4] = True
    assert false_positive_components(m) == 2 and false_positive_components(np.zeros((3, 3, 3))) == 0


def test_task_columns_and_labels(tmp_path: Path) -> None:
    assert classification_tasks(["case_id", "lesion", "lesion_score", "edema", "edema_score", "site"]) == {
        "lesion": ("lesion", "lesion_score"), "edema": ("edema", "edema_score")}
    assert classification_tasks(["y_true", "y_score"]) == {"y": ("y_true", "y_score")}
    assert classification_tasks(["orphan_score"]) == {}
    assert parse_labels("1=liver, 2=tumour") == {1: "liver", 2: "tumour"}
    with pytest.raises(MetricError, match="1=liver"):
        parse_labels("liver")
    ds = tmp_path / "dataset.json"
    ds.write_text(json.dumps({"labels": {"background": 0, "grey_matter": 1, "white_matter": 2, "lesion": 3}}))
    assert labels_from_dataset_json(ds) == {1: "grey_matter", 2: "white_matter", 3: "lesion"}
    ds.write_text("{}")
    with pytest.raises(DatasetError, match="labels"):
        labels_from_dataset_json(ds)


def test_json_is_strict(tmp_path: Path) -> None:
    path = write_json(tmp_path / "s.json", {"hd": math.inf, "x": np.float32(0.5), "v": [math.nan, 1]})
    assert json.loads(path.read_text()) == {"hd": None, "x": 0.5, "v": [None, 1]}
