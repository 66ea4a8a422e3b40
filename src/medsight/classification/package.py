"""A trained classifier as a model package, and new package versions when a calibration is fitted.

``package_classifier`` turns a training folder (``model.pt`` + ``config.json``) into a package that also holds the
validation patients' raw logits (``validation_predictions.json``) and the run's energy record: with them,
``calibrate_package`` can re-derive the operating points on the *calibrated* validation probabilities, so the
stored sensitivity target holds for the probabilities predict-cls actually compares with the thresholds.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.classification.dataset import load_tensors
from medsight.classification.manifest import read_manifest
from medsight.classification.model_io import CONFIG, ClassifierBundle, load_classifier
from medsight.classification.thresholds import choose_thresholds
from medsight.errors import ConfigError
from medsight.files import atomic_write_text, temp_prefix
from medsight.package.calibration import CALIBRATION_FILE, Calibration
from medsight.package.package import Package, derive_package, load_package, save_package

VALIDATION = "validation_predictions.json"
ENERGY = "energy.json"


def validation_predictions(bundle: ClassifierBundle, batch_size: int = 64) -> dict[str, Any]:
    """Raw logits and targets of the validation patients recorded in the config (rows of those patients)."""
    data = bundle.config.get("data") or {}
    manifest = read_manifest(data["manifest"], bundle.config.get("label_columns"), bundle.config.get("task"))
    patients = set(data.get("val_patients") or [])
    idx = np.flatnonzero([str(p) in patients for p in manifest.patients])
    if len(idx) == 0:
        raise ConfigError("no validation rows found for the recorded validation patients", data["manifest"])
    x = load_tensors([manifest.image_paths[i] for i in idx], bundle.config["input_size"], quiet=True)
    with torch.no_grad():
        z = np.concatenate([bundle.predict_logits(x[i:i + batch_size], calibrated=False)
                            for i in range(0, len(x), batch_size)])
    return {"rows": [int(manifest.row_number(i)) for i in idx], "patients": [str(manifest.patients[i]) for i in idx],
            "y": np.asarray(manifest.y)[idx].tolist(), "logits": z.tolist()}


def package_classifier(train_dir: str | Path, out_dir: str | Path, *, name: str,
                       energy: dict[str, Any] | None = None, registry_url: str | None = None,
                       register: bool = True, force: bool = False) -> Package:
    """Add validation predictions (and energy) to a training folder's files and save them as a package.

    A model that missed its own validation target (``config.json`` ``validation.target``) is saved with
    ``below_target`` in its manifest, which keeps it out of the registry (no serving candidate) unless ``force``."""
    bundle = load_classifier(train_dir, unpackaged=True)  # the fresh training folder this packages
    # Named with the owner tag so that a rerun after a kill sweeps it (an untagged ".cls-package-*" folder
    # left by a kill during packaging was never removed: the kill test's "staging folder was left").
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir, "cls-package-"),
                                 dir=Path(out_dir).parent if Path(out_dir).parent.exists() else None))
    try:
        for f in Path(train_dir).iterdir():
            if f.is_file():
                shutil.copy2(f, work / f.name)
        atomic_write_text(work / VALIDATION, json.dumps(validation_predictions(bundle)))
        if energy is not None:
            atomic_write_text(work / ENERGY, json.dumps(energy, indent=2, sort_keys=True))
        cfg = bundle.config
        extra = {"data_fingerprint": (cfg.get("data") or {}).get("manifest_sha256"),
                 "metrics": {f"val_auc_{k}": v for k, v in ((cfg.get("validation") or {}).get("auc") or {}).items()},
                 "backbone": cfg.get("backbone"), "labels": cfg.get("labels"),
                 **({"init": [cfg["initial_encoder"]]} if cfg.get("initial_encoder") else {}),
                 **({"energy_kwh": energy["kwh"], "energy_method": energy["method"]} if energy else {})}
        target = (cfg.get("validation") or {}).get("target")
        if target is not None:
            extra["validation_target"] = target
            if not target.get("met"):
                extra["below_target"] = target["text"]
        return save_package(work, out_dir, task="classification", name=name, extra=extra, register=register,
                            registry_url=registry_url, force=force)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def recalibrated_config(config: dict[str, Any], validation: dict[str, Any], calibration: Calibration,
                        target_sensitivity: float | None = None) -> dict[str, Any]:
    """The config with thresholds re-chosen on calibrated validation probabilities for the same target (or
    ``target_sensitivity``)."""
    config = json.loads(json.dumps(config))
    if config.get("task") == "multiclass":
        return config  # argmax decisions: no thresholds to move
    target = float(target_sensitivity if target_sensitivity is not None
                   else (config.get("training") or {}).get("target_sensitivity", 0.9))
    z = np.asarray(calibration.apply(np.asarray(validation["logits"], dtype=np.float64)))
    prob = torch.sigmoid(torch.as_tensor(z, dtype=torch.float32)).numpy()  # as predict-cls computes them
    info = choose_thresholds(np.asarray(validation["y"]), prob, config["labels"], target, calibrated=True)
    config["uncalibrated_threshold_selection"] = config.get("threshold_selection")
    config["threshold_selection"] = info
    config["thresholds"] = {k: float(v["threshold"]) for k, v in info.items()}
    return config


def calibrate_package(pkg: Package | str | Path, calibration: Calibration,
                      extra_files: dict[str, bytes] | None = None, registry_url: str | None = None,
                      dest_dir: str | Path | None = None, validation: dict[str, Any] | None = None,
                      extra: dict[str, Any] | None = None, target_sensitivity: float | None = None) -> Package:
    """A new package version (own folder: ``dest_dir`` or beside the parent) holding ``calibration.json`` and
    thresholds re-derived on calibrated probabilities of ``validation`` (default: the package's own validation
    predictions; ``medsight calibrate`` passes those of its calibration split)."""
    pkg = pkg if isinstance(pkg, Package) else load_package(pkg, registry_url=registry_url)
    if validation is None and not pkg.has(VALIDATION):
        raise ConfigError(f"package {pkg.label} has no {VALIDATION}, so its thresholds cannot be re-derived after "
                          "calibration; retrain it with this medsight version", pkg.path)
    config = recalibrated_config(pkg.read_json(CONFIG), validation if validation is not None
                                 else pkg.read_json(VALIDATION), calibration, target_sensitivity)
    files = {CONFIG: json.dumps(config, indent=2, sort_keys=True).encode(),
             CALIBRATION_FILE: json.dumps(calibration.to_dict(), indent=2, sort_keys=True).encode(),
             **(extra_files or {})}
    return derive_package(pkg, files=files, extra={"calibration": calibration.method,
                                                   "thresholds": config.get("thresholds"), **(extra or {})},
                          registry_url=registry_url, dest_dir=dest_dir)
