"""Assemble the results document from model outputs: metrics with bootstrap CIs per cohort and per subgroup.

Every statistic comes from medsight.metrics (DeLong AUC, case-level bootstrap, metric_by_group, net benefit,
calibration) so the report shows the same numbers as ``medsight evaluate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medsight.errors import MetricError
from medsight.metrics.bootstrap import bootstrap_ci
from medsight.metrics.calibration import brier_score, expected_calibration_error, reliability_curve
from medsight.metrics.classification import (binary_metrics, pr_auc, roc_auc, roc_auc_delong,
                                             roc_curve_points)
from medsight.metrics.decision_curve import net_benefit
from medsight.metrics.subgroup import age_bands, metric_by_group
from medsight.metrics.tables import false_positive_stats, reference_present
from medsight.report.results import cell, clean

SUBGROUP_ATTRIBUTES: tuple[str, ...] = ("site", "scanner", "sex", "age_band")
DC_THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def _pr_points(y: np.ndarray, s: np.ndarray) -> dict[str, list[float]]:
    """Precision-recall steps (sklearn's definition) for plotting."""
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(y, s)
    return {"recall": r.tolist(), "precision": p.tolist()}


def _safe_ci(fn: Any, *arrays: Any, **kw: Any) -> dict[str, float | None]:
    """The metric with its bootstrap CI; without a CI (too few cases or patients to resample) the point estimate
    alone, and nothing when the metric itself is undefined."""
    try:
        return cell(*bootstrap_ci(fn, *arrays, **kw))
    except MetricError:
        try:
            return cell(fn(*arrays))
        except MetricError:
            return cell(None)


def classification_cohort(name: str, kind: str, y_true: Sequence[int], prob: Sequence[float],
                          prob_before: Sequence[float] | None = None, threshold: float = 0.5,
                          referred: Sequence[bool] | None = None, n_boot: int = 1000, seed: int = 0,
                          unit: str = "case", groups: Sequence[Any] | None = None) -> dict[str, Any]:
    """All classification numbers of one cohort (validation, internal test folds or one external site), every
    one at ``unit`` (what a row is: slice, scan, patient). With ``groups`` (a patient id per row) the bootstrap
    resamples whole patients (AUC CI included), so rows of one patient are not taken as independent."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(prob, dtype=float)
    pb = None if prob_before is None else np.asarray(prob_before, dtype=float)  # no "before" unless given
    two = len(np.unique(y)) == 2
    g = None if groups is None else np.asarray(pd.Series(list(groups)).astype(str))
    boot: dict[str, Any] = {"n_boot": n_boot, "seed": seed, **({"strata": y} if g is None else {"groups": g})}
    if not two:
        auc = cell(None)
    elif g is None:
        auc = cell(*roc_auc_delong(y, p))
    else:
        auc = _safe_ci(roc_auc, y, p, **boot)  # DeLong assumes independent rows; patients are the clusters
    bm = binary_metrics(y, p, threshold)
    out: dict[str, Any] = {
        "name": name, "kind": kind, "unit": unit, "n": int(y.size), "n_pos": int(y.sum()),
        "n_patients": None if g is None else int(len(set(g))), "threshold": float(threshold),
        "ci_method": ("bootstrap over patients (cluster)" if g is not None
                      else "DeLong (AUC); bootstrap stratified by outcome (others)"),
        "auc": auc,
        "pr_auc": _safe_ci(pr_auc, y, p, **boot) if two else cell(None),
        "sensitivity": _safe_ci(lambda a, b: binary_metrics(a, b, threshold)["sensitivity"], y, p, **boot),
        "specificity": _safe_ci(lambda a, b: binary_metrics(a, b, threshold)["specificity"], y, p, **boot),
        "ppv": cell(bm["ppv"]), "npv": cell(bm["npv"]),
        "brier_before": cell(None if pb is None else brier_score(y, pb)), "brier_after": cell(brier_score(y, p)),
        "ece_before": cell(None if pb is None else expected_calibration_error(y, pb, n_bins=10)),
        "ece_after": cell(expected_calibration_error(y, p, n_bins=10)),
        "referral_rate": cell(None if referred is None else float(np.mean(np.asarray(referred, dtype=bool)))),
        "reliability_before": None if pb is None else clean(reliability_curve(y, pb, n_bins=10)),
        "reliability_after": clean(reliability_curve(y, p, n_bins=10)),
    }
    if two:
        out["roc"] = clean({k: v for k, v in roc_curve_points(y, p).items() if k in ("fpr", "tpr")})
        out["pr"] = _pr_points(y, p)
    nb = net_benefit(y, p, DC_THRESHOLDS)
    out["decision"] = clean({c: nb[c].to_numpy() for c in ("threshold", "model", "treat_all", "treat_none")})
    return out


def add_age_band(table: pd.DataFrame) -> pd.DataFrame:
    """Add an ``age_band`` column from ``age`` when the manifest has ages."""
    if "age" in table.columns and "age_band" not in table.columns:
        table = table.copy()
        ages = pd.to_numeric(table["age"], errors="coerce")
        table["age_band"] = np.where(ages.notna(), age_bands(ages.fillna(0).to_numpy()), "unknown")
    return table


def subgroups(metric_fn: Any, table: pd.DataFrame, value_columns: Sequence[str], min_cases: int,
              attributes: Sequence[str] = SUBGROUP_ATTRIBUTES, n_boot: int = 1000, seed: int = 0,
              stratify_by: int | None = None) -> list[dict[str, Any]]:
    """Per-subgroup rows (attribute, group, n, value/lo/hi, too_few, worst) for each attribute the table has."""
    table = add_age_band(table)
    rows: list[dict[str, Any]] = []
    for attr in attributes:
        if attr not in table.columns or table[attr].nunique(dropna=True) < 1:
            continue
        kw: dict[str, Any] = {"n_boot": n_boot, "seed": seed}
        if stratify_by is not None:
            kw["stratify_by"] = stratify_by
        df = metric_by_group(metric_fn, table[attr].to_numpy(), *[table[c].to_numpy() for c in value_columns],
                             min_cases=min_cases, attribute=attr, **kw)
        # "worst" means worse than another group of the same attribute: with one eligible group it says nothing
        comparable = int((~df["too_few"] & df["value"].notna()).sum()) > 1
        for r in df.to_dict("records"):
            too_few = bool(r["too_few"])
            rows.append({"attribute": attr, "group": str(r["group"]), "n": int(r["n"]), "too_few": too_few,
                         "worst": bool(r["worst"]) and comparable, "note": r.get("note", ""),
                         # a too-small group gets no number at all: a point estimate on 3 cases misleads
                         "metric": cell(None) if too_few else cell(r["value"], r["lo"], r["hi"])})
    return rows


def classification_section(cohorts: list[dict[str, Any]], table: pd.DataFrame | None, min_cases: int,
                           n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Cohorts plus AUC per subgroup; ``table`` has y_true, prob and the manifest attributes, one row per case."""
    sub = [] if table is None else subgroups(roc_auc, table, ["y_true", "prob"], min_cases, n_boot=n_boot,
                                             seed=seed, stratify_by=0)
    unit = cohorts[0].get("unit", "case") if cohorts else "case"
    return {"main_metric": "auc", "unit": unit, "operating_point": None, "cohorts": cohorts, "subgroups": sub}


def segmentation_section(per_case: pd.DataFrame, labels: Mapping[int, str], min_cases: int,
                         n_boot: int = 1000, seed: int = 0, cohort_column: str = "cohort",
                         kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Dice per cohort and label with bootstrap CIs over the cases whose reference holds the label (its n in
    ``dice_n``), the reference-empty cases of each label apart (``empty_reference``: n, false-positive cases and
    rate, mean false-positive volume and component count), Dice distributions, and mean foreground Dice per
    subgroup (each case's mean over the labels its reference holds).

    ``per_case`` is long: one row per case and label with columns case_id, label, dice, the cohort column, any
    manifest attributes, and ``ref_empty`` (or ``n_ref_voxels`` / ``volume_ref_ml``) telling empty references.
    """
    mean = lambda d: float(np.mean(d))  # noqa: E731
    per_case = per_case.assign(_present=reference_present(per_case))
    cohorts = []
    for name, g in per_case.groupby(cohort_column, sort=False, observed=True):
        dice: dict[str, Any] = {}
        values: dict[str, list[float]] = {}
        dice_n: dict[str, int] = {}
        empty: dict[str, Any] = {}
        for lab, lname in labels.items():
            rows = g[g["label"] == lab]
            d = rows.loc[rows["_present"], "dice"].astype(float).dropna().to_numpy()
            if len(rows) > int(rows["_present"].sum()):
                fp = false_positive_stats(rows)
                empty[lname] = {"n": fp["n"], "n_fp": fp["n_fp"], "fp_rate": cell(fp["fp_rate"]),
                                "fp_volume_ml": cell(fp["fp_volume_ml"]), "fp_components": cell(fp["fp_components"])}
            if d.size == 0:
                continue
            dice[lname] = _safe_ci(mean, d, n_boot=n_boot, seed=seed) if d.size > 1 else cell(float(d[0]))
            dice_n[lname] = int(d.size)
            values[lname] = [float(v) for v in d]
        cohorts.append({"name": str(name), "kind": (kinds or {}).get(str(name), "internal"), "unit": "scan",
                        "n": int(g["case_id"].nunique()), "dice": dice, "dice_n": dice_n, "dice_values": values,
                        "empty_reference": empty})
    present = per_case[per_case["_present"]].drop(columns="_present")
    case_mean = present.groupby("case_id", sort=False).agg(
        {"dice": "mean", **{c: "first" for c in present.columns if c not in ("case_id", "dice", "label")}})
    sub = subgroups(mean, case_mean.reset_index(), ["dice"], min_cases, n_boot=n_boot, seed=seed)
    return {"main_metric": "dice", "unit": "scan", "labels": {str(k): v for k, v in labels.items()},
            "cohorts": cohorts, "subgroups": sub,
            "rule": "Dice of a label is averaged over the cases whose reference contains it (n per label); cases "
                    "whose reference is empty are counted apart as false-positive cases (Metrics Reloaded)"}
