"""The segmentation demo's held-out cohort is a real test set: cases of the training sites that no fold trains or
validates on (validation chooses the checkpoint and fits the lesion detection/referral rules), from patients no
fold holds, with >= 10 lesion cases counted from the written label maps (issue 33 point 3), and the demo's own
cases unchanged by adding it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsight.demo import DemoContext
from medsight.demo import segmentation as stage
from medsight.files import sha256_file
from medsight.synthetic.demo import LABELS, TRAINING_SITES, UNSEEN_SITE, plan_cases


def _manifest(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


def _lesion_cases(root: Path, rows: list[dict[str, str]]) -> int:
    """Cases whose label map holds a lesion voxel (read from the NIfTI files, not from the manifest)."""
    return sum(bool((np.asarray(nib.load(str(root / r["label"])).dataobj) == LABELS["lesion"]).any()) for r in rows)


def test_full_size_test_cohort_is_new_patients_with_enough_lesions(tmp_path: Path) -> None:
    """The demo's real sizes (seed 0): only the test cohort and site_C are built (build_demo_dataset(patients=...)
    gives the same files as the whole build); each holds >= 10 lesion cases in its label maps."""
    planned = plan_cases(stage.N_CASES, 0, stage.LESION_SHARE, stage.LESION_PROFILE)  # the 64 cases the folds split
    fold_patients = {s.patient_id for s in planned if s.site.name in TRAINING_SITES}
    site_c = sorted({s.patient_id for s in planned if s.site.name == UNSEEN_SITE})
    first = 1 + max(int(s.patient_id[1:]) for s in planned)
    test_patients = [f"P{n:04d}" for n in range(first, first + stage.N_TEST)]  # one scan each, numbered after
    root = stage.build_data(tmp_path / "d", seed=0, patients=site_c + test_patients)
    rows = _manifest(root)
    test = [r for r in rows if r["split"] == "test"]
    unseen = [r for r in rows if r["site"] == UNSEEN_SITE]
    assert len(test) == stage.N_TEST and {r["patient_id"] for r in test} == set(test_patients)
    assert {r["site"] for r in test} == set(TRAINING_SITES)
    assert fold_patients.isdisjoint(r["patient_id"] for r in test)  # no fold patient has a scan in the test cohort
    assert all(r["split"] == "" for r in unseen)
    n_test_lesions, n_unseen_lesions = _lesion_cases(root, test), _lesion_cases(root, unseen)
    assert n_test_lesions >= 10 and n_unseen_lesions >= 10, (n_test_lesions, n_unseen_lesions)
    assert n_test_lesions == round(stage.LESION_SHARE * stage.N_TEST)  # a fixed share, whatever the seed


def test_adding_the_test_cohort_leaves_the_demo_cases_byte_identical(tmp_path: Path) -> None:
    """The training cases (hence the model) do not change: a case built with the test cohort planned after it has
    the same image and label bytes as in the build without one."""
    pick = ["P0001", "P0054"]  # the first patient and the last one of the 64-case plan (site_C)
    kw = dict(n_cases=stage.N_CASES, seed=0, quiet=True, lesion_share=stage.LESION_SHARE,
              lesion_profile=stage.LESION_PROFILE, patients=pick)
    from medsight.synthetic.demo import build_demo_dataset

    without = build_demo_dataset(tmp_path / "without", **kw)
    with_test = build_demo_dataset(tmp_path / "with", n_test=stage.N_TEST, **kw)
    files = sorted(p.relative_to(without) for p in without.rglob("*.nii.gz"))
    assert len(files) >= 4
    assert all(sha256_file(without / f) == sha256_file(with_test / f) for f in files)
    assert [r["case_id"] for r in _manifest(without)] == [r["case_id"] for r in _manifest(with_test)]


@pytest.mark.slow
def test_stage_scores_held_out_only_on_cases_no_fold_trained_validated_or_fitted_rules_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage (fast sizes) end to end, with spies on what training validated on (checkpoint choice) and on what
    the lesion study (the cases the detection and referral rules are fitted on) saw."""
    import medsight.segmentation.train as seg_train

    seen: dict[str, list[str]] = {"train": [], "val": [], "lesion_study": []}
    real_train, real_study = seg_train.train_fold, seg_train.fold_lesion_study

    def train_fold(ds, plan, config, fold, model_dir, train_ids, val_ids, **kw):  # noqa: ANN001, ANN003, ANN202
        seen["train"] += list(train_ids)
        seen["val"] += list(val_ids)
        return real_train(ds, plan, config, fold, model_dir, train_ids, val_ids, **kw)

    def fold_lesion_study(model, ds, plan, cfg, val_ids, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen["lesion_study"] += list(val_ids)
        return real_study(model, ds, plan, cfg, val_ids, *a, **kw)

    monkeypatch.setattr(seg_train, "train_fold", train_fold)
    monkeypatch.setattr(seg_train, "fold_lesion_study", fold_lesion_study)
    ctx = DemoContext(out_dir=tmp_path / "out", seed=0, quiet=True, fast=True)
    res = stage.run(ctx)

    rows = _manifest(ctx.paths["seg_data"])
    marked = sorted(r["case_id"] for r in rows if r["split"] == "test")
    with open(ctx.paths["seg_metrics"], newline="") as f:
        scored = sorted({r["case_id"] for r in csv.DictReader(f) if r["group"] == "held_out"})
    assert scored == marked and len(marked) == stage.N_TEST_FAST == res["held_out_cases"]
    assert seen["train"] and seen["val"] and seen["lesion_study"] == seen["val"]
    for used in seen.values():
        assert set(scored).isdisjoint(used)
    patient = {r["case_id"]: r["patient_id"] for r in rows}
    trained_or_validated = {patient[c] for c in seen["train"] + seen["val"]}
    assert trained_or_validated.isdisjoint(patient[c] for c in scored)
    splits = json.loads((Path(ctx.paths["seg_model"]) / "splits.json").read_text())  # inside the package
    for f in splits:
        assert f["test"] == marked and set(marked).isdisjoint(f["train"] + f["val"])
    assert res["validation_cases"] == len(splits[0]["val"]) and res["train_cases"] == len(splits[0]["train"])
    assert res["held_out_lesion_cases"] == _lesion_cases(Path(ctx.paths["seg_data"]),
                                                         [r for r in rows if r["split"] == "test"])
