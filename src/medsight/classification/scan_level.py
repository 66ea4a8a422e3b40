"""Scan-level decisions from a slice classifier: aggregate, calibrate and threshold at the unit of decision.

Why: when a scan is called positive on its slices, its probability must be calibrated and thresholded as a scan.
The highest of a scan's slice probabilities is biased upwards (the maximum of many draws), so a temperature
fitted on slices leaves the scan probabilities over-confident, and a threshold chosen on slices does not give
its target sensitivity on scans. The scan score (its highest slice logit) therefore gets its own calibration
(Platt: a temperature and a bias) and its own operating point, both fitted on validation scans and stored as
``scan_level.json`` beside the model, which the report reads back.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsight.errors import ConfigError, InputNotFoundError
from medsight.metrics.calibration import expected_calibration_error
from medsight.metrics.classification import threshold_for_sensitivity

FILE = "scan_level.json"
FORMAT = "medsight-scan-level"
_T_MIN, _T_MAX, _B_MAX = 0.05, 20.0, 20.0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def aggregate_slices(slices: pd.DataFrame) -> pd.DataFrame:
    """One row per scan (``case_id``) from one row per slice (case_id, y_true, logit[, referred, patient_id,
    site, split]): positive when any slice is, score = highest slice logit, referred when any slice is."""
    need = {"case_id", "y_true", "logit"} - set(slices.columns)
    if need:
        raise ConfigError(f"the slice table lacks columns {sorted(need)}")
    agg: dict[str, Any] = {"y_true": ("y_true", "max"), "logit": ("logit", "max"), "n_slices": ("logit", "size")}
    if "referred" in slices.columns:
        agg["referred"] = ("referred", "max")
    for col in ("patient_id", "site", "split"):
        if col in slices.columns:
            agg[col] = (col, "first")
    return slices.groupby("case_id", as_index=False, sort=True).agg(**agg)


@dataclass
class ScanLevel:
    """The scan-level calibration and operating point of one label, with what they gave on validation scans."""

    label: str
    temperature: float = 1.0
    bias: float = 0.0
    threshold: float = 0.5
    target_sensitivity: float = 0.9
    method: str = ""
    aggregation: str = "highest slice logit"
    unit: str = "scan"
    validation: dict[str, Any] = field(default_factory=dict)  # n, n_pos, sensitivity, specificity, ece before/after

    def probabilities(self, scan_logits: np.ndarray) -> np.ndarray:
        """Calibrated scan probabilities sigmoid(z / T + b)."""
        return _sigmoid(np.asarray(scan_logits, dtype=float) / self.temperature + self.bias)

    @property
    def target(self) -> str:
        return f"sensitivity >= {self.target_sensitivity:g} on validation scans"

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def save(self, model_dir: str | Path) -> Path:
        """Into the model folder: a new package version when it is a model package, else a plain file."""
        from medsight.package.model_card import write_model_file

        return write_model_file(model_dir, FILE, json.dumps(self.to_dict(), indent=2, allow_nan=False))

    @classmethod
    def load(cls, model_dir: str | Path) -> ScanLevel:
        path = Path(model_dir) / FILE
        if not path.is_file():
            raise InputNotFoundError(f"{FILE} not found: the demo's safety stage fits the scan-level operating "
                                     "point", path)
        d = json.loads(path.read_text())
        if d.get("format") != FORMAT:
            raise ConfigError(f"{path} is not a scan-level operating point (format {d.get('format')!r})", path)
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def _fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(temperature, bias) minimising the NLL of sigmoid(z / T + b); bounded so separable data cannot diverge."""
    from scipy.optimize import minimize

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = math.exp(params[0]), params[1]
        s = a * z + b
        loss = np.logaddexp(0, s) - y * s
        g = _sigmoid(s) - y
        return float(loss.mean()), np.array([float((g * a * z).mean()), float(g.mean())])

    res = minimize(nll, np.zeros(2), jac=True, method="L-BFGS-B",
                   bounds=[(math.log(1 / _T_MAX), math.log(1 / _T_MIN)), (-_B_MAX, _B_MAX)])
    return 1.0 / math.exp(float(res.x[0])), float(res.x[1])


def fit_scan_level(y_val: np.ndarray, scan_logits_val: np.ndarray, label: str,
                   target_sensitivity: float = 0.9) -> ScanLevel:
    """Calibration and operating point fitted on validation scans; with one class there it keeps T = 1, b = 0
    and threshold 0.5, and ``method`` says so (the report then shows an untuned operating point as such)."""
    y = np.asarray(y_val, dtype=int).ravel()
    z = np.asarray(scan_logits_val, dtype=float).ravel()
    if y.size == 0:
        raise ConfigError("no validation scans: the scan-level operating point cannot be fitted")
    out = ScanLevel(label=label, target_sensitivity=float(target_sensitivity))
    if y.min() == y.max():
        out.method = "default: the validation scans have one class, so neither calibration nor threshold is fitted"
    else:
        out.temperature, out.bias = _fit_platt(z, y)
        calibration = "Platt scaling of the highest slice logit"
        if expected_calibration_error(y, out.probabilities(z), n_bins=10) > expected_calibration_error(
                y, _sigmoid(z), n_bins=10):  # NLL and ECE can disagree on few scans: never ship a worse ECE
            out.temperature, out.bias = 1.0, 0.0
            calibration = "no calibration (Platt scaling did not lower the validation ECE)"
        p = out.probabilities(z)
        out.threshold = float(threshold_for_sensitivity(y, p, target_sensitivity))
        out.method = (f"{calibration} and the highest threshold with validation sensitivity >= "
                      f"{target_sensitivity:g}, both on {y.size} validation scans")
    p0, p = _sigmoid(z), out.probabilities(z)
    pos = y == 1
    out.validation = {
        "n": int(y.size), "n_pos": int(pos.sum()),
        "sensitivity": float(np.mean(p[pos] >= out.threshold)) if pos.any() else None,
        "specificity": float(np.mean(p[~pos] < out.threshold)) if (~pos).any() else None,
        "ece_before": expected_calibration_error(y, p0, n_bins=10),
        "ece_after": expected_calibration_error(y, p, n_bins=10),
    }
    return out
