"""Per-case and summary tables: segmentation over folders of NIfTI pairs, classification over a predictions CSV.

This is what ``medsight evaluate`` writes. Every summary value comes with a case-level bootstrap CI, and every
table records enough (settings, file hashes, versions) to be traced to its inputs.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsight.errors import DatasetError, InputNotFoundError, MetricError
from medsight.files import atomic_write_text, read_csv
from medsight.metrics.bootstrap import bootstrap_ci

log = logging.getLogger(__name__)

SEG_SUMMARY_METRICS = ("dice", "iou", "sensitivity", "precision", "hd", "hd95", "assd", "nsd", "volume_diff_ml")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


# ---------------------------------------------------------------- segmentation
def case_id_of(path: Path) -> str:
    """Case id of a NIfTI file: its name without .nii/.nii.gz."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def nifti_files(folder: Path) -> dict[str, Path]:
    """Case id -> NIfTI path for every NIfTI file directly inside ``folder``."""
    if not folder.is_dir():
        raise InputNotFoundError("not a folder; give the folder holding the NIfTI files", folder)
    files = {case_id_of(p): p for p in sorted(folder.iterdir()) if p.name.lower().endswith(NIFTI_SUFFIXES)}
    if not files:
        raise InputNotFoundError("no .nii or .nii.gz files in this folder", folder)
    return files


def match_cases(pred_dir: Path, ref_dir: Path) -> list[tuple[str, Path, Path]]:
    """(case id, prediction, reference) for every reference case; a reference without prediction is an error."""
    preds, refs = nifti_files(pred_dir), nifti_files(ref_dir)
    missing = sorted(set(refs) - set(preds))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(f"no prediction for {len(missing)} reference case(s): {shown}; predictions are matched "
                           "to references by file name (case id)", pred_dir)
    extra = sorted(set(preds) - set(refs))
    if extra:
        log.warning("%d prediction(s) without a reference are ignored: %s", len(extra), ", ".join(extra[:5]))
    return [(cid, preds[cid], refs[cid]) for cid in sorted(refs)]


def labels_from_dataset_json(path: Path) -> dict[int, str]:
    """Foreground labels {value: name} from an MSD / nnU-Net dataset.json ("labels": {name: value})."""
    try:
        labels = json.loads(path.read_text())["labels"]
        out = {int(v): str(k) for k, v in labels.items() if not isinstance(v, list)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"cannot read 'labels' from dataset.json ({exc})", path) from exc
    return {k: v for k, v in out.items() if k != 0}


