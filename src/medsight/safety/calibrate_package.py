"""``medsight calibrate``: calibrate any classifier package on labelled data it never saw, as a new version.

Why a separate split: the training run's validation patients already chose the epoch (early stopping) and the
uncalibrated thresholds; fitting the temperature and re-deriving the thresholds on the same patients would make
all three optimistic together. So DATA must hold none of those patients (refused otherwise) and is split by patient
into a **calibration** part (temperature / vector scaling, the operating point re-derived on the calibrated
probabilities for the target, the referral rule: confidence + Mahalanobis OOD) and a **check** part that only
measures ECE and Brier before and after. ``calibration_report.json`` in the new package says which split did what;
``calibration_predictions.json`` keeps the calibration split's raw logits, so anyone can re-derive the stored
operating point from the package alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.classification.dataset import load_tensors
from medsight.classification.manifest import read_manifest
from medsight.classification.model_io import CONFIG, load_classifier
from medsight.classification.package import calibrate_package, recalibrated_config
from medsight.data.splits import patient_holdout
from medsight.errors import ConfigError, DatasetError
from medsight.files import sha256_file
from medsight.metrics.calibration import brier_score, expected_calibration_error
from medsight.package.package import Package, load_package
from medsight.safety.assess import MAHALANOBIS_FILE, REFERRAL_FILE
from medsight.safety.ood import Mahalanobis, msp_score
from medsight.safety.referral import ReferralPolicy
from medsight.safety.temperature import fit_calibration, probabilities, top_label_confidence

REPORT = "calibration_report.json"
PREDICTIONS = "calibration_predictions.json"  # the calibration split's raw logits: the thresholds can be re-derived


def _outputs(bundle: Any, paths: list[Path], batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Raw (uncalibrated) logits and penultimate features of every image."""
    x = load_tensors(paths, bundle.config["input_size"], quiet=True)
    zs, fs = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            z, f = bundle.logits_and_features(x[i:i + batch])
            zs.append(z.numpy())
            fs.append(f.reshape(len(f), -1).numpy())
    return np.concatenate(zs).astype(np.float64), np.concatenate(fs).astype(np.float64)


def scores(z: np.ndarray, y: np.ndarray, activation: str) -> dict[str, float]:
    """ECE (15 equal-width bins of the top-label confidence; sigmoid: every label's positive-class probability)
    and Brier score (mean over labels / one-vs-rest classes) of logits ``z`` against targets ``y``."""
    conf, correct = top_label_confidence(z, y, activation)
    p = probabilities(z, activation)
    if activation == "softmax":
        onehot = np.eye(p.shape[1])[np.asarray(y, dtype=int)]
        brier = float(np.mean([brier_score(onehot[:, c], p[:, c]) for c in range(p.shape[1])]))
    else:
        yy = np.asarray(y).reshape(len(p), -1)
        brier = float(np.mean([brier_score(yy[:, j], p.reshape(len(p), -1)[:, j]) for j in range(yy.shape[1])]))
    return {"ece": float(expected_calibration_error(correct, conf)), "brier": brier}


