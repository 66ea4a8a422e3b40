"""Demo stage "safety": calibrate the classifier, fit the OOD detectors and the referral rule, and report
ECE before/after, OOD AUROC per detector and set, referral keep rates and risk-coverage of the unseen site.

Uses the project classifier (``ctx.paths["cls_model"]``) when the classification stage produced one and its
data can be rebuilt; otherwise the safety layer's small reference task (real MNI anatomy, simulated lesions,
three sites) so that the stage always runs. Budget: well under a minute.

Everything it writes lies under ``<out>/safety``: the calibration, OOD detectors, referral rule and scan-level
operating point become ONE new version of the classifier package in its own folder (``safety/classifier``, parent
recorded), and the scan-level table is ``safety/predictions_per_scan.csv``; the classification stage's package is
only read (its registered version never changes).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from medsight.files import atomic_write_text

log = logging.getLogger(__name__)


def run(ctx) -> dict[str, Any]:  # noqa: ANN001 - DemoContext, imported lazily by the runner
    from medsight.safety.plots import reliability_diagram
    from medsight.demo.safety_task import build_safety_task

    out = Path(ctx.out_dir) / "safety"
    cls_model = ctx.paths.get("cls_model")
    task = build_safety_task(cls_model, seed=ctx.seed, fast=ctx.fast, quiet=ctx.quiet, work_dir=out)
    res = task.evaluate(quiet=ctx.quiet, mc_samples=0)  # MC dropout is in the benchmark; the demo keeps to budget
    arts = res.pop("artifacts")
    from medsight.safety.assess import SafetyAssessor
    from medsight.safety.evaluate import activation_of
    from medsight.safety.quality import QualitySpec

    assessor = SafetyAssessor(activation_of(task.bundle), arts["calibration"], arts["mahalanobis"], arts["policy"],
                              QualitySpec.fit(task.train[0]))
    examples = _examples(task, assessor)
    scan_level: dict[str, Any] = {"skipped": "no per-scan predictions (the reference task has no scans)"}
    extra_files: dict[str, bytes] = {}
    if task.case_ids and ctx.paths.get("cls_predictions"):
        ctx.paths["safety_scan_predictions"], scan_level, level = _scan_predictions(
            task, assessor, Path(ctx.paths["cls_predictions"]), out / "predictions_per_scan.csv",
            ctx.paths.get("cls_manifest"))
        extra_files["scan_level.json"] = json.dumps(level.to_dict(), indent=2, allow_nan=False).encode()
    # one derived version in this stage's own folder; a rerun replaces it there (the registry keeps the old one)
    saved = assessor.save(task.model_dir, extra_files=extra_files,
                          dest_dir=out / "classifier" if (Path(task.model_dir) / "manifest.json").is_file() else None)
    model_dir = saved.path if saved is not None else Path(task.model_dir)
    if extra_files:
        ctx.paths["cls_scan_level"] = model_dir / "scan_level.json"
    if model_dir.resolve() != Path(ctx.paths.get("cls_model", "")).resolve():
        ctx.paths["safety_classifier"] = model_dir  # the calibrated package the report describes
    ctx.paths["safety_calibration"] = model_dir / "calibration.json"
    ctx.paths["safety_referral"] = model_dir / "referral.json"

    cal = res["calibration"]
    ctx.paths["safety_reliability"] = reliability_diagram(
        out / "reliability.png",
        {f"{name} before (ECE {c['ece_before']:.3f})": c["reliability_before"] for name, c in cal.items()}
        | {f"{name} after (ECE {c['ece_after']:.3f})": c["reliability_after"] for name, c in cal.items()},
        title="Reliability before / after temperature scaling")
    summary = out / "safety_summary.json"
    atomic_write_text(summary, json.dumps(res, indent=2, default=float))
    ctx.paths["safety_summary"] = summary

    rc = res["risk_coverage"][task.unseen]
    seg = _segmentation(ctx, out) if ctx.paths.get("seg_model") else {"skipped": "no segmentation model in this run"}
    return {
        "classifier": task.source,
        "temperature": res["temperature"],
        # slice-level figures say so in their names; the scan-level ones (the report's unit) are under "scan_level"
        "ece_slices": {name: {"before": round(c["ece_before"], 4), "after": round(c["ece_after"], 4)}
                       for name, c in cal.items()},
        "ood_auroc": {s: {d: round(m["auroc"], 3) for d, m in dets.items()} for s, dets in res["ood"].items()},
        "referral_kept_slices": {s: round(v["kept"], 3) for s, v in res["referral"].items() if s != "thresholds"},
        "scan_level": scan_level,
        f"{task.unseen}_error_at_100pct_coverage": round(rc["error_at_100"], 4),
        f"{task.unseen}_error_at_80pct_coverage": round(rc["error_at_80"], 4),
        "example_decisions": examples,
        "segmentation": seg,
    }


def _segmentation(ctx, out: Path) -> dict[str, Any]:  # noqa: ANN001
    """Uncertainty and boundary-band calibration on one unseen-site case of the seg stage (2 members: identity
    and one mirror per trained fold, to keep the stage inside its budget; the benchmark-sized run is the library)."""
    import numpy as np

    from medsight.data.dataset import load_dataset
    from medsight.io.nifti import read_nifti
    from medsight.segmentation.safety import case_safety

    try:
        ds = load_dataset(ctx.paths["seg_data"])
        pred_dir = Path(ctx.paths["seg_predictions"])
        done = [c for c in ds.cases if (pred_dir / f"{c.case_id}.nii.gz").exists()]
        picks = [c for c in done if c.site == "site_C"][:1] or done[:1]
        rows, members = [], []
        for case in picks:
            r = case_safety(ctx.paths["seg_model"], read_nifti(case.images[0]),
                            read_nifti(case.label).array.astype(np.int16), ds.foreground, max_flips=2)
            members = r["members"]
            for s in r["structures"]:
                rows.append({"case_id": case.case_id, "site": case.site, **s})
    except Exception as err:  # the segmentation stage is another team's moving part: report, do not fail the demo
        log.warning("segmentation safety figures skipped: %s", err)
        return {"skipped": str(err)}
    table = out / "segmentation_uncertainty.json"
    clean = [{k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    atomic_write_text(table, json.dumps({"members": members, "rows": clean}, indent=2))
    ctx.paths["safety_segmentation"] = table
    return {"members": members, "cases": [c.case_id for c in picks],
            "volume_cv": {f"{r['case_id']}/{r['name']}": _num(r["volume_cv"]) for r in rows},
            "mean_entropy_inside": {f"{r['case_id']}/{r['name']}": _num(r["mean_entropy_inside"]) for r in rows},
            "band_ece": {f"{r['case_id']}/{r['name']}": _num(r.get("band_ece")) for r in rows}}


def _num(v: float | None) -> float | None:
    """Rounded, with NaN as None so that the summary stays strict JSON."""
    import math

    return None if v is None or not math.isfinite(v) else round(float(v), 4)


def _scan_predictions(task, assessor, source: Path, path: Path,  # noqa: ANN001
                      manifest: Path | None) -> tuple[Path, dict[str, Any], Any]:
    """The classification stage's per-scan table (``source``, left as it is) redone at the unit of decision, the
    scan, into ``path``: each scan's score is its highest slice logit, calibrated and thresholded by a scan-level
    fit on the validation scans (returned, stored as ``scan_level.json`` in the stage's package version), and it
    is referred when any of its slices is. Validation scans are kept (``split`` = val) so the report can show
    what the fit gave there; the evidence-slice columns ``image`` and ``mask`` and the scan's patient and site
    are carried over."""
    import numpy as np
    import pandas as pd

    from medsight.classification.scan_level import aggregate_slices, fit_scan_level
    from medsight.safety.evaluate import run_model

    rows = []
    sets = {"validation": task.validation, **task.tests}
    for name, (images, targets) in sets.items():
        ids = task.case_ids.get(name, [])
        if len(ids) != len(images):
            continue
        o = run_model(task.bundle, images)
        for cid, img, z, f, y in zip(ids, images, o.logits, o.features, targets):
            a = assessor.assess(img, z, f)
            rows.append({"case_id": cid, "split": "val" if name == "validation" else "test",
                         "y_true": int(np.ravel(y)[0]), "logit": float(np.ravel(z)[0]),
                         "referred": int(a["decision"] == "refer")})
    slices = pd.DataFrame(rows)
    if manifest is not None and Path(manifest).is_file():
        m = pd.read_csv(manifest, dtype=str).drop_duplicates("case_id")
        slices = slices.merge(m[["case_id", *[c for c in ("patient_id", "site") if c in m.columns]]],
                              on="case_id", how="left")
    scans = aggregate_slices(slices)
    val = scans[scans["split"] == "val"]
    label = str(task.bundle.labels[0])
    target = float((task.bundle.config.get("training") or {}).get("target_sensitivity", 0.9))
    level = fit_scan_level(val["y_true"].to_numpy(), val["logit"].to_numpy(), label, target)
    scans["prob_uncalibrated"] = 1 / (1 + np.exp(-scans["logit"]))
    scans["prob"] = level.probabilities(scans["logit"].to_numpy())
    before = pd.read_csv(source, dtype={"case_id": str}) if source.is_file() else None
    if before is not None and "image" in before.columns:  # keep the evidence slice the classification stage chose
        cols = [c for c in ("image", "mask") if c in before.columns]
        evidence = before[["case_id", *cols]].copy()
        for col in cols:  # relative to the source table's folder there; to this table's folder here
            evidence[col] = [p if not isinstance(p, str) else
                             os.path.relpath((source.resolve().parent / p).resolve(), path.resolve().parent)
                             for p in evidence[col]]
        scans = scans.merge(evidence, on="case_id", how="left")
    atomic_write_text(path, scans.to_csv(index=False, lineterminator="\n"))
    test = scans[scans["split"] == "test"]
    return path, {"unit": "scan", "temperature": round(level.temperature, 4), "bias": round(level.bias, 4),
                  "threshold": round(level.threshold, 4), "target": level.target,
                  "validation_scans": level.validation["n"],
                  "validation_ece": {"before": round(level.validation["ece_before"], 4),
                                     "after": round(level.validation["ece_after"], 4)},
                  "referral_rate_test_scans": round(float(test["referred"].mean()), 3) if len(test) else None}, level


def _examples(task, assessor) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    """The decision and reasons for the first image of a few sets, as the CLI and service would show them."""
    from medsight.safety.evaluate import run_model

    picks = {"held_out": task.tests[task.in_distribution][0][0], "different_modality": task.ood["different_modality"][0],
             "corrupted (inversion)": task.ood["corrupted"][2]}
    out = {}
    for name, img in picks.items():
        o = run_model(task.bundle, [img])
        a = assessor.assess(img, o.logits[0], o.features[0])
        out[name] = {"decision": a["decision"], "reasons": a["reasons"],
                     "probabilities": [round(p, 3) for p in a["probabilities"]]}
    return out
