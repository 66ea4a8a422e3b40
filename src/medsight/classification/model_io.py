"""The model directory: ``model.pt`` (weights), ``config.json`` (everything needed to rebuild and apply it).

``config.json`` holds labels, task, activation, thresholds (chosen on validation data), input size,
normalisation, backbone, Grad-CAM layer, and what made the model (manifest hash, seed, versions, metrics).
``load_classifier`` rebuilds the network from the config, so a directory is usable without the training code's
arguments. A trained classifier is a model package (``medsight.package``): ``load_classifier`` verifies it and
reads only the files its manifest lists; a ``calibration.json`` there (written as a new package version by
``medsight.classification.package.calibrate_package``) is applied by ``predict_logits``. A plain training folder
(no manifest) loads weights and config only: no side file is ever picked up.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.nets.backbones import ClassifierNet, build_classifier
from medsight.classification.dataset import preprocess_array, spatial_array
from medsight.errors import ConfigError, InputNotFoundError, IntegrityError
from medsight.files import atomic_write_bytes, atomic_write_text, sha256_file
from medsight.image import Image
from medsight.package.calibration import Calibration, load_calibration
from medsight.package.manifest import PackageError
from medsight.package.package import Package, load_package

FORMAT = "medsight-classifier"
VERSION = 1
WEIGHTS = "model.pt"
CONFIG = "config.json"


@dataclass
class ClassifierBundle:
    """A loaded classifier: the network, its config and the one preprocessing it was trained with."""

    model: ClassifierNet
    config: dict[str, Any]
    model_dir: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    package: Package | None = None
    calibration: Calibration | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.config["labels"])

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.config.get("thresholds") or {}).items()}

    def preprocess(self, image: Image) -> torch.Tensor:
        """Image -> (1, *input_size) float tensor, resized and z-scored as in training."""
        return preprocess_array(spatial_array(image), self.config["input_size"])

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (uncalibrated) logits and the penultimate features for a batch (N, 1, *input_size)."""
        return self.model.forward_with_features(x)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, calibrated: bool = True) -> np.ndarray:
        """Logits for a batch, with the package's calibration applied when it lists one."""
        self.model.eval()
        z = self.model(x).numpy()
        if calibrated and self.calibration is not None:
            z = np.asarray(self.calibration.apply(z))
        return z

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Sigmoid per label (binary/multi-label) or softmax over classes (multiclass)."""
        z = torch.as_tensor(np.asarray(logits, dtype=np.float32))
        return (torch.softmax(z, 1) if self.config["activation"] == "softmax" else torch.sigmoid(z)).numpy()


def save_model(model_dir: str | Path, model: ClassifierNet, config: dict[str, Any]) -> Path:
    """Write weights and config atomically; the config records the weights' SHA-256."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(model_dir / WEIGHTS, buf.getvalue())
    config = {**config, "format": FORMAT, "format_version": VERSION,
              "weights_sha256": sha256_file(model_dir / WEIGHTS)}
    atomic_write_text(model_dir / CONFIG, json.dumps(config, indent=2, sort_keys=True, default=_json))
    return model_dir


def _json(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (np.ndarray, tuple)):
        return list(value)
    return str(value)


def load_classifier(model: str | Path | Package, allow_retired: bool = False, *,
                    unpackaged: bool = False) -> ClassifierBundle:
    """Rebuild the network from ``config.json`` and load ``model.pt`` (hash checked) in eval mode.

    ``model``: a ``Package``, a package folder or registered NAME[@VERSION] (verified by ``load_package``). A plain
    training folder without manifest is refused (PackageError with the packaging hint) unless ``unpackaged`` —
    for the library code that packages a fresh training folder (weights and config only, no side file read).
    """
    pkg = model if isinstance(model, Package) else None
    if pkg is None and not unpackaged:
        if Path(model).is_dir() and not (Path(model) / "manifest.json").exists():
            raise PackageError("not a model package (no manifest.json): an unverified classifier is not run; "
                               f"package it with `medsight models package {model} PACKAGE_DIR --task classification "
                               "--name NAME`", model)
        pkg = load_package(model, allow_retired=allow_retired)
    if pkg is not None:
        if pkg.task != "classification":
            raise ConfigError(f"package {pkg.label} is a {pkg.task} model, not a classifier", pkg.path)
        cfg_path, w_path, model_dir = pkg.file(CONFIG), pkg.file(WEIGHTS), pkg.path
    else:
        model_dir = Path(model)
        cfg_path, w_path = model_dir / CONFIG, model_dir / WEIGHTS
    if not cfg_path.is_file() or not w_path.is_file():
        raise InputNotFoundError(f"not a classifier model directory (needs {CONFIG} and {WEIGHTS}); "
                                 "train one with `medsight train-cls`", model_dir)
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as err:
        raise IntegrityError(f"{CONFIG} is not valid JSON ({err.msg})", cfg_path) from err
    if config.get("format") != FORMAT:
        raise ConfigError(f"{CONFIG} is not a medsight classifier config (format {config.get('format')!r})", cfg_path)
    if config.get("weights_sha256") and sha256_file(w_path) != config["weights_sha256"]:
        raise IntegrityError("model.pt does not match the hash in config.json; the weights were changed or "
                             "truncated", w_path)
    model, _ = build_classifier(config["backbone"], config["spatial_dims"], config.get("in_channels", 1),
                                config["n_outputs"], config["input_size"], config.get("dropout", 0.2))
    if config.get("evidence_sharpness") is not None:
        model.evidence_sharpness = float(config["evidence_sharpness"])
    loc = config.get("localisation")
    if loc and "channels" in loc:  # an auxiliary mask head (evidence-map models supervise their own map)
        model.add_localisation_head(loc["layer"], int(loc["channels"]), config["spatial_dims"])
    state = torch.load(w_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    calibration = load_calibration(pkg) if pkg is not None else None
    return ClassifierBundle(model, config, model_dir, package=pkg, calibration=calibration)