def calibrate_classifier(model: str | Path | Package, data: str | Path, out_dir: str | Path, *,
                         method: str = "temperature", target_sensitivity: float | None = None,
                         check_share: float = 0.5, seed: int = 0, target_keep: float = 0.95, unit: str = "image",
                         registry_url: str | None = None) -> tuple[Package, dict[str, Any]]:
    """Fit calibration, operating points and referral rule on DATA's calibration patients; a new package version
    at ``out_dir`` (parent recorded) and the report (also stored in it as ``calibration_report.json``)."""
    pkg = model if isinstance(model, Package) else load_package(model, registry_url=registry_url)
    if pkg.task != "classification":
        raise ConfigError(f"{pkg.label} is a {pkg.task} package; `medsight calibrate` takes a classifier")
    bundle = load_classifier(pkg)
    cfg = bundle.config
    trained_on = cfg.get("data") or {}
    if trained_on.get("manifest_sha256") and sha256_file(data) == trained_on["manifest_sha256"]:
        raise DatasetError("this is the manifest the model was trained on; calibrate on patients it never saw "
                           "(neither training nor the validation patients that chose its epoch)", data)
    m = read_manifest(data, cfg.get("label_columns"), cfg.get("task"))
    patients = np.asarray([str(p) for p in m.patients])
    seen = sorted(set(trained_on.get("val_patients") or []) & set(patients))
    if seen:
        raise DatasetError(f"{len(seen)} patient(s) of DATA (e.g. {seen[0]}) are the validation patients that chose "
                           "the model's epoch; calibrate on other patients", data)
    act, labels = cfg["activation"], bundle.labels
    y = np.asarray(m.y)
    y = y.astype(int) if act == "softmax" else y.reshape(len(y), -1)
    strata = y if y.ndim == 1 else y[:, 0]
    check = patient_holdout(patients, strata, check_share, seed)
    fit = ~check
    z, feats = _outputs(bundle, [Path(p) for p in m.image_paths])
    z = z if act == "softmax" else z.reshape(len(z), -1)
    cal = fit_calibration(z[fit], y[fit], labels, act, method)
    zc = np.asarray(cal.apply(z))
    maha = Mahalanobis().fit(feats[fit], y[fit] if y.ndim == 1 else (y[fit] * (1 << np.arange(y.shape[1]))).sum(1))
    policy = ReferralPolicy.fit_on_validation({"low_confidence": msp_score(zc[fit], act),
                                               "out_of_distribution": maha.score(feats[fit])}, target_keep)
    target = float(target_sensitivity if target_sensitivity is not None
                   else (cfg.get("training") or {}).get("target_sensitivity", 0.9))

    def split(mask: np.ndarray) -> dict[str, Any]:
        return {"n": int(mask.sum()), "patients": int(len(set(patients[mask]))), "unit": unit}

    report: dict[str, Any] = {
        "parent": {"name": pkg.name, "version": pkg.version, "id": pkg.id}, "method": method, "unit": unit,
        "data": {"path": str(Path(data).resolve()), "sha256": sha256_file(data)},
        "splits": {
            "early_stopping_and_uncalibrated_thresholds": {
                "what": "validation patients of the training run (config.json data.val_patients)",
                "patients": len(trained_on.get("val_patients") or [])},
            "calibration": {**split(fit), "what": f"{method} scaling, operating point (sensitivity >= {target:g}) "
                            "re-derived on calibrated probabilities, referral rule (confidence + Mahalanobis OOD)"},
            "check": {**split(check), "what": "ECE and Brier before / after only; nothing fitted"}},
        "calibration_split": {"before": scores(z[fit], y[fit], act), "after": scores(zc[fit], y[fit], act)},
        "check_split": {"before": scores(z[check], y[check], act), "after": scores(zc[check], y[check], act)},
        "metrics": "ECE: 15 equal-width bins of top-label confidence (sigmoid: each label's positive probability); "
                   "Brier: mean squared error of the probabilities, mean over labels (one-vs-rest classes)",
        "referral": {"target_keep": target_keep, "thresholds": policy.thresholds,
                     "kept_check": float(np.mean([d.accepted for d in policy.decide_many(
                         {"low_confidence": msp_score(zc[check], act),
                          "out_of_distribution": maha.score(feats[check])})]))},
        "target_sensitivity": target,
    }
    validation = {"y": y[fit].tolist(), "logits": z[fit].tolist()}
    config = recalibrated_config(pkg.read_json(CONFIG), validation, cal, target)  # what the new version stores
    report["thresholds"] = config.get("thresholds")
    report["threshold_selection"] = config.get("threshold_selection")
    files = {MAHALANOBIS_FILE: json.dumps(maha.to_dict()).encode(),
             REFERRAL_FILE: json.dumps(policy.to_dict(), indent=2, sort_keys=True).encode(),
             REPORT: json.dumps(report, indent=2, sort_keys=True, default=float).encode(),
             PREDICTIONS: json.dumps({**validation, "patients": patients[fit].tolist(), "unit": unit}).encode()}
    new = calibrate_package(pkg, cal, extra_files=files, registry_url=registry_url, dest_dir=out_dir,
                            validation=validation, target_sensitivity=target,
                            extra={"calibrated_on": {"data_sha256": report["data"]["sha256"], "n": int(fit.sum()),
                                                     "unit": unit}})
    return new, report
