"""The model directory: ``model.pt`` (weights), ``config.json`` (everything needed to rebuild and apply it).

``config.json`` holds labels, task, activation, thresholds (chosen on validation data), input size,
normalisation, backbone, Grad-CAM layer, and what made the model (manifest hash, seed, versions, metrics).
``load_classifier`` rebuilds the network from the config, so a directory is usable without the training code's
arguments; the safety layer may add ``calibration.json`` beside them, which ``predict_logits`` applies.
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
        """Logits for a batch, with the model dir's calibration.json applied when present."""
        self.model.eval()
        z = self.model(x).numpy()
        if calibrated and self.model_dir is not None and (self.model_dir / "calibration.json").is_file():
            from medsight.safety.temperature import apply_calibration  # optional layer above us

            z = np.asarray(apply_calibration(z, self.model_dir))
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


def load_classifier(model_dir: str | Path) -> ClassifierBundle:
    """Rebuild the network from ``config.json`` and load ``model.pt`` (hash checked) in eval mode."""
    model_dir = Path(model_dir)
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
    return ClassifierBundle(model, config, model_dir)
