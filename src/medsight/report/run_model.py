"""Run a model over the internal test fold and the external sites, giving the per-case tables assemble.py reads.

Segmentation models are medsight plan folders (plan.json + fold_*/); the internal test cases are the validation
cases of the saved patient-level folds (splits.json), so no training case is ever scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medsight.errors import DatasetError, InputNotFoundError


def labels_of(dataset: Path) -> dict[int, str]:
    from medsight.data.dataset import load_dataset

    return load_dataset(dataset).foreground


def is_segmentation_model(model_dir: Path) -> bool:
    return (Path(model_dir) / "plan.json").is_file()


def internal_cases(model_dir: Path, folds: Sequence[int] | None = None) -> list[str]:
    """Validation cases of the saved folds (all folds when ``folds`` is None)."""
    p = Path(model_dir) / "splits.json"
    if not p.is_file():
        raise InputNotFoundError(f"{p} not found: the internal test cases are the saved folds' validation cases; "
                                 "train with `medsight train` or pass --external-site only", p)
    from medsight.data.splits import load_folds

    all_folds = load_folds(p)
    use = range(len(all_folds)) if folds is None else folds
    trained = [i for i in use if (Path(model_dir) / f"fold_{i}").is_dir()]
    return sorted({c for i in trained for c in all_folds[i]["val"]})


def segmentation_table(model_dir: Path, dataset: Path, external_sites: Sequence[str], pred_dir: Path,
                       quiet: bool = False) -> pd.DataFrame:
    """Predict each internal test and external case, write its labels to ``pred_dir``, one row per case/label."""
    from medsight.data.dataset import load_dataset
    from medsight.segmentation.predict import Predictor, write_prediction
    from medsight.io.nifti import read_nifti
    from medsight.metrics.segmentation import segmentation_metrics

    ds = load_dataset(dataset)
    sites = {c.case_id: c.site for c in ds.cases}
    unknown = set(external_sites) - set(sites.values())
    if unknown:
        raise DatasetError(f"external site(s) {sorted(unknown)} not in {dataset}/manifest.csv; sites there: "
                           f"{sorted(set(sites.values()))}")
    # a model without saved folds (e.g. a federated one: no site's split left its site) is scored on the
    # external sites alone, as the error message of internal_cases offers
    has_folds = (Path(model_dir) / "splits.json").is_file() or not external_sites
    targets = [c for c in (internal_cases(model_dir) if has_folds else []) if sites.get(c) not in set(external_sites)]
    targets += [c.case_id for c in ds.cases if c.site in set(external_sites)]
    predictor = Predictor(model_dir, mirror_axes=[0])
    rows: list[dict[str, Any]] = []
    items: Any = targets
    if not quiet:
        from tqdm import tqdm

        items = tqdm(targets, desc="validate", unit="case")
    for cid in items:
        case = ds.case(cid)
        if case.label is None:
            raise DatasetError(f"case {cid} has no label file in labelsTr; validation needs the reference")
        channels = [read_nifti(p) for p in case.images]  # every channel the plan was trained on, in order
        image = channels[0]
        pred = predictor.predict(channels if len(channels) > 1 else image)
        write_prediction(pred, Path(pred_dir) / f"{cid}.nii.gz")
        ref = read_nifti(case.label).array
        for m in segmentation_metrics(pred.labels.array, ref, image.spacing, ds.foreground):
            rows.append({"case_id": cid, "site": case.site, **m})
    return pd.DataFrame(rows)
