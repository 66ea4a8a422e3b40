"""Patient-level K-fold: never one patient in two folds; every case validated exactly once; reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsight.data.splits import dataset_folds, patient_kfold
from medsight.errors import DatasetError


def _cases(n_patients=23, seed=1):
    rng = np.random.default_rng(seed)
    cases, patients, sites = [], [], []
    for p in range(n_patients):
        for v in range(int(rng.integers(1, 4))):  # 1-3 scans per patient
            cases.append(f"c{p:02d}_{v}")
            patients.append(f"p{p:02d}")
            sites.append("A" if p % 3 else "B")
    return cases, patients, sites


def test_no_patient_in_two_folds_and_every_case_validated_once():
    cases, patients, sites = _cases()
    folds = patient_kfold(cases, patients, 5, seed=0, strata=sites)
    owner = dict(zip(cases, patients))
    val_all = [c for f in folds for c in f["val"]]
    assert sorted(val_all) == sorted(cases)  # each case in exactly one validation fold
    for f in folds:
        assert set(f["train"]).isdisjoint(f["val"])
        assert sorted(f["train"] + f["val"]) == sorted(cases)
        assert {owner[c] for c in f["train"]}.isdisjoint({owner[c] for c in f["val"]})
    val_patients = [{owner[c] for c in f["val"]} for f in folds]
    for i in range(5):
        for j in range(i + 1, 5):
            assert val_patients[i].isdisjoint(val_patients[j])


def test_deterministic_and_independent_of_input_order():
    cases, patients, sites = _cases()
    a = patient_kfold(cases, patients, 5, seed=3, strata=sites)
    order = np.random.default_rng(0).permutation(len(cases))
    b = patient_kfold([cases[i] for i in order], [patients[i] for i in order], 5, seed=3,
                      strata=[sites[i] for i in order])
    assert a == b
    assert a != patient_kfold(cases, patients, 5, seed=4, strata=sites)


def test_site_stratification_puts_each_site_in_every_fold():
    cases, patients, sites = _cases(40)
    site_of = dict(zip(cases, sites))
    for f in patient_kfold(cases, patients, 5, seed=0, strata=sites):
        assert {site_of[c] for c in f["val"]} == {"A", "B"}


def test_too_few_patients():
    with pytest.raises(DatasetError, match="cannot fill 5 folds"):
        patient_kfold(["a", "b", "c"], ["p", "p", "q"], 5)


def test_patient_holdout_is_the_first_stratified_group_fold():
    """The classification hold-out is fold 0 of scikit-learn's StratifiedGroupKFold run side by side."""
    from sklearn.model_selection import StratifiedGroupKFold

    from medsight.data.splits import patient_holdout

    patients = np.array([f"p{i // 2}" for i in range(60)])
    strata = np.array([int(i // 2 % 3 == 0) for i in range(60)])
    held = patient_holdout(patients, strata, 0.2, seed=5)
    _, ref = next(StratifiedGroupKFold(5, shuffle=True, random_state=5).split(np.zeros(60), strata, patients))
    assert np.flatnonzero(held).tolist() == sorted(ref.tolist())
    assert not set(patients[held]) & set(patients[~held])


def _seg_dataset(rows):
    """A SegDataset of (case_id, patient_id, site, split) rows; the splitter reads ids and attributes only."""
    from medsight.data.dataset import Case, SegDataset

    cases = tuple(Case(c, (), None, p, s, {"split": sp}) for c, p, s, sp in rows)
    return SegDataset(Path("."), "t", {0: "T1"}, {"background": 0, "x": 1}, ".nii.gz", cases)


def test_cases_marked_test_are_in_no_fold_and_listed_under_test():
    """A case with manifest split=test never trains and never validates in any fold (its validation would choose the
    checkpoint and fit rules); splits.json lists it under "test" beside every fold."""
    rows = [(f"c{i:02d}", f"p{i // 2:02d}", "AB"[i % 2], "") for i in range(30)]  # 2 scans per patient
    rows += [(f"t{i}", f"q{i}", "AB"[i % 2], "test") for i in range(5)] + [("x0", "r0", "C", "test")]
    folds = dataset_folds(_seg_dataset(rows), 3, seed=0, sites=("A", "B"))
    test = {f"t{i}" for i in range(5)}
    assert len(folds) == 3
    for f in folds:
        assert f["test"] == sorted(test)  # site C's test case is outside the sites asked for
        assert test.isdisjoint(f["train"]) and test.isdisjoint(f["val"])
        assert sorted(f["train"] + f["val"]) == [f"c{i:02d}" for i in range(30)]
    # without test cases the folds are exactly those of before (no "test" key), and the same for the other cases
    plain = dataset_folds(_seg_dataset(rows[:30]), 3, seed=0, sites=("A", "B"))
    assert all(set(f) == {"train", "val"} for f in plain)
    assert [{"train": f["train"], "val": f["val"]} for f in folds] == plain


def test_a_patient_on_both_sides_of_the_test_split_is_refused():
    rows = [(f"c{i}", f"p{i}", "A", "") for i in range(6)] + [("t0", "p0", "A", "test")]  # p0's rescan marked test
    with pytest.raises(DatasetError, match="p0 have scans marked split=test"):
        dataset_folds(_seg_dataset(rows), 3, seed=0)