def parse_labels(text: str) -> dict[int, str]:
    """'1=grey_matter,2=white_matter' -> {1: 'grey_matter', 2: 'white_matter'}."""
    out: dict[int, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        value, _, name = item.partition("=")
        try:
            out[int(value)] = name.strip() or f"label_{int(value)}"
        except ValueError as exc:
            raise MetricError(f"labels must look like '1=liver,2=tumour', got {item!r}") from exc
    if not out:
        raise MetricError("no labels given; use e.g. --labels 1=liver,2=tumour")
    return out


def _check_geometry(case_id: str, pred: Any, ref: Any, pred_path: Path) -> None:
    if pred.array.shape != ref.array.shape:
        raise MetricError(f"case {case_id}: prediction shape {pred.array.shape} differs from reference "
                          f"{ref.array.shape}; resample the prediction onto the reference grid", pred_path)
    sp_p, sp_r = np.asarray(pred.geometry.spacing), np.asarray(ref.geometry.spacing)
    if not np.allclose(sp_p, sp_r, rtol=1e-4, atol=1e-5):
        raise MetricError(f"case {case_id}: prediction spacing {tuple(sp_p.round(5))} mm differs from reference "
                          f"{tuple(sp_r.round(5))} mm; resample the prediction onto the reference grid", pred_path)
    if not np.allclose(pred.geometry.affine, ref.geometry.affine, atol=1e-3):
        log.warning("case %s: prediction and reference origins/directions differ; voxels are compared by index",
                    case_id)


def evaluate_segmentation_folders(pred_dir: Path, ref_dir: Path, labels: Mapping[int, str],
                                  nsd_tolerance_mm: float = 1.0, quiet: bool = False) -> pd.DataFrame:
    """Per-case, per-label metrics for NIfTI label maps matched by case id (spacing from the reference)."""
    from tqdm import tqdm

    from medsight.io.nifti import read_nifti
    from medsight.metrics.segmentation import segmentation_metrics

    rows = []
    for case_id, p_path, r_path in tqdm(match_cases(Path(pred_dir), Path(ref_dir)), desc="evaluate seg",
                                        unit="case", disable=quiet):
        pred, ref = read_nifti(p_path), read_nifti(r_path)
        _check_geometry(case_id, pred, ref, p_path)
        if pred.array.ndim != 3 or ref.array.ndim != 3:
            raise MetricError(f"case {case_id}: label maps must be 3D, got {pred.array.ndim}D", p_path)
        for row in segmentation_metrics(pred.array, ref.array, ref.geometry.spacing, labels, nsd_tolerance_mm):
            if row["ref_empty"]:  # a false-positive case: how many separate findings did the model invent?
                row["n_pred_components"] = false_positive_components(pred.array == row["label"])
            rows.append({"case_id": case_id, **row, "pred_sha256": pred.provenance.source_files[-1].sha256,
                         "ref_sha256": ref.provenance.source_files[-1].sha256})
    return pd.DataFrame(rows)


# overlap and distance metrics are about a structure the reference holds: with an empty reference they say
# nothing (Dice 1 for an empty prediction, 0 otherwise), so they are averaged over reference-present cases only
REFERENCE_PRESENT_METRICS = ("dice", "iou", "sensitivity", "precision", "hd", "hd95", "assd", "nsd")


def reference_present(per_case: pd.DataFrame) -> np.ndarray:
    """Per row: does the reference contain the structure? From ``ref_empty``, else ``n_ref_voxels`` or
    ``volume_ref_ml``; a table with none of them is taken as all present (and logged)."""
    if "ref_empty" in per_case.columns:
        return ~per_case["ref_empty"].astype(str).str.lower().isin(("true", "1", "1.0")).to_numpy()
    for col in ("n_ref_voxels", "volume_ref_ml"):
        if col in per_case.columns:
            return pd.to_numeric(per_case[col], errors="coerce").fillna(0).to_numpy() > 0
    log.warning("the per-case table has no ref_empty/n_ref_voxels/volume_ref_ml column: every case is taken "
                "to contain every structure")
    return np.ones(len(per_case), dtype=bool)


def prediction_present(per_case: pd.DataFrame) -> np.ndarray:
    """Per row: did the prediction contain the structure (``pred_empty``, ``n_pred_voxels`` or volume)?"""
    if "pred_empty" in per_case.columns:
        return ~per_case["pred_empty"].astype(str).str.lower().isin(("true", "1", "1.0")).to_numpy()
    for col in ("n_pred_voxels", "volume_pred_ml"):
        if col in per_case.columns:
            return pd.to_numeric(per_case[col], errors="coerce").fillna(0).to_numpy() > 0
    return pd.to_numeric(per_case["dice"], errors="coerce").to_numpy() < 1  # empty ref: Dice 1 iff nothing predicted


def false_positive_stats(per_case: pd.DataFrame) -> dict[str, Any]:
    """Reference-empty cases of one structure: n, how many have a prediction anyway (false-positive cases), the
    false-positive rate, and the mean false-positive volume (ml) and component count when the table has them."""
    empty = per_case[~reference_present(per_case)]
    fp = prediction_present(empty)
    out: dict[str, Any] = {"n": int(len(empty)), "n_fp": int(fp.sum()),
                           "fp_rate": float(fp.mean()) if len(empty) else math.nan,
                           "fp_volume_ml": math.nan, "fp_components": math.nan}
    if len(empty) and "volume_pred_ml" in empty.columns:
        out["fp_volume_ml"] = float(pd.to_numeric(empty["volume_pred_ml"], errors="coerce").mean())
    if len(empty) and "n_pred_components" in empty.columns:
        out["fp_components"] = float(pd.to_numeric(empty["n_pred_components"], errors="coerce").mean())
    return out


def _summary_row(label: int, name: str, metric: str, v: np.ndarray, cases: str, n_ref_empty: int, n_boot: int,
                 alpha: float, seed: int) -> dict[str, Any]:
    finite = v[np.isfinite(v)]
    row: dict[str, Any] = {"label": int(label), "name": name, "metric": metric, "cases": cases, "n": int(v.size),
                           "n_not_finite": int(v.size - finite.size), "n_ref_empty": n_ref_empty}
    if finite.size:
        point, lo, hi = bootstrap_ci(np.mean, finite, n_boot=n_boot, alpha=alpha, seed=seed)
        row.update(mean=point, lo=lo, hi=hi, median=float(np.median(finite)),
                   std=float(finite.std(ddof=1)) if finite.size > 1 else math.nan)
    else:
        row.update(mean=math.nan, lo=math.nan, hi=math.nan, median=math.nan, std=math.nan)
    return row


def false_positive_components(mask: np.ndarray) -> int:
    """Connected components (26-connectivity in 3D) of a predicted structure; 0 for an empty mask."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return 0
    return int(ndimage.label(m, structure=np.ones((3,) * m.ndim, dtype=bool))[1])


def summarise_segmentation(per_case: pd.DataFrame, metrics: Sequence[str] = SEG_SUMMARY_METRICS,
                           n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Per label and metric: n, mean with bootstrap CI, median, std, and how many cases were not finite.

    Overlap and distance metrics (``REFERENCE_PRESENT_METRICS``) are over the cases whose reference contains
    the label (``cases`` = "reference present", Metrics Reloaded's rule); other metrics (volume difference) over
    all cases. Cases whose reference is empty get their own rows (``cases`` = "reference empty"):
    ``fp_rate`` (share with any predicted voxel), ``fp_volume_ml`` and, when the table has ``n_pred_components``,
    ``fp_components``. Infinite distances and NaN ratios are left out of mean/median and counted in
    ``n_not_finite`` so that they are visible rather than silently averaged.
    """
    rows = []
    for (label, name), grp in per_case.groupby(["label", "name"], sort=True):
        present = reference_present(grp)
        n_empty = int((~present).sum())
        for metric in metrics:
            sel = grp[present] if metric in REFERENCE_PRESENT_METRICS else grp
            cases = "reference present" if metric in REFERENCE_PRESENT_METRICS else "all"
            rows.append(_summary_row(label, name, metric, sel[metric].to_numpy(dtype=float), cases, n_empty,
                                     n_boot, alpha, seed))
        if n_empty:
            empty = grp[~present]
            fp = prediction_present(empty).astype(float)
            extra = {"fp_rate": fp}
            if "volume_pred_ml" in empty.columns:
                extra["fp_volume_ml"] = pd.to_numeric(empty["volume_pred_ml"], errors="coerce").to_numpy(float)
            if "n_pred_components" in empty.columns:
                extra["fp_components"] = pd.to_numeric(empty["n_pred_components"], errors="coerce").to_numpy(float)
            for metric, v in extra.items():
                rows.append(_summary_row(label, name, metric, v, "reference empty", n_empty, n_boot, alpha, seed))
    return pd.DataFrame(rows)


def segmentation_subgroups(per_case: pd.DataFrame, manifest: pd.DataFrame, attributes: Sequence[str],
                           metrics: Sequence[str] = ("dice", "nsd"), min_cases: int = 20, n_boot: int = 1000,
                           alpha: float = 0.05, seed: int = 0, path: Path | None = None) -> pd.DataFrame:
    """Mean of each metric per label and subgroup (site, scanner, sex, age band) with CI, gap and worst flag.

    ``manifest`` needs a case_id column (e.g. the demo dataset's manifest.csv); 'age' is banded. Cases missing
    from the manifest are an error, so a subgroup table never silently drops cases.
    """
    from medsight.metrics.subgroup import age_bands, metric_by_group

    if "case_id" not in manifest.columns:
        raise DatasetError("the manifest has no case_id column", path)
    missing = [a for a in attributes if a not in manifest.columns]
    if missing:
        raise DatasetError(f"the manifest has no column(s) {missing}; columns are {list(manifest.columns)}", path)
    man = manifest.assign(case_id=manifest["case_id"].astype(str)).drop_duplicates("case_id").set_index("case_id")
    absent = sorted(set(per_case["case_id"].astype(str)) - set(man.index))
    if absent:
        raise DatasetError(f"{len(absent)} evaluated case(s) are not in the manifest, e.g. {absent[0]}", path)
    parts = []
    for (label, name), grp in per_case.groupby(["label", "name"], sort=True):
        rows = man.loc[grp["case_id"].astype(str)]
        for attr in attributes:
            groups = age_bands(rows[attr]) if attr == "age" else rows[attr].to_numpy()
            for metric in metrics:
                part = metric_by_group(np.mean, groups, grp[metric].to_numpy(dtype=float), min_cases=min_cases,
                                       higher_is_better=metric not in ("hd", "hd95", "assd"), attribute=attr,
                                       n_boot=n_boot, alpha=alpha, seed=seed)
                part.insert(0, "label", int(label))
                part.insert(1, "name", name)
                part.insert(2, "metric", metric)
                parts.append(part)
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------- classification
def classification_tasks(columns: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Task name -> (truth column, score column): every 'X_score' column with an 'X' column, or y_true/y_score."""
    cols = set(columns)
    tasks = {c[: -len("_score")]: (c[: -len("_score")], c) for c in columns
             if c.endswith("_score") and c[: -len("_score")] in cols}
    if not tasks and {"y_true", "y_score"} <= cols:
        tasks["y"] = ("y_true", "y_score")
    return tasks


def read_predictions(path: Path) -> pd.DataFrame:
    df = read_csv(path, "predictions CSV")
    if df.empty:
        raise DatasetError("the predictions CSV has no rows", path)
    return df


def case_names(df: pd.DataFrame) -> pd.Series:
    return df["case_id"].astype(str) if "case_id" in df.columns else pd.Series([f"row {i + 2}" for i in range(len(df))])


def check_task_columns(df: pd.DataFrame, truth: str, score: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of one task; a missing or non-numeric value names the case (or CSV line)."""
    names = case_names(df)
    y = pd.to_numeric(df[truth], errors="coerce").to_numpy(dtype=float)
    s = pd.to_numeric(df[score], errors="coerce").to_numpy(dtype=float)
    bad_y = ~np.isin(y, (0.0, 1.0))
    if bad_y.any():
        i = int(np.flatnonzero(bad_y)[0])
        raise MetricError(f"column {truth!r} must hold 0/1; case {names[i]} has {df[truth].iloc[i]!r}", path)
    bad_s = ~np.isfinite(s)
    if bad_s.any():
        i = int(np.flatnonzero(bad_s)[0])
        raise MetricError(f"column {score!r} has no finite score for case {names[i]} ({int(bad_s.sum())} case(s) "
                          "in all); drop or re-run those cases", path)
    return y.astype(int), s


def summarise_classification(y: np.ndarray, s: np.ndarray, threshold: float, target_sensitivity: float | None,
                             n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """AUC (DeLong and bootstrap CIs), PR AUC, threshold metrics at the given (operating) threshold and, when
    ``target_sensitivity`` is given, at the threshold reaching it on these very predictions (descriptive and
    optimistic: marked ``chosen_on``), and calibration when the scores are probabilities."""
    from medsight.metrics import calibration as cal
    from medsight.metrics import classification as cls

    out: dict[str, Any] = {"n": int(y.size), "n_pos": int(y.sum()), "prevalence": float(y.mean())}
    both = 0 < y.sum() < y.size
    if both:
        out["auc"], out["auc_delong_lo"], out["auc_delong_hi"] = cls.roc_auc_delong(y, s, alpha)
        _, out["auc_boot_lo"], out["auc_boot_hi"] = bootstrap_ci(cls.roc_auc, y, s, n_boot=n_boot, alpha=alpha,
                                                                 seed=seed, strata=y)
        out["pr_auc"], out["pr_auc_lo"], out["pr_auc_hi"] = bootstrap_ci(cls.pr_auc, y, s, n_boot=n_boot,
                                                                         alpha=alpha, seed=seed, strata=y)
    else:
        log.warning("only one class present: AUC and PR AUC are undefined and left out")
    for tag, thr in (("at_threshold", threshold),
                     ("at_target_sensitivity", cls.threshold_for_sensitivity(y, s, target_sensitivity)
                      if y.sum() and target_sensitivity is not None else math.nan)):
        if not math.isfinite(thr):
            continue
        m = cls.binary_metrics(y, s, thr)
        block: dict[str, Any] = {"threshold": thr, **m}
        if tag == "at_target_sensitivity":
            block["chosen_on"] = "these predictions (descriptive, optimistic; not an operating point)"
        for key in ("sensitivity", "specificity", "ppv", "npv"):
            if math.isfinite(m[key]):
                def fn(yy: np.ndarray, ss: np.ndarray, key: str = key, thr: float = thr) -> float:
                    return cls.binary_metrics(yy, ss, thr)[key]

                _, block[f"{key}_lo"], block[f"{key}_hi"] = bootstrap_ci(fn, y, s, n_boot=n_boot, alpha=alpha,
                                                                         seed=seed, strata=y)
        out[tag] = block
    if s.min() >= 0 and s.max() <= 1:
        out["brier"] = cal.brier_score(y, s)
        out["ece"] = cal.expected_calibration_error(y, s, 15, "uniform")
        out["ece_quantile"] = cal.expected_calibration_error(y, s, 15, "quantile")
        out["mce"] = cal.maximum_calibration_error(y, s, 15, "uniform")
    return out


def summarise_kappa(df: pd.DataFrame, pair: str, path: Path, n_boot: int = 1000, alpha: float = 0.05,
                    seed: int = 0) -> dict[str, Any]:
    """Quadratic weighted kappa with bootstrap CI and the confusion matrix for 'TRUE_COL:PRED_COL' grades."""
    from medsight.metrics.classification import cohen_kappa, confusion_matrix

    true_col, _, pred_col = pair.partition(":")
    missing = [c for c in (true_col, pred_col) if c not in df.columns]
    if not true_col or not pred_col or missing:
        raise MetricError(f"--kappa needs TRUE_COL:PRED_COL naming two columns; {pair!r} does not "
                          f"(columns: {list(df.columns)})", path)
    names = case_names(df)
    grades = []
    for col in (true_col, pred_col):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(v) | (v < 0) | (v != np.round(v))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise MetricError(f"column {col!r} must hold integer grades >= 0; case {names[i]} has "
                              f"{df[col].iloc[i]!r}", path)
        grades.append(v.astype(int))
    k = int(max(grades[0].max(), grades[1].max()) + 1)

    def qwk(t: np.ndarray, p: np.ndarray) -> float:
        return cohen_kappa(t, p, "quadratic", n_classes=k)

    point, lo, hi = bootstrap_ci(qwk, grades[0], grades[1], n_boot=n_boot, alpha=alpha, seed=seed)
    return {"kappa": point, "lo": lo, "hi": hi, "weights": "quadratic",
            "confusion_matrix": confusion_matrix(grades[0], grades[1], k).tolist()}


# ---------------------------------------------------------------- writing
def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON has neither), NumPy scalars become Python ones."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> Path:
    atomic_write_text(path, json.dumps(_clean(data), indent=2, allow_nan=False) + "\n")
    return path


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    atomic_write_text(path, df.to_csv(index=False))
    return path
