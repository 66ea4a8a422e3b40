"""Post-hoc calibration of classifier logits: temperature scaling and vector scaling, stored beside the model.

Why: networks trained with cross-entropy are usually over-confident; one scalar (temperature) or one
scale+bias per class (vector scaling), fitted on held-out validation logits by minimising the negative
log-likelihood (Guo et al., 2017), fixes most of it without changing the ranking of cases (AUC unchanged).

Two output kinds are supported:
- ``"softmax"``: logits ``(N, C)`` with integer targets ``(N,)``; one temperature for all classes, or vector
  scaling (``W = diag(w)``, bias ``b``).
- ``"sigmoid"``: independent binary labels (multi-label); logits ``(N, L)`` (or ``(N,)``) with 0/1 targets of the
  same shape; one temperature *per label*.

The fitted parameters (``medsight.package.calibration.Calibration``) are stored as ``calibration.json`` in a new
version of the model package and applied at prediction by the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from medsight.errors import ConfigError, MetricError
from medsight.package.calibration import (CALIBRATION_FILE, FORMAT, VERSION, Calibration, apply_calibration,
                                          load_calibration, save_calibration)

__all__ = ["CALIBRATION_FILE", "FORMAT", "VERSION", "Calibration", "apply_calibration", "fit_calibration",
           "load_calibration", "save_calibration"]
_T_MIN, _T_MAX = 0.05, 20.0  # a temperature outside this range means the fit or the data is broken


# ----------------------------------------------------------------------------------------------------------- fitting


def _check(logits: np.ndarray, targets: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(targets)
    if not np.all(np.isfinite(z)):
        raise MetricError("logits contain NaN or infinite values; check the model outputs before calibrating")
    if activation == "softmax":
        if z.ndim != 2 or y.shape != (z.shape[0],):
            raise MetricError(f"softmax calibration needs logits (N, C) and integer targets (N,), got {z.shape} and {y.shape}")
        if y.min(initial=0) < 0 or y.max(initial=0) >= z.shape[1]:
            raise MetricError(f"targets must lie in 0..{z.shape[1] - 1}")
    elif activation == "sigmoid":
        if y.shape != z.shape:
            raise MetricError(f"sigmoid calibration needs targets shaped like the logits, got {y.shape} vs {z.shape}")
        if not np.isin(y, (0, 1)).all():
            raise MetricError("sigmoid calibration needs 0/1 targets")
    else:
        raise ConfigError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    if z.shape[0] < 2:
        raise MetricError("at least two validation cases are needed to fit a calibration")
    return z, y


def nll(logits: np.ndarray, targets: np.ndarray, activation: str = "softmax") -> float:
    """Mean negative log-likelihood (natural log) of the targets; for sigmoid, mean over cases and labels."""
    z, y = _check(logits, targets, activation)
    zt = torch.as_tensor(z)
    if activation == "softmax":
        return float(torch.nn.functional.cross_entropy(zt, torch.as_tensor(y, dtype=torch.long)))
    return float(torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.as_tensor(y, dtype=torch.float64)))


def _lbfgs(params: list[torch.Tensor], loss_fn) -> None:
    """Full-batch LBFGS with strong-Wolfe line search: the optimiser Guo et al. used, converges in a few steps."""
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def fit_temperature_softmax(logits: np.ndarray, targets: np.ndarray) -> float:
    """The one temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (optimised over log T)."""
    z, y = _check(logits, targets, "softmax")
    if separable_softmax(z, y):
        return 1.0
    zt, yt = torch.as_tensor(z), torch.as_tensor(y, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    _lbfgs([log_t], lambda: torch.nn.functional.cross_entropy(zt / log_t.exp(), yt))
    return _clip_t(float(log_t.detach().exp()))


def separable_softmax(z: np.ndarray, y: np.ndarray) -> bool:
    """Every validation case already has its target as the strict argmax.

    Why it matters: then the NLL of ``softmax(z / T)`` falls monotonically as T -> 0, so the "best" temperature
    is the optimiser's lower bound, a 20x sharpening that no validation case supports. Such a set cannot show
    over- or under-confidence; the fit keeps T = 1 (no change) instead of sharpening.
    """
    z = np.asarray(z, dtype=np.float64)
    top = np.take_along_axis(z, np.asarray(y)[:, None], axis=1)[:, 0]
    others = np.where(np.eye(z.shape[1], dtype=bool)[np.asarray(y)], -np.inf, z).max(axis=1)
    return bool(np.all(top > others))


def separable_sigmoid(z: np.ndarray, y: np.ndarray) -> bool:
    """Every case of one binary label lies on its target's side of logit 0 (NLL falls as T -> 0, as above)."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y)
    return bool(np.all(np.where(y == 1, z > 0, z < 0)))


