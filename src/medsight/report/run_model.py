"""Run a model over the internal cohort and the external sites, giving the per-case tables assemble.py reads.

Segmentation models are medsight plan folders (plan.json + fold_*/). The internal cohort is the **test set in no
fold** when the saved folds (splits.json) list one (``"test"``: manifest ``split = test``) and the dataset holds
it: no fold trained on those cases or chose its checkpoint / fitted its lesion rules on them, so they are scored by
the ensemble of all trained folds. Without one it is the validation cases of the saved patient-level folds, each
scored **out of fold**: only by the model of the fold that held it out (the ensemble of all folds contains models
that trained on it, which inflates internal Dice), and the report says these cases chose the checkpoint. External
sites, which no fold trained on, are scored by the ensemble of all trained folds. The table's ``scored_by`` column
says which model scored each case.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medsight.errors import DatasetError, InputNotFoundError


def labels_of(dataset: Path) -> dict[int, str]:
    from medsight.data.dataset import load_dataset

    return load_dataset(dataset).foreground


def case_ids_of(dataset: Path) -> list[str]:
    from medsight.data.dataset import load_dataset

    return [c.case_id for c in load_dataset(dataset).cases]


def is_segmentation_model(model_dir: Path) -> bool:
    return (Path(model_dir) / "plan.json").is_file()


def internal_cases(model_dir: Path, folds: Sequence[int] | None = None) -> list[str]:
    """Validation cases of the trained folds (those with ``model_final.pt``; all folds when ``folds`` is None)."""
    p = Path(model_dir) / "splits.json"
    if not p.is_file():
        raise InputNotFoundError(f"{p} not found: the internal test cases are the saved folds' validation cases; "
                                 "train with `medsight train` or pass --external-site only", p)
    from medsight.data.splits import load_folds

    from medsight.segmentation.ensemble import available_folds

    all_folds = load_folds(p)
    use = range(len(all_folds)) if folds is None else folds
    done = set(available_folds(Path(model_dir)))  # a fold folder without model_final.pt (a crash) predicts nothing
    trained = [i for i in use if str(i) in done]
    return sorted({c for i in trained for c in all_folds[i]["val"]})


TEST_SET = "internal test set (in no fold)"
FOLD_VALIDATION = "internal fold validation cases (out-of-fold)"


@dataclass(frozen=True)
class InternalCohort:
    """The internal cases validate scores, the cohort's name in the report, and a note saying what they are."""

    case_ids: list[str]
    name: str
    in_no_fold: bool
    note: str


def listed_test_cases(model_dir: Path) -> list[str]:
    """The test set in no fold that splits.json lists (each fold's ``"test"``), empty when it lists none."""
    p = Path(model_dir) / "splits.json"
    if not p.is_file():
        return []
    from medsight.data.splits import load_folds

    return sorted({str(c) for f in load_folds(p) for c in f.get("test") or []})


def internal_cohort(model_dir: Path, dataset_ids: Collection[str]) -> InternalCohort:
    """The test set in no fold where splits.json lists one and the dataset holds some of it; else the folds'
    validation cases (``internal_cases``), with a note that they chose the checkpoint."""
    listed, held = listed_test_cases(model_dir), set(map(str, dataset_ids))
    test = [c for c in listed if c in held]
    if test:
        missing = len(listed) - len(test)
        return InternalCohort(test, TEST_SET, True, (
            f"Internal cohort: {len(test)} case(s) of the test set in no fold (splits.json \"test\"): no fold "
            "trained on them, chose its checkpoint or fitted its rules on them"
            + (f"; {missing} listed test case(s) are not in this dataset and were not scored" if missing else "")
            + "."))
    why = (f"splits.json lists {len(listed)} test case(s) in no fold but this dataset holds none of them"
           if listed else "splits.json lists no test set in no fold")
    return InternalCohort(internal_cases(model_dir), FOLD_VALIDATION, False, (
        f"Internal cohort: the folds' validation cases ({why}). They chose each fold's checkpoint and fitted its "
        "rules, so the internal figures are optimistic; mark held-out cases split=test in the manifest before "
        "training for a test set in no fold."))


def out_of_fold(model_dir: Path) -> dict[str, str]:
    """case_id -> the trained fold (name) that held it out for validation; the model that never saw it."""
    from medsight.data.splits import load_folds
    from medsight.segmentation.ensemble import available_folds

    p = Path(model_dir) / "splits.json"
    folds = load_folds(p) if p.is_file() else []
    trained = set(available_folds(Path(model_dir)))
    out: dict[str, str] = {}
    for i, f in enumerate(folds):
        if str(i) in trained:
            for c in f["val"]:
                out.setdefault(str(c), str(i))
    return out


