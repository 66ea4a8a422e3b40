"""Per-image out-of-distribution scores; higher = less like the training data.

- ``msp_score``: 1 - maximum softmax probability (Hendrycks & Gimpel, 2017).
- ``energy_score``: -T * logsumexp(logits / T), the negative free energy (Liu et al., 2020).
- ``Mahalanobis``: distance of penultimate features to the nearest class mean under one shared covariance
  fitted on training features (Lee et al., 2018), without input pre-processing.

For sigmoid (multi-label) heads, pass ``activation="sigmoid"``: each label is a two-class softmax over
``[0, z]``, and MSP uses the least confident label.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, logsumexp

from medsight.errors import ConfigError, MetricError
from medsight.files import atomic_write_text
from medsight.metrics.classification import roc_auc


def _logits(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if z.ndim != 2 or not np.all(np.isfinite(z)):
        raise MetricError(f"logits must be a finite (N, C) array, got shape {z.shape}")
    return z


def msp_score(logits: np.ndarray, activation: str = "softmax") -> np.ndarray:
    """1 - max class probability per case (sigmoid: 1 - the least confident label's max(p, 1-p))."""
    z = _logits(logits)
    if activation == "sigmoid":
        p = expit(z)
        return 1.0 - np.maximum(p, 1 - p).min(axis=1)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return 1.0 - p.max(axis=1)


def energy_score(logits: np.ndarray, temperature: float = 1.0, activation: str = "softmax") -> np.ndarray:
    """Negative free energy ``-T logsumexp(z / T)``; in-distribution inputs get large logits, hence low scores.

    Sigmoid heads: the energies of the per-label two-class problems ``[0, z_l]`` are summed.
    """
    z = _logits(logits) / temperature
    if activation == "sigmoid":
        return -temperature * np.logaddexp(0.0, z).sum(axis=1)
    return -temperature * logsumexp(z, axis=1)


@dataclass
class Mahalanobis:
    """Class-conditional Gaussian on features with a tied covariance; score = min over classes of the squared
    Mahalanobis distance. ``shrinkage`` adds ``shrinkage * mean(diag)`` to the diagonal so that the covariance
    stays invertible when there are fewer training cases than feature dimensions.
    """

    means: np.ndarray | None = None  # (K, D)
    precision: np.ndarray | None = None  # (D, D)
    classes: np.ndarray | None = None
    shrinkage: float = 1e-3

    def fit(self, features: np.ndarray, labels: np.ndarray | None = None) -> "Mahalanobis":
        """Fit class means and the shared (pooled within-class) covariance on training features."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or not np.all(np.isfinite(x)):
            raise MetricError(f"features must be a finite (N, D) array, got shape {x.shape}")
        y = np.zeros(len(x), dtype=int) if labels is None else np.asarray(labels)
        if y.shape != (len(x),):
            raise MetricError(f"{len(y)} labels for {len(x)} feature rows")
        self.classes = np.unique(y)
        if len(x) <= len(self.classes):
            raise MetricError("Mahalanobis needs more training cases than classes")
        self.means = np.stack([x[y == c].mean(axis=0) for c in self.classes])
        centred = x - self.means[np.searchsorted(self.classes, y)]
        cov = centred.T @ centred / (len(x) - len(self.classes))
        cov = cov + self.shrinkage * max(float(np.trace(cov)) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])
        self.precision = np.linalg.pinv(cov, hermitian=True)
        return self

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row to each class mean, shape (N, K)."""
        if self.means is None or self.precision is None:
            raise ConfigError("Mahalanobis detector is not fitted; call fit() on training features first")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.means.shape[1]:
            raise MetricError(f"features must be (N, {self.means.shape[1]}), got {x.shape}")
        d = x[:, None, :] - self.means[None, :, :]
        return np.einsum("nkd,de,nke->nk", d, self.precision, d)

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.distances(features).min(axis=1)

    def to_dict(self) -> dict[str, Any]:
        if self.means is None:
            raise ConfigError("cannot save an unfitted Mahalanobis detector")
        return {"means": self.means.tolist(), "precision": self.precision.tolist(),
                "classes": self.classes.tolist(), "shrinkage": self.shrinkage}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Mahalanobis":
        return cls(np.asarray(d["means"]), np.asarray(d["precision"]), np.asarray(d["classes"]), float(d["shrinkage"]))

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "Mahalanobis":
        return cls.from_dict(json.loads(Path(path).read_text()))


def ood_detection_metrics(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    """AUROC (OOD = positive class, ``medsight.metrics.roc_auc``) and the FPR at 95% TPR.

    FPR at 95% TPR: the share of in-distribution cases flagged when the threshold is set so that 95% of the
    OOD cases are caught: the highest threshold with TPR >= 95% (scores >= threshold are flagged), the point
    scikit-learn's ``roc_curve`` reports.
    """
    s_in, s_out = np.asarray(scores_in, dtype=float), np.asarray(scores_out, dtype=float)
    if len(s_in) == 0 or len(s_out) == 0:
        raise MetricError("OOD metrics need at least one in-distribution and one OOD score")
    y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    auroc = float(roc_auc(y, np.r_[s_in, s_out]))
    threshold = float(np.sort(s_out)[len(s_out) - int(np.ceil(0.95 * len(s_out) - 1e-9))])
    fpr95 = float(np.mean(s_in >= threshold))
    return {"auroc": auroc, "fpr_at_95tpr": fpr95, "n_in": int(len(s_in)), "n_out": int(len(s_out))}
