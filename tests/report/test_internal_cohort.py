"""``medsight validate``'s internal cohort: the test set in no fold when splits.json lists one (the folds'
validation cases chose the checkpoint and fitted the lesion rules, so scoring them is optimistic), else the folds'
validation cases out of fold, as before, with the report saying which.

The model folder and dataset are test_checkable's hand-made segmentation run (12 scans, sites A/B/C); the
predictor is replaced by one that records which fold models were asked for, so no training is needed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from medsight.report import run_model
from medsight.report.assemble import segmentation_results
from tests.report.test_checkable import LABELS, _segmentation


class _Zero:
    """Stands in for a fold predictor: predicts background everywhere, records the folds it stands for."""

    def __init__(self, fold: str | None, asked: list[str | None]) -> None:
        self.fold, self.models = fold, [object()] * (1 if fold is not None else 2)
        asked.append(fold)

    def predict(self, image):  # noqa: ANN001, ANN201
        from medsight.image import Image

        return SimpleNamespace(labels=Image(np.zeros(image.array.shape, np.int16), image.geometry, image.provenance))


@pytest.fixture()
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Path], list[str | None]]:
    paths = _segmentation(tmp_path)
    meta = paths["seg_data"] / "dataset.json"  # the demo stage reads labels only; validate loads the dataset
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "channel_names": {"0": "T1"}}))
    manifest = pd.read_csv(paths["seg_data"] / "manifest.csv", dtype=str)
    manifest["image"] = "imagesTr/" + manifest.case_id + "_0000.nii.gz"
    manifest["label"] = "labelsTr/" + manifest.case_id + ".nii.gz"
    manifest.to_csv(paths["seg_data"] / "manifest.csv", index=False)
    for k in (0, 1):  # two trained folds (the checkpoints are never read: the predictor is replaced)
        (paths["seg_model"] / f"fold_{k}").mkdir(exist_ok=True)
        (paths["seg_model"] / f"fold_{k}" / "model_final.pt").write_bytes(b"")
    asked: list[str | None] = []
    monkeypatch.setattr(run_model, "fold_predictor", lambda model_dir, fold: _Zero(fold, asked))
    monkeypatch.setattr("medsight.segmentation.predict.write_prediction", lambda pred, path: None)
    return paths, asked


def _splits(model: Path, test: list[str]) -> list[dict[str, list[str]]]:
    """Two folds over demo_000..007 (sites A/B/C), the test set in no fold as dataset_folds writes it."""
    folds = [{"train": ["demo_000", "demo_001", "demo_002"], "val": ["demo_004", "demo_007"]},
             {"train": ["demo_004", "demo_007", "demo_005"], "val": ["demo_000", "demo_001"]}]
    for f in folds:
        if test:
            f["test"] = test
    (model / "splits.json").write_text(json.dumps(folds))
    return folds


def _internal_ids(table: pd.DataFrame) -> set[str]:
    return set(table.loc[table["site"] != "site_C", "case_id"].astype(str))


def test_a_listed_test_set_is_the_internal_cohort_and_no_fold_saw_it(run, tmp_path: Path) -> None:
    paths, asked = run
    test = ["demo_009", "demo_010", "demo_012_not_here"]  # site_A, site_B, and one the dataset lacks
    folds = _splits(paths["seg_model"], test)
    table = run_model.segmentation_table(paths["seg_model"], paths["seg_data"], ["site_C"], tmp_path / "p", quiet=True)
    ids = _internal_ids(table)
    assert ids == {"demo_009", "demo_010"}  # the listed test cases the dataset holds, not a validation case
    for f in folds:
        assert not ids & (set(f["train"]) | set(f["val"]))
    # no fold trained on them: scored by the ensemble of all trained folds, never by one fold's model
    assert set(table.loc[table.case_id.isin(ids), "scored_by"]) == {"ensemble of all folds (2 models)"}
    assert asked == [None]

    cohort = run_model.internal_cohort(paths["seg_model"], run_model.case_ids_of(paths["seg_data"]))
    assert cohort.in_no_fold and cohort.name == run_model.TEST_SET and cohort.case_ids == ["demo_009", "demo_010"]
    assert "1 listed test case(s) are not in this dataset" in cohort.note
    res = segmentation_results(table, paths["seg_data"], LABELS, {"name": "m"}, ["site_C"], min_cases=2, n_boot=20,
                               internal=cohort.name)
    names = {c["name"]: c["n"] for c in res.segmentation["cohorts"]}
    assert names[run_model.TEST_SET] == 2 and res.data["internal"] == run_model.TEST_SET
    note = run_model.scoring_note(table, ["site_C"], cohort.case_ids)
    assert "2 internal test case(s) in no fold" in note and "trained on them, which" not in note


def test_without_a_test_set_the_fold_validation_cases_are_scored_out_of_fold(run, tmp_path: Path) -> None:
    paths, asked = run
    folds = _splits(paths["seg_model"], [])
    table = run_model.segmentation_table(paths["seg_model"], paths["seg_data"], ["site_C"], tmp_path / "p", quiet=True)
    # demo_000/001/004/007 are the two folds' validation cases; demo_000's site is A (i % 3), 007's is B
    assert _internal_ids(table) == {"demo_000", "demo_001", "demo_004", "demo_007"}
    by = table.drop_duplicates("case_id").set_index("case_id")["scored_by"]
    for k, f in enumerate(folds):
        assert all(by[c] == f"fold {k} (out-of-fold)" for c in f["val"])
    cohort = run_model.internal_cohort(paths["seg_model"], run_model.case_ids_of(paths["seg_data"]))
    assert not cohort.in_no_fold and cohort.name == run_model.FOLD_VALIDATION
    assert "lists no test set" in cohort.note and "optimistic" in cohort.note


def test_a_test_set_the_dataset_lacks_falls_back_and_says_so(run, tmp_path: Path) -> None:
    paths, _ = run
    _splits(paths["seg_model"], ["other_000", "other_001"])
    table = run_model.segmentation_table(paths["seg_model"], paths["seg_data"], ["site_C"], tmp_path / "p", quiet=True)
    assert _internal_ids(table) == {"demo_000", "demo_001", "demo_004", "demo_007"}
    cohort = run_model.internal_cohort(paths["seg_model"], run_model.case_ids_of(paths["seg_data"]))
    assert cohort.name == run_model.FOLD_VALIDATION and "lists 2 test case(s) in no fold but this dataset holds none" \
        in cohort.note


def test_validate_cli_names_the_test_set_and_scores_only_it(run, tmp_path: Path, monkeypatch) -> None:
    """The command as a user runs it on a package whose splits.json lists a test set: report.json's internal
    cohort is the test set (name, n, data.scoring), and the page's notes say what the cohort is."""
    from click.testing import CliRunner

    from medsight.cli.validate import validate
    from medsight.package import save_package

    paths, _ = run
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    _splits(paths["seg_model"], ["demo_009", "demo_010"])
    pkg = save_package(paths["seg_model"], tmp_path / "pkg", task="segmentation", name="cohort-seg").path
    r = CliRunner().invoke(validate, [str(pkg), str(paths["seg_data"]), "--external-site", "site_C", "--report",
                                      str(tmp_path / "r.html"), "--n-boot", "20", "--min-cases", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["data"]["internal"] == run_model.TEST_SET
    cohorts = {c["name"]: c["n"] for c in doc["segmentation"]["cohorts"]}
    assert cohorts == {run_model.TEST_SET: 2, "external: site_C": 4}
    internal = {c for c, by in doc["data"]["scoring"].items() if not c.endswith(("2", "5", "8", "11"))}
    assert internal == {"demo_009", "demo_010"}  # site_C is demo_002/005/008/011
    assert any("test set in no fold" in n and "2 case(s)" in n for n in doc["notes"])
    assert "Note: Internal cohort: 2 case(s) of the test set in no fold" in (tmp_path / "r.html").read_text()


def test_internal_cases_skip_a_fold_folder_without_its_checkpoint(tmp_path: Path) -> None:
    """A fold that crashed before ``model_final.pt`` leaves its folder: its validation cases would be scored by
    no fold model (out-of-fold) or silently by the others, so they are not internal cases."""
    from medsight.data.splits import save_folds

    folds = [{"train": ["b", "c"], "val": ["a"]}, {"train": ["a", "c"], "val": ["b"]},
             {"train": ["a", "b"], "val": ["c"]}]
    save_folds(folds, tmp_path / "splits.json")
    for k in (0, 1, 2):
        (tmp_path / f"fold_{k}").mkdir()
    for k in (0, 2):
        (tmp_path / f"fold_{k}" / "model_final.pt").write_bytes(b"")
    assert run_model.internal_cases(tmp_path) == ["a", "c"]
    assert run_model.internal_cases(tmp_path, folds=[1, 2]) == ["c"]
