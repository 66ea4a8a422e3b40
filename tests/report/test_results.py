"""The results document: numbers equal the reference libraries, JSON round trip, subgroups under the minimum."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from medsight.errors import ConfigError
from medsight.report.results import ValidationResults
from medsight.report.validate import classification_cohort


def test_cohort_numbers_match_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.5 * y + rng.uniform(0, 0.6, 120), 0, 1)
    c = classification_cohort("x", "internal", y, p, n_boot=100)
    assert c["auc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert c["auc"]["lo"] < c["auc"]["value"] < c["auc"]["hi"]
    assert c["brier_after"]["value"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    sens = ((p >= 0.5) & (y == 1)).sum() / (y == 1).sum()
    assert c["sensitivity"]["value"] == pytest.approx(sens)
    # net benefit at pt=0.2 by the Vickers-Elkin formula TP/n - FP/n * pt/(1-pt)
    i = c["decision"]["threshold"].index(0.2)
    tp, fp = ((p >= 0.2) & (y == 1)).sum(), ((p >= 0.2) & (y == 0)).sum()
    assert c["decision"]["model"][i] == pytest.approx(tp / 120 - fp / 120 * 0.25)


def test_json_round_trip_is_strict(results: ValidationResults, tmp_path) -> None:
    p = results.write(tmp_path / "r.json")
    text = p.read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    again = ValidationResults.read(p)
    assert again.to_dict() == results.to_dict()


def test_too_small_subgroup_has_no_number(results: ValidationResults) -> None:
    rows = {(r["attribute"], r["group"]): r for r in results.classification["subgroups"]}
    small = rows[("site", "site_D")]
    assert small["n"] == 4 and small["too_few"] and small["metric"]["value"] is None
    big = rows[("site", "site_A")]
    assert not big["too_few"] and big["metric"]["value"] is not None
    assert {r["attribute"] for r in results.classification["subgroups"]} >= {"site", "sex", "age_band"}


def test_rejects_foreign_json(tmp_path) -> None:
    f = tmp_path / "x.json"
    f.write_text('{"schema": "other"}')
    with pytest.raises(ConfigError, match="not a medsight validation results"):
        ValidationResults.read(f)
