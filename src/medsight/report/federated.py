"""The per-site, per-round view of a federated model package, for the validation report.

A federated model has no single training set: how each hospital's held-out AUC and calibration moved round by
round is part of its evidence (a site whose ECE climbs while the pooled figure improves is a finding). The
figures come from what the ServerApp recorded and ``package_federation`` wrote into the package manifest
(``extra.federated``, hashed with the package), plus each site's DP spend from the packaged ``federation.json``.
Only the verified package is read here: the report does not re-run or trust anything outside it.
"""

from __future__ import annotations

import math
from typing import Any

from medsight.errors import ConfigError
from medsight.package.package import Package
from medsight.report.results import clean

# the ClientApp's held-out figures per federated task, in table order (segmentation adds Dice per class)
METRICS = {"classification": ("auc", "ece", "accuracy", "log_loss", "n"),
           "mil": ("auc", "ece", "accuracy", "log_loss", "n"), "segmentation": ("dice", "ece", "n")}
NAMES = {"auc": "AUC", "ece": "ECE", "accuracy": "Accuracy", "log_loss": "Log loss", "n": "n",
         "dice": "Dice (mean over classes)"}


def task_metrics(summary: dict[str, Any]) -> list[str]:
    """The metric keys of this federation's task; for segmentation, one ``dice_<label>`` per recorded class."""
    task = str(summary.get("task") or "classification")
    keys = list(METRICS.get(task, METRICS["classification"]))
    if task == "segmentation":
        per_class = sorted({k for r in summary.get("per_round", []) for m in (r.get("sites") or {}).values()
                            for k in m if k.startswith("dice_")})
        keys[1:1] = per_class
    return keys


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _metrics(m: dict[str, Any] | None, keys: list[str]) -> dict[str, float | None]:
    out = {k: _num((m or {}).get(k)) for k in keys}
    if out.get("n") is not None:
        out["n"] = int(out["n"])  # a case count
    return out


def federated_view(summary: dict[str, Any], train: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The report's ``federated`` section from a manifest's ``extra.federated`` summary.

    ``rows`` is long (one row per round and site, sites sorted; a site that did not answer a round's evaluation
    has null metrics and ``evaluated`` false), ``global`` one row per round (the case-weighted mean over sites),
    so that every number the page shows has one JSON path. ``train`` (``federation.json``'s rounds) adds each
    site's eps after that round when DP was on."""
    try:
        per_round = list(summary["per_round"])
        sites = sorted(str(s) for s in summary.get("sites", []))
    except (KeyError, TypeError) as err:
        raise ConfigError(f"the package's federated record lacks {err}; package it with "
                          "medsight.federated.package.package_federation") from err
    eps = {int(r["round"]): r.get("train", {}) for r in (train or []) if "round" in r}
    keys = task_metrics(summary)
    rows, glob = [], []
    for r in per_round:
        rnd, evaluated = int(r["round"]), r.get("sites") or {}
        contrib = set(r.get("contributors") or [])
        for s in sites:
            spent = _num((eps.get(rnd, {}).get(s) or {}).get("epsilon"))
            rows.append({"round": rnd, "site": s, "contributed": s in contrib, "evaluated": s in evaluated,
                         **_metrics(evaluated.get(s), keys), "epsilon": spent})
        glob.append({"round": rnd, "aggregated": r.get("aggregate_sha256") is not None,
                     "aggregate_sha256": r.get("aggregate_sha256"), "n_contributors": len(contrib),
                     **_metrics(r.get("global"), keys)})
    dp = summary.get("dp") or {}
    names = {k: NAMES.get(k, f"Dice {k.removeprefix('dice_')}") for k in keys}
    return clean({"strategy": summary.get("strategy"), "task": str(summary.get("task") or "classification"),
                  "sites": sites, "rounds": len(per_round), "metrics": keys, "metric_names": names,
                  "rows": rows, "global": glob,
                  "dp": {k: _num(v) for k, v in dp.items()},
                  "source": "package manifest extra.federated (written by medsight.federated.package)"})


def federated_view_of(pkg: Package) -> dict[str, Any] | None:
    """The section for a verified package whose manifest records a federation; None for any other model.

    ``federation.json`` is read only when the manifest lists it (``Package.has``), so its per-site eps is covered
    by the package's hashes too."""
    summary = pkg.extra.get("federated")
    if not summary:
        return None
    train = None
    if pkg.has("federation.json"):
        rounds = pkg.read_json("federation.json").get("rounds", [])
        train = [{"round": r.get("round"), "train": r.get("train", {})} for r in rounds]
    return federated_view(summary, train)
