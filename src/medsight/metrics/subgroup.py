"""Metrics by subgroup (site, sex, age band, scanner): per-group value with bootstrap CI, gap to the best group
and a worst-group flag, so a model that fails one population cannot hide behind its average."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from medsight.errors import MetricError
from medsight.metrics.bootstrap import _as_array, bootstrap_ci

COLUMNS = ["attribute", "group", "n", "value", "lo", "hi", "gap_to_best", "worst", "too_few", "note"]


def age_bands(ages: Sequence[float] | np.ndarray, edges: Sequence[float] = (0, 40, 60, 80)) -> np.ndarray:
    """Age labels such as '40-59' and '80+'; missing ages become 'unknown'."""
    a = np.asarray(ages, dtype=float)
    e = list(edges)
    out = np.full(a.shape, "unknown", dtype=object)
    for lo, hi in zip(e, e[1:] + [math.inf]):
        sel = (a >= lo) & (a < hi)
        out[sel] = f"{lo:g}+" if math.isinf(hi) else f"{lo:g}-{hi - 1:g}"
    return out


def metric_by_group(metric_fn: Callable[..., float], groups: Sequence[Any] | np.ndarray, *arrays: Any,
                    min_cases: int = 20, higher_is_better: bool = True, attribute: str = "group",
                    **bootstrap_kw: Any) -> pd.DataFrame:
    """One row per group: n, value (metric on the group's cases), bootstrap lo/hi, gap_to_best, worst, too_few.

    Groups with fewer than ``min_cases`` cases are reported with their value but no CI, marked too_few, and left
    out of the best/worst comparison. A group on which the metric is undefined (e.g. AUC with one class) gets a
    NaN value and a note. ``bootstrap_kw`` goes to ``bootstrap_ci`` (n_boot, alpha, seed); pass
    ``stratify_by=0`` to stratify each group's resamples by the array at that position (e.g. the labels).
    """
    g = np.asarray(_as_array(groups), dtype=object).ravel()
    arrs = [_as_array(a) for a in arrays]
    if not arrs:
        raise MetricError("metric_by_group needs the metric's input arrays")
    for i, a in enumerate(arrs):
        if a.shape[0] != g.shape[0]:
            raise MetricError(f"array {i} has {a.shape[0]} cases but groups has {g.shape[0]}; pass one row per case")
    stratify_by = bootstrap_kw.pop("stratify_by", None)
    keys = pd.Series(g).fillna("unknown").astype(str).to_numpy()
    rows = []
    for key in sorted(set(keys)):
        sel = keys == key
        sub = [a[sel] for a in arrs]
        row: dict[str, Any] = {"attribute": attribute, "group": key, "n": int(sel.sum()), "value": math.nan,
                               "lo": math.nan, "hi": math.nan, "too_few": bool(sel.sum() < min_cases), "note": ""}
        try:
            if row["too_few"]:
                row["value"] = float(metric_fn(*sub))
            else:
                strata = sub[stratify_by] if stratify_by is not None else None
                row["value"], row["lo"], row["hi"] = bootstrap_ci(metric_fn, *sub, strata=strata, **bootstrap_kw)
        except MetricError as err:
            row["note"] = str(err)
        rows.append(row)
    df = pd.DataFrame(rows)
    eligible = ~df["too_few"] & np.isfinite(df["value"])
    best = df.loc[eligible, "value"].max() if higher_is_better else df.loc[eligible, "value"].min()
    df["gap_to_best"] = (best - df["value"]) if higher_is_better else (df["value"] - best)
    df["worst"] = False
    if eligible.any():
        worst_value = df.loc[eligible, "value"].min() if higher_is_better else df.loc[eligible, "value"].max()
        df.loc[eligible & (df["value"] == worst_value), "worst"] = True
    return df[COLUMNS]


def subgroup_table(metric_fn: Callable[..., float], table: pd.DataFrame, value_columns: Sequence[str],
                   attributes: Sequence[str], **kw: Any) -> pd.DataFrame:
    """``metric_by_group`` for several attributes of one case table, stacked (attribute column tells which)."""
    missing = [c for c in list(value_columns) + list(attributes) if c not in table.columns]
    if missing:
        raise MetricError(f"the case table has no column(s) {missing}; available: {list(table.columns)}")
    parts = [metric_by_group(metric_fn, table[a], *(table[c] for c in value_columns), attribute=a, **kw)
             for a in attributes]
    return pd.concat(parts, ignore_index=True)