def fit_temperature_sigmoid(logits: np.ndarray, targets: np.ndarray) -> list[float]:
    """One temperature per label minimising that label's binary NLL of ``sigmoid(logit / T)``."""
    z, y = _check(logits, targets, "sigmoid")
    z2, y2 = (z[:, None], y[:, None]) if z.ndim == 1 else (z, y)
    out = []
    for j in range(z2.shape[1]):
        if separable_sigmoid(z2[:, j], y2[:, j]):
            out.append(1.0)
            continue
        zt, yt = torch.as_tensor(z2[:, j]), torch.as_tensor(y2[:, j], dtype=torch.float64)
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        _lbfgs([log_t], lambda: torch.nn.functional.binary_cross_entropy_with_logits(zt / log_t.exp(), yt))
        out.append(_clip_t(float(log_t.detach().exp())))
    return out


def fit_vector_scaling(logits: np.ndarray, targets: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-class scale ``w`` and bias ``b`` minimising the NLL of ``softmax(w * logits + b)`` (multi-class)."""
    z, y = _check(logits, targets, "softmax")
    zt, yt = torch.as_tensor(z), torch.as_tensor(y, dtype=torch.long)
    c = z.shape[1]
    w = torch.ones(c, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    _lbfgs([w, b], lambda: torch.nn.functional.cross_entropy(zt * w + b, yt))
    return [float(v) for v in w.detach()], [float(v) for v in b.detach()]


def _clip_t(t: float) -> float:
    if not math.isfinite(t):
        raise MetricError("temperature fit diverged (separable validation data?); use more validation cases")
    return float(min(max(t, _T_MIN), _T_MAX))


def fit_calibration(logits: np.ndarray, targets: np.ndarray, labels: Sequence[str], activation: str = "softmax",
                    method: str = "temperature") -> Calibration:
    """Fit temperature or vector scaling on validation logits; the result records NLL and ECE before/after."""
    z, y = _check(logits, targets, activation)
    labels = [str(x) for x in labels]
    n_out = 1 if z.ndim == 1 else z.shape[1]
    if len(labels) != n_out:
        raise ConfigError(f"{len(labels)} label names given for {n_out} model outputs")
    if method == "temperature":
        temps = [fit_temperature_softmax(z, y)] * n_out if activation == "softmax" else fit_temperature_sigmoid(z, y)
        cal = Calibration("temperature", activation, labels, dict(zip(labels, temps)))
    elif method == "vector":
        if activation != "softmax" or n_out < 2:
            raise ConfigError("vector scaling is for multi-class softmax outputs; use method='temperature'")
        w, b = fit_vector_scaling(z, y)
        cal = Calibration("vector", activation, labels, dict.fromkeys(labels, 1.0), w, b)
    else:
        raise ConfigError(f"calibration method must be 'temperature' or 'vector', got {method!r}")
    cal.fit = {"n": int(z.shape[0]), "nll_before": nll(z, y, activation), "nll_after": nll(cal.apply(z), y, activation)}
    kept = _separable_labels(z, y, labels, activation) if method == "temperature" else []
    if kept:  # recorded so that a reader sees why T = 1 (the page and the card print the fit record)
        cal.fit["separable_kept_t1"] = kept
    cal.fit.update(_ece_before_after(z, cal.apply(z), y, activation))
    return cal


def _separable_labels(z: np.ndarray, y: np.ndarray, labels: list[str], activation: str) -> list[str]:
    if activation == "softmax":
        return list(labels) if separable_softmax(z, y) else []
    z2, y2 = (z[:, None], y[:, None]) if z.ndim == 1 else (z, y)
    return [lab for j, lab in enumerate(labels) if separable_sigmoid(z2[:, j], y2[:, j])]


def probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
    """Softmax over the last axis, or elementwise sigmoid."""
    z = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    return (torch.softmax(z, dim=-1) if activation == "softmax" else torch.sigmoid(z)).numpy()


def top_label_confidence(logits: np.ndarray, targets: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) per case and label: the inputs ECE is computed on.

    Softmax: confidence = max probability, correct = argmax equals the target. Sigmoid: each label is its own
    binary problem, flattened: probability of the positive class against the 0/1 target.
    """
    p = probabilities(logits, activation)
    y = np.asarray(targets)
    if activation == "softmax":
        return p.max(axis=1), (p.argmax(axis=1) == y).astype(int)
    return p.ravel(), y.ravel().astype(int)


def _ece_before_after(z: np.ndarray, zc: np.ndarray, y: np.ndarray, activation: str) -> dict[str, float]:
    try:
        from medsight.metrics.calibration import expected_calibration_error
    except ImportError:  # metrics layer not installed: the NLL figures still stand
        return {}
    out = {}
    for key, logits in (("ece_before", z), ("ece_after", zc)):
        conf, correct = top_label_confidence(logits, y, activation)
        out[key] = float(expected_calibration_error(correct, conf))
    return out
