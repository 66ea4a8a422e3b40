"""A trained segmentation model as a model package.

Training keeps its resumable state (checkpoints, TensorBoard logs) in a training folder beside the package
(``<model_dir>.training``); what prediction needs — plan, dataset description, splits, each finished fold's
``model_final.pt`` and ``summary.json``, and the run's energy record — is copied into the package ``model_dir``,
which is replaced as a unit each time a fold finishes. ``inference.json`` records the sliding-window overlap and
test-time mirror axes chosen from the folds' inference studies (segmentation/tta_study.py), which ``predict``
uses by default;
``lesion_referral.json`` the per-lesion referral rule fitted on the folds' validation lesions
(segmentation/lesion_study.py), which ``predict``'s lesion table applies; ``lesion_detection.json`` the lesion
detection rule (probability threshold, minimum volume and score) fitted on the same validation lesions
(segmentation/lesion_detection.py), which ``predict`` applies to its label map.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import InputNotFoundError
from medsight.files import atomic_write_text, sha256_file, temp_prefix
from medsight.package.package import Package, save_package
from medsight.segmentation.tta import INFERENCE_FILE
from medsight.segmentation.tta_study import combine_fold_studies

PACKAGE_FILES = ("plan.json", "dataset.json", "splits.json")
FOLD_FILES = ("model_final.pt", "summary.json")


def training_dir(model_dir: str | Path) -> Path:
    """Where training state for the package ``model_dir`` lives (so a killed run resumes from it)."""
    p = Path(model_dir)
    return p.with_name(p.name + ".training")


def _merge_energy(previous: Package | None, energy: dict[str, Any] | None) -> dict[str, Any] | None:
    """Energy of all training runs that went into the package: the new run added to the previous record."""
    if energy is None:
        return None
    runs = []
    if previous is not None and previous.has("energy.json"):
        runs = list(previous.read_json("energy.json").get("runs", []))
    runs.append(energy)
    return {"kwh": sum(r["kwh"] for r in runs), "co2_kg": sum(r["co2_kg"] for r in runs),
            "seconds": sum(r["seconds"] for r in runs), "measured": all(r["measured"] for r in runs),
            "method": "; ".join(sorted({r["method"].split(":")[0] for r in runs})) + " (sum of runs, see runs)",
            "runs": runs}


def package_segmentation(train_dir: str | Path, model_dir: str | Path, *, name: str,
                         energy: dict[str, Any] | None = None, previous: Package | None = None,
                         registry_url: str | None = None, targets: dict[str, float] | None = None,
                         force: bool = False) -> Package:
    """Copy the prediction files of every finished fold in ``train_dir`` into the package ``model_dir``.

    ``targets`` (e.g. ``{"val_tissue_dice": 0.85, "val_lesion_sensitivity": 0.8}``, minima of the validation
    figures the folds' lesion studies measured): a missed one makes the package ``below target`` (not registered as
    a serving candidate unless ``force``, a banner in its card and in reports)."""
    src = Path(train_dir)
    folds = sorted(p.parent for p in src.glob("fold_*/model_final.pt"))
    if not folds:
        raise InputNotFoundError("no finished fold (fold_*/model_final.pt) to package", src)
    dest = Path(model_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(dest, "seg-"), dir=dest.parent))
    try:
        for f in PACKAGE_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, work / f)
        dice, inits, studies, lesion_studies = [], {}, [], []
        for fold in folds:
            (work / fold.name).mkdir()
            for f in FOLD_FILES:
                if (fold / f).is_file():
                    shutil.copy2(fold / f, work / fold.name / f)
            if (fold / "summary.json").is_file():
                fold_summary = json.loads((fold / "summary.json").read_text())
                if fold_summary.get("init"):  # initialised from an encoder package (medsight pretrain)
                    inits[fold_summary["init"]["package_id"]] = fold_summary["init"]
                if fold_summary.get("mirror_study"):
                    studies.append(fold_summary["mirror_study"])
                if fold_summary.get("lesion_study"):
                    lesion_studies.append(fold_summary["lesion_study"])
                value = fold_summary.get("final_val_dice")
                if isinstance(value, (int, float)):
                    dice.append(float(value))
                elif isinstance(value, dict):
                    dice.extend(float(v) for v in value.values() if isinstance(v, (int, float)))
        choice = combine_fold_studies(studies)
        if choice is not None:
            atomic_write_text(work / INFERENCE_FILE, json.dumps(choice, indent=2, sort_keys=True))
        lesion_metrics = _lesion_rules(work, lesion_studies)
        merged = _merge_energy(previous, energy)
        if merged is not None:
            atomic_write_text(work / "energy.json", json.dumps(merged, indent=2, sort_keys=True))
        extra = {"data_fingerprint": sha256_file(src / "dataset.json") if (src / "dataset.json").is_file() else None,
                 "metrics": {**({"val_dice_mean": float(np.mean(dice))} if dice else {}), **lesion_metrics},
                 "folds": [f.name for f in folds],
                 **({"init": sorted(inits.values(), key=lambda r: r["package_id"])} if inits else {}),
                 **({"energy_kwh": merged["kwh"], "energy_method": merged["method"]} if merged else {})}
        if targets:
            extra["validation_target"] = validation_target(extra["metrics"], targets)
            if not extra["validation_target"]["met"]:
                extra["below_target"] = extra["validation_target"]["text"]
        return save_package(work, dest, task="segmentation", name=name, extra=extra, registry_url=registry_url,
                            force=force)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _lesion_rules(work: Path, studies: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit the per-lesion referral rule (``lesion_referral.json``) and the detection rule (``lesion_detection.json``)
    on the folds' validation lesions; returns the validation lesion-wise figures for the manifest (nothing when no
    fold measured lesions)."""
    from medsight.plan.plan import Plan
    from medsight.segmentation.lesion_detection import DETECTION_FILE, fit_detection
    from medsight.segmentation.lesion_study import REFERRAL_FILE, fit_lesion_referral

    if not studies or not (work / "plan.json").is_file():
        return {}
    fit_lesion_referral(studies, Plan.load(work / "plan.json").postprocess).save(work / REFERRAL_FILE)
    n_ref = sum(s["n_ref_lesions"] for s in studies)
    n_cases = sum(s["n_cases"] for s in studies)
    tissue = [s["tissue_dice_mean"] for s in studies if s.get("tissue_dice_mean") is not None]
    sens = sum(s["tp"] for s in studies) / n_ref if n_ref else None
    fpc = sum(s["fp"] for s in studies) / n_cases if n_cases else None
    out = {"val_lesion_sensitivity": sens, "val_lesion_fp_per_case": fpc}
    rule = fit_detection([s.get("detection") for s in studies])
    if rule is not None:  # predict applies it: the validation figures are those of the fitted rule, argmax beside
        rule.save(work / DETECTION_FILE)
        out = {"val_lesion_sensitivity": rule.fit["sensitivity"], "val_lesion_fp_per_case": rule.fit["fp_per_case"],
               "val_lesion_sensitivity_argmax": sens, "val_lesion_fp_per_case_argmax": fpc,
               "lesion_detection": {"threshold": rule.threshold, "min_volume_ml": rule.min_volume_ml,
                                    "min_score": rule.min_score}}
    return {**out, "val_lesion_n_ref": n_ref, "val_lesion_n_cases": n_cases,
            **({"val_tissue_dice": float(np.mean(tissue))} if tissue else {})}


def validation_target(metrics: dict[str, Any], targets: dict[str, float]) -> dict[str, Any]:
    """Each stated minimum against the measured validation figure (absent = not met); ``text`` starts with
    "meets target" or "below target", which the demo summary prints in red."""
    parts, met = [], True
    for key, minimum in targets.items():
        value = metrics.get(key)
        ok = isinstance(value, (int, float)) and value == value and value >= minimum
        met &= ok
        parts.append(f"{key} {value:.3f} {'>=' if ok else '<'} {minimum:g}" if isinstance(value, (int, float))
                     else f"{key} not measured (target {minimum:g})")
    return {"targets": dict(targets), "met": met, "text": ("meets target: " if met else "below target: ")
            + "; ".join(parts)}
