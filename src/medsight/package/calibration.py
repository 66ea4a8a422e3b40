"""Calibration parameters as stored in a model package: ``Calibration`` (apply to logits) and its JSON file.

Lives in the package layer because both the classifier (which applies it) and the safety layer (which fits it)
need it, and classification must not import safety. Fitting stays in ``medsight.safety.temperature``.
A package lists ``calibration.json`` in its manifest; ``load_calibration`` given a ``Package`` reads it only then.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.errors import ConfigError, IntegrityError
from medsight.files import atomic_write_text
from medsight.package.package import Package

CALIBRATION_FILE = "calibration.json"
FORMAT = "medsight-calibration"
VERSION = 1


@dataclass
class Calibration:
    """Fitted calibration parameters; ``apply`` turns raw logits into calibrated logits.

    ``temperature`` maps label name -> T (for softmax all labels share one T). For vector scaling,
    ``weights``/``bias`` hold one value per class and ``temperature`` is all ones.
    """

    method: str  # "temperature" | "vector"
    activation: str  # "softmax" | "sigmoid"
    labels: list[str]
    temperature: dict[str, float]
    weights: list[float] | None = None
    bias: list[float] | None = None
    fit: dict[str, Any] = field(default_factory=dict)  # n, nll_before, nll_after, ece_before, ece_after...

    def apply(self, logits: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Calibrated logits (same type and shape as the input); feed them to softmax/sigmoid as before."""
        is_torch = isinstance(logits, torch.Tensor)
        z = logits if is_torch else np.asarray(logits, dtype=np.float64)
        n_out = 1 if z.ndim == 1 else z.shape[-1]
        if n_out != len(self.labels):
            raise ConfigError(
                f"calibration was fitted for {len(self.labels)} outputs ({', '.join(self.labels)}) but the model "
                f"produced {n_out}; refit the calibration for this model"
            )
        if self.method == "vector":
            w, b = np.asarray(self.weights, dtype=np.float64), np.asarray(self.bias, dtype=np.float64)
            if is_torch:
                return z * torch.as_tensor(w, dtype=z.dtype, device=z.device) + torch.as_tensor(b, dtype=z.dtype, device=z.device)
            return z * w + b
        t = np.asarray([self.temperature[name] for name in self.labels], dtype=np.float64)
        if z.ndim == 1:
            t = t[0]
        if is_torch:
            return z / torch.as_tensor(t, dtype=z.dtype, device=z.device)
        return z / t

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Calibration":
        if d.get("format") != FORMAT:
            raise ConfigError(f"not a medsight calibration file (format={d.get('format')!r})")
        if int(d.get("version", 0)) > VERSION:
            raise ConfigError(f"calibration file version {d.get('version')} is newer than this medsight reads ({VERSION}); upgrade medsight")
        method, activation = d["method"], d["activation"]
        if method not in ("temperature", "vector") or activation not in ("softmax", "sigmoid"):
            raise ConfigError(f"unknown calibration method/activation {method!r}/{activation!r}")
        temps = {str(k): float(v) for k, v in d["temperature"].items()}
        if any(not math.isfinite(t) or t <= 0 for t in temps.values()):
            raise ConfigError(f"calibration temperatures must be positive and finite, got {temps}")
        return cls(method, activation, [str(x) for x in d["labels"]], temps, d.get("weights"), d.get("bias"),
                   dict(d.get("fit", {})))


def save_calibration(model_dir: str | Path, calibration: Calibration) -> Path:
    """Write ``calibration.json`` into a model directory (atomically); predict applies it when present."""
    path = Path(model_dir) / CALIBRATION_FILE
    atomic_write_text(path, json.dumps(calibration.to_dict(), indent=2, sort_keys=True))
    return path


def load_calibration(model_dir: str | Path | Package) -> Calibration | None:
    """The calibration stored in a model directory or package, or None when there is none.

    For a ``Package`` only a calibration its manifest lists counts (a stray file never verifies anyway)."""
    if isinstance(model_dir, Package):
        if not model_dir.has(CALIBRATION_FILE):
            return None
        path = model_dir.file(CALIBRATION_FILE)
    else:
        path = Path(model_dir) / CALIBRATION_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IntegrityError(f"calibration file is not valid JSON ({err.msg}); refit it with medsight.safety", path) from err
    try:
        return Calibration.from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"calibration file is incomplete ({err}); refit it", path) from err


def apply_calibration(logits: np.ndarray | torch.Tensor, model_dir: str | Path | Package) -> np.ndarray | torch.Tensor:
    """Calibrated logits when the model directory holds a calibration, the logits unchanged otherwise."""
    cal = load_calibration(model_dir)
    return logits if cal is None else cal.apply(logits)
