"""The one patient splitter: every scan of one patient lands on the same side, never two.

``patient_kfold`` gives K cross-validation folds (segmentation), ``patient_holdout`` one validation share
(classification without a split column): both are folds of scikit-learn's StratifiedGroupKFold (GroupKFold where
a stratum has too few patients for the fold count) fixed by the seed, so the same data and seed always give the
same split; the split is written to JSON beside the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from medsight.data.dataset import SegDataset
from medsight.errors import ConfigError, DatasetError
from medsight.files import atomic_write_text


def patient_kfold(case_ids: list[str], patient_ids: list[str], n_folds: int = 5, seed: int = 0,
                  strata: list[str] | None = None) -> list[dict[str, list[str]]]:
    """``n_folds`` dicts of ``{"train": [...], "val": [...]}`` case ids, grouped by patient."""
    if len(case_ids) != len(patient_ids):
        raise DatasetError("case_ids and patient_ids differ in length")
    n_patients = len(set(patient_ids))
    if n_patients < n_folds:
        raise DatasetError(f"{n_patients} patient(s) cannot fill {n_folds} folds; use fewer folds or more patients")
    order = np.argsort(case_ids, kind="stable")  # independent of input order
    ids = [case_ids[i] for i in order]
    groups = [patient_ids[i] for i in order]
    y = [strata[i] for i in order] if strata is not None else None
    parts = group_folds(groups, y, n_folds, seed)
    folds = [{"train": sorted(ids[i] for i in tr), "val": sorted(ids[i] for i in va)} for tr, va in parts]
    return folds


def group_folds(groups: Sequence[str], strata: Sequence | None, n_folds: int, seed: int, *,
                force_stratified: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, held-out) row indices per fold, no group on both sides; stratified when every stratum has at least
    ``n_folds`` groups (or ``force_stratified``), else grouped only."""
    x = np.zeros((len(groups), 1))
    splitter = None
    if strata is not None and (force_stratified or len(set(strata)) > 1):
        smallest = min(len({g for g, s in zip(groups, strata) if s == v}) for v in set(strata))
        if force_stratified or smallest >= n_folds:
            splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
    if splitter is not None:
        return list(splitter.split(x, strata, groups))
    return list(GroupKFold(n_folds, shuffle=True, random_state=seed).split(x, None, groups))


def patient_holdout(patients: np.ndarray, strata: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the held-out rows: about ``fraction`` of patients, class balance kept, no patient split."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"the validation fraction must be between 0 and 1, got {fraction}")
    n_splits = max(2, int(round(1.0 / fraction)))
    n_groups = len(set(patients))
    if n_groups < n_splits:
        raise DatasetError(f"only {n_groups} patients: too few for a {fraction:.0%} patient-level split; "
                           "add patients or give a split column")
    _, held = group_folds(list(patients), list(strata), n_splits, seed, force_stratified=True)[0]
    mask = np.zeros(len(patients), dtype=bool)
    mask[held] = True
    return mask


def dataset_folds(ds: SegDataset, n_folds: int = 5, seed: int = 0, sites: tuple[str, ...] | None = None
                  ) -> list[dict[str, list[str]]]:
    """Patient-level folds over the cases of ``ds`` (optionally only those from ``sites``), stratified by site.

    Cases whose manifest ``split`` is ``test`` are in no fold: a fold's validation cases choose the checkpoint and
    fit rules, so a test set must stay outside them. They are listed under each fold's ``"test"`` key (only when
    there are any), so that splits.json shows they are disjoint from every fold's train and val."""
    pool = [c for c in ds.cases if sites is None or c.site in sites]
    test = [c for c in pool if is_test_case(c.attrs)]
    cases = [c for c in pool if not is_test_case(c.attrs)]
    if not cases:
        raise DatasetError(f"no cases from site(s) {sites} to split", ds.root)
    both = sorted({c.patient_id for c in test} & {c.patient_id for c in cases})
    if both:
        raise DatasetError(f"patient(s) {', '.join(both[:5])} have scans marked split=test and scans without it; "
                           "all scans of one patient belong on one side: mark them all or none", ds.root)
    folds = patient_kfold([c.case_id for c in cases], [c.patient_id for c in cases], n_folds, seed,
                          [c.site for c in cases])
    if test:
        for f in folds:
            f["test"] = sorted(c.case_id for c in test)
    return folds


def is_test_case(attrs: dict[str, str]) -> bool:
    """A case the manifest's ``split`` column marks as held-out test (``medsight.data.manifest.SPLITS``)."""
    return str(attrs.get("split", "")).strip() == "test"


def save_folds(folds: list[dict[str, list[str]]], path: str | Path) -> Path:
    atomic_write_text(path, json.dumps(folds, indent=1))
    return Path(path)


def load_folds(path: str | Path) -> list[dict[str, list[str]]]:
    return json.loads(Path(path).read_text())
