"""Patient-level K-fold cross-validation: every scan of one patient lands in the same fold, never two.

Folds are stratified by site where possible (scikit-learn's StratifiedGroupKFold) and fixed by the seed, so the
same dataset and seed always give the same split; the split is written to JSON beside the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

from medsight.data.dataset import SegDataset
from medsight.errors import DatasetError
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
    x = np.zeros((len(ids), 1))
    if strata is not None and len(set(strata)) > 1:
        y = [strata[i] for i in order]
        smallest = min(len({g for g, s in zip(groups, y) if s == v}) for v in set(y))
        splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed) if smallest >= n_folds else None
    else:
        y, splitter = None, None
    if splitter is not None:
        parts = splitter.split(x, y, groups)
    else:
        parts = GroupKFold(n_folds, shuffle=True, random_state=seed).split(x, None, groups)
    folds = [{"train": sorted(ids[i] for i in tr), "val": sorted(ids[i] for i in va)} for tr, va in parts]
    return folds


def dataset_folds(ds: SegDataset, n_folds: int = 5, seed: int = 0, sites: tuple[str, ...] | None = None
                  ) -> list[dict[str, list[str]]]:
    """Patient-level folds over the cases of ``ds`` (optionally only those from ``sites``), stratified by site."""
    cases = [c for c in ds.cases if sites is None or c.site in sites]
    if not cases:
        raise DatasetError(f"no cases from site(s) {sites} to split", ds.root)
    return patient_kfold([c.case_id for c in cases], [c.patient_id for c in cases], n_folds, seed,
                         [c.site for c in cases])


def save_folds(folds: list[dict[str, list[str]]], path: str | Path) -> Path:
    atomic_write_text(path, json.dumps(folds, indent=1))
    return Path(path)


def load_folds(path: str | Path) -> list[dict[str, list[str]]]:
    return json.loads(Path(path).read_text())