def fold_partitioning(model_dir: Path, dataset: Path) -> dict[str, Any]:
    """Checked, not asserted: for each trained fold, do its training and test cases share a patient?"""
    from medsight.report.checklist import partitioning

    p = Path(model_dir) / "splits.json"
    m = Path(dataset) / "manifest.csv"
    how = "each trained fold's training patients vs its test patients (splits.json, manifest patient_id)"
    if not p.is_file() or not m.is_file():
        return partitioning({}, how)
    from medsight.data.splits import load_folds
    from medsight.files import read_csv
    from medsight.segmentation.ensemble import available_folds

    table = read_csv(m, "dataset manifest", dtype=str)
    if "patient_id" not in table.columns:
        return partitioning({}, how)
    patient = dict(zip(table["case_id"], table["patient_id"]))
    trained = set(available_folds(Path(model_dir)))
    pairs = {f"fold {i}": ({patient.get(c, c) for c in f["train"]}, {patient.get(c, c) for c in f["val"]})
             for i, f in enumerate(load_folds(p)) if str(i) in trained}
    # a test set in no fold (splits.json "test"): nothing a fold trained or validated on (checkpoint, fitted rules)
    pairs.update({f"fold {i} vs test": ({patient.get(c, c) for c in f["train"] + f["val"]},
                                        {patient.get(c, c) for c in f["test"]})
                  for i, f in enumerate(load_folds(p)) if str(i) in trained and f.get("test")})
    if any(name.endswith("vs test") for name in pairs):
        how += "; its training and validation patients vs the test set's (splits.json \"test\")"
    return partitioning(pairs, how)


def scoring_note(table: pd.DataFrame, external_sites: Sequence[str], in_no_fold: Collection[str] = ()) -> str:
    """One sentence for the report: which model scored the internal and the external cases (read from the table;
    ``in_no_fold``: the test set in no fold, which no model trained on)."""
    by = table.drop_duplicates("case_id")
    ext = by["site"].isin(set(external_sites))
    test = by["case_id"].astype(str).isin(set(in_no_fold)) & ~ext
    internal, external, by_test = by[~ext & ~test], by[ext], by[test]
    oof = internal["scored_by"].astype(str).str.startswith("fold ")
    parts = []
    if len(by_test):
        parts.append(f"{len(by_test)} internal test case(s) in no fold scored by {by_test['scored_by'].iloc[0]} "
                     "(no fold trained on them)")
    if oof.any():
        parts.append(f"{int(oof.sum())} internal test case(s) each scored only by the model of the fold that held it "
                     f"out (out-of-fold, {internal.loc[oof, 'scored_by'].nunique()} fold models)")
    if (~oof).any():
        parts.append(f"{int((~oof).sum())} internal test case(s) scored by "
                     f"{internal.loc[~oof, 'scored_by'].iloc[0]}, which includes models that trained on them")
    if len(external):
        parts.append(f"{len(external)} external-site case(s) scored by {external['scored_by'].iloc[0]} "
                     "(no fold trained on them)")
    return "Scoring: " + "; ".join(parts) + "."


def fold_predictor(model_dir: Path, fold: str | None) -> Any:
    """The predictor of one fold (None: every fold), at the window overlap and with the mirror axes the package
    measured as worth their cost at training (``predict.recorded_overlap`` / ``recorded_mirror_axes``), as
    ``medsight predict`` does by default: validation scores the model the way it will be used."""
    from medsight.segmentation.predict import Predictor

    return Predictor(model_dir, folds=None if fold is None else [fold])


def segmentation_table(model_dir: Path, dataset: Path, external_sites: Sequence[str], pred_dir: Path,
                       quiet: bool = False, internal: str = "out-of-fold",
                       cohort: InternalCohort | None = None) -> pd.DataFrame:
    """Predict each internal (``internal_cohort``) and external case, write its labels to ``pred_dir``, one row
    per case/label.

    A fold validation case is scored with the one fold model that held it out (``internal="out-of-fold"``,
    default) or with all folds (``"ensemble"``: leaky, only for measuring the leak, see docs/benchmarks.md); a
    test case in no fold always by the ensemble of all trained folds. ``cohort``: the internal cohort when the
    caller has it already (``medsight validate`` names it in the report), else found here."""
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
    if has_folds and cohort is None:
        cohort = internal_cohort(model_dir, sites)
    targets = [c for c in (cohort.case_ids if has_folds and cohort else []) if sites.get(c) not in set(external_sites)]
    internal_ids = set(targets)
    targets += [c.case_id for c in ds.cases if c.site in set(external_sites)]
    if internal not in ("out-of-fold", "ensemble"):
        raise ValueError(f"internal must be 'out-of-fold' or 'ensemble', not {internal!r}")
    fold_of = out_of_fold(model_dir) if internal == "out-of-fold" else {}
    predictors: dict[str | None, Predictor] = {}

    def predictor_for(cid: str) -> tuple[Predictor, str]:
        fold = fold_of.get(cid) if cid in internal_ids else None
        if fold not in predictors:
            predictors[fold] = fold_predictor(model_dir, fold)
        n = len(predictors[fold].models)
        return predictors[fold], (f"fold {fold} (out-of-fold)" if fold is not None
                                  else f"ensemble of all folds ({n} models)")
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
        predictor, scored_by = predictor_for(cid)
        pred = predictor.predict(channels if len(channels) > 1 else image)
        write_prediction(pred, Path(pred_dir) / f"{cid}.nii.gz")
        ref = read_nifti(case.label).array
        for m in segmentation_metrics(pred.labels.array, ref, image.spacing, ds.foreground):
            rows.append({"case_id": cid, "site": case.site, "scored_by": scored_by, **m})
    return pd.DataFrame(rows)
