"""``medsight validate`` from classifier predictions: HTML + JSON, external sites apart, bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from medsight.cli.validate import validate
from medsight.package import save_package


def _dataset(tmp_path, n: int = 90):
    rng = np.random.default_rng(1)
    ds = tmp_path / "ds"
    ds.mkdir()
    sites = np.array(["site_A", "site_B", "site_C"])[np.arange(n) % 3]
    m = pd.DataFrame({"case_id": [f"c{i:03d}" for i in range(n)], "site": sites,
                      "sex": rng.choice(["F", "M"], n), "age": rng.uniform(20, 90, n)})
    m.to_csv(ds / "manifest.csv", index=False)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(2 * y - 1) * 1.5 - rng.normal(0, 1, n)))
    pred = pd.DataFrame({"case_id": m.case_id, "y_true": y, "prob": p})
    pred.to_csv(tmp_path / "pred.csv", index=False)
    return ds, m, pred


def test_validate_from_predictions(tmp_path) -> None:
    ds, m, pred = _dataset(tmp_path)
    src = tmp_path / "model_src"
    src.mkdir()
    (src / "config.json").write_text("{}")
    model = save_package(src, tmp_path / "model", task="classification", name="toy").path  # validate loads packages
    r = CliRunner().invoke(validate, [str(model), str(ds), "--external-site", "site_C", "--predictions",
                                      str(tmp_path / "pred.csv"), "--report", str(tmp_path / "r.html"),
                                      "--n-boot", "100", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    cohorts = {c["name"]: c for c in doc["classification"]["cohorts"]}
    ext = pred[m.site == "site_C"]
    assert cohorts["external: site_C"]["n"] == len(ext)
    assert cohorts["external: site_C"]["auc"]["value"] == roc_auc_score(ext.y_true, ext.prob)
    assert "config.json" in doc["model"]["hashes"]
    assert (tmp_path / "r.html").stat().st_size > 50_000


def test_validate_missing_columns_is_a_one_line_error(tmp_path, capsys) -> None:
    ds, _, pred = _dataset(tmp_path, 12)
    pred.drop(columns="y_true").to_csv(tmp_path / "bad.csv", index=False)
    from medsight.cli.main import main

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{}")
    model = save_package(tmp_path / "src", tmp_path / "model", task="classification", name="toy").path
    with pytest.raises(SystemExit) as exit_:
        main(["validate", str(model), str(ds), "--predictions", str(tmp_path / "bad.csv"),
              "--report", str(tmp_path / "r.html")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "y_true" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_rows_the_classifier_trained_on_are_in_no_cohort(tmp_path) -> None:
    """split = train rows (the model fitted its weights on them) were scored as internal test rows: now left out of
    every cohort, subgroups and worst cases, and the page says how many; val and test rows are scored as before."""
    from medsight.report.assemble import classification_results

    ds, m, pred = _dataset(tmp_path)
    pred["split"] = np.array(["train", "val", "test"])[np.arange(len(pred)) // 3 % 3]
    pred.loc[pred.split == "train", "prob"] = pred.loc[pred.split == "train", "y_true"]  # memorised: AUC 1
    res = classification_results(pred, ds, {"name": "m"}, ["site_C"], n_boot=50)
    cohorts = {c["name"]: c for c in res.classification["cohorts"]}
    internal = pred[(pred.split == "test") & (m.site != "site_C")]
    external = pred[(pred.split == "test") & (m.site == "site_C")]
    assert cohorts["internal test folds"]["n"] == len(internal) == 20
    auc = roc_auc_score(internal.y_true, internal.prob)
    assert cohorts["internal test folds"]["auc"]["value"] == pytest.approx(auc)
    assert cohorts["external: site_C"]["n"] == len(external)
    assert cohorts["validation (calibration and threshold fitted here)"]["n"] == int((pred.split == "val").sum())
    trained = set(pred.loc[pred.split == "train", "case_id"])
    assert not trained & {w["case_id"] for w in res.worst_cases}
    assert sum(r["n"] for r in res.classification["subgroups"] if r["attribute"] == "site") == \
        int((pred.split == "test").sum())
    assert any("30 row(s) with split = train left out" in n for n in res.notes)
