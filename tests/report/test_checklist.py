"""Checklist rows follow the sections present in the results document."""

from __future__ import annotations

from medsight.report.checklist import ITEMS, checklist_for


def test_sections_present_only(results) -> None:
    full = checklist_for(results.to_dict())
    assert {r["section"] for r in full} == set(ITEMS)  # the fixture has every section
    seg_only = results.to_dict() | {"classification": None, "worst_cases": [], "model_card": None,
                                    "federated": None}
    got = {r["section"] for r in checklist_for(seg_only)}
    assert got == {"provenance", "cohorts", "segmentation", "subgroups"}
    assert all(r["claim"] and r["tripod_ai"] for r in full)
    assert any("CLAIM 32" in c for r in full for c in r["claim"])  # external validation is mapped


def _claim22(doc: dict) -> str:
    rows = checklist_for(doc)
    return next(c for r in rows for c in r["claim"] if c.startswith("CLAIM 22"))


def test_patient_level_partitioning_is_computed_not_claimed(results) -> None:
    import pandas as pd

    from medsight.report.assemble import prediction_partitioning

    doc = results.to_dict()
    assert "NOT checked" in _claim22(doc | {"data": {}})  # nothing to compare: said so, not claimed
    clean = pd.DataFrame({"patient_id": ["p1", "p2", "p3", "p4"], "split": ["val", "val", "test", "test"]})
    ok = prediction_partitioning(clean)
    assert ok == {"checked": True, "patient_level": True, "how": ok["how"], "overlaps": {}}
    assert "patient: checked" in _claim22(doc | {"data": {"partitioning": ok}})
    leaky = clean.assign(patient_id=["p1", "p2", "p2", "p4"])  # p2 has a validation and a test row
    bad = prediction_partitioning(leaky)
    assert bad["patient_level"] is False and bad["overlaps"] == {"validation rows vs test rows": ["p2"]}
    assert "VIOLATED" in _claim22(doc | {"data": {"partitioning": bad}}) and "p2" in _claim22(
        doc | {"data": {"partitioning": bad}})


def test_no_before_calibration_without_uncalibrated_probabilities() -> None:
    import numpy as np

    from medsight.metrics.calibration import expected_calibration_error
    from medsight.report.validate import classification_cohort

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.15, 60), 0.01, 0.99)
    c = classification_cohort("t", "internal", y, p, None, 0.5, n_boot=20, unit="scan")
    assert c["ece_before"]["value"] is None and c["brier_before"]["value"] is None and c["reliability_before"] is None
    assert c["ece_after"]["value"] == expected_calibration_error(y, p, n_bins=10)
    both = classification_cohort("t", "internal", y, p, np.clip(p * 1.3, 0, 1), 0.5, n_boot=20, unit="scan")
    assert both["ece_before"]["value"] != both["ece_after"]["value"]


def test_operating_point_unit_comes_from_the_data(tmp_path) -> None:
    import json

    from medsight.report.assemble import operating_point

    (tmp_path / "config.json").write_text(json.dumps({"thresholds": {"lesion": 0.3}}))
    assert operating_point(tmp_path, "patient")["unit"] == "patient"  # not a fixed "slice"
    assert operating_point(tmp_path, "case")["unit"] == "case"


def test_fold_partitioning_checks_the_test_set_against_what_each_fold_saw(tmp_path) -> None:
    """splits.json's "test" (cases in no fold) is checked against the fold's training AND validation patients: a
    test patient that a fold validated on (checkpoint choice, fitted rules) is an overlap, worked by hand here."""
    import json

    from medsight.report.run_model import fold_partitioning

    model, data = tmp_path / "model", tmp_path / "data"
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "model_final.pt").write_bytes(b"")  # a trained fold (available_folds)
    data.mkdir()
    (data / "manifest.csv").write_text("case_id,patient_id\na,p1\nb,p2\nc,p3\nd,p4\ne,p3\n")
    (model / "splits.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["c"], "test": ["d"]}]))
    clean = fold_partitioning(model, data)
    assert clean["patient_level"] is True and '"test"' in clean["how"]
    (model / "splits.json").write_text(json.dumps([{"train": ["a", "b"], "val": ["c"], "test": ["d", "e"]}]))
    leak = fold_partitioning(model, data)  # e is p3's rescan, and fold 0 validated on p3's case c
    assert leak["patient_level"] is False and leak["overlaps"] == {"fold 0 vs test": ["p3"]}
