"""Summary tables: non-finite handling, task discovery, label parsing, strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight.errors import DatasetError, MetricError
from medsight.metrics.tables import (classification_tasks, labels_from_dataset_json, parse_labels,
                                     summarise_segmentation, write_json)


def test_summary_leaves_out_and_counts_non_finite_cases() -> None:
    per_case = pd.DataFrame({
        "case_id": ["a", "b", "c", "d"], "label": 3, "name": "lesion",
        "dice": [0.8, 0.6, 0.0, 1.0], "hd95": [2.0, 4.0, math.inf, 0.0],
        "ref_empty": [False, False, False, True],
    })
    s = summarise_segmentation(per_case, metrics=("dice", "hd95"), n_boot=200).set_index("metric")
    assert s.loc["dice", "mean"] == pytest.approx(0.6) and s.loc["dice", "n_not_finite"] == 0
    assert s.loc["hd95", "mean"] == pytest.approx(2.0) and s.loc["hd95", "n_not_finite"] == 1
    assert s.loc["hd95", "median"] == pytest.approx(2.0) and s.loc["hd95", "n_ref_empty"] == 1
    assert s.loc["dice", "lo"] <= 0.6 <= s.loc["dice", "hi"]


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
