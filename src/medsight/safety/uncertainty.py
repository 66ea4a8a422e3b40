"""Uncertainty from a stack of probability samples (MC dropout passes or ensemble members).

Inputs are probabilities shaped ``(S, N, C, *spatial)``: S samples, N cases, C classes on axis 2. For a single
case use N = 1. Entropies are in nats.

- predictive entropy  H[ E_s p ]           (total uncertainty)
- expected entropy    E_s H[ p_s ]         (aleatoric part)
- mutual information  H[ E_s p ] - E_s H[p_s]   (epistemic part, the members' disagreement; >= 0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsight.errors import MetricError

_EPS = 1e-12


def _as_samples(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 3:
        raise MetricError(f"probability samples must be shaped (S, N, C, ...), got {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < -1e-6 or p.max() > 1 + 1e-6:
        raise MetricError("probability samples must be finite and lie in [0, 1]; pass softmax outputs, not logits")
    return p


def entropy(p: np.ndarray, axis: int = 1) -> np.ndarray:
    """Shannon entropy (nats) along the class axis."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


def predictive_entropy(samples: np.ndarray) -> np.ndarray:
    """Entropy of the mean prediction, shape ``(N, *spatial)``."""
    return entropy(_as_samples(samples).mean(axis=0), axis=1)


def expected_entropy(samples: np.ndarray) -> np.ndarray:
    p = _as_samples(samples)
    return entropy(p, axis=2).mean(axis=0)


def mutual_information(samples: np.ndarray) -> np.ndarray:
    """BALD mutual information between prediction and model parameters, shape ``(N, *spatial)``; clipped at 0."""
    p = _as_samples(samples)
    return np.maximum(entropy(p.mean(axis=0), axis=1) - entropy(p, axis=2).mean(axis=0), 0.0)


def classification_summary(samples: np.ndarray) -> dict[str, np.ndarray]:
    """Per-case mean probabilities, predicted class, confidence, predictive entropy and mutual information."""
    p = _as_samples(samples)
    mean = p.mean(axis=0)
    return {
        "prob": mean,
        "pred": mean.argmax(axis=1),
        "confidence": mean.max(axis=1),
        "predictive_entropy": entropy(mean, axis=1),
        "mutual_information": mutual_information(p),
        "prob_std": p.std(axis=0),
    }


def segmentation_case_summary(samples: np.ndarray, spacing: Sequence[float], labels: dict[int, str] | None = None,
                              ) -> list[dict[str, float]]:
    """Per-structure uncertainty of one case from segmentation probability samples ``(S, C, *spatial)``.

    For each foreground class: the mean predictive entropy and mutual information inside the structure
    predicted by the mean probabilities, each member's volume (ml) from its own argmax, and the volume
    coefficient of variation across members (std / mean, population std). A case whose volume CV is high is a
    case whose measured volume should not be trusted.
    """
    p = np.asarray(samples, dtype=np.float64)
    if p.ndim < 3:
        raise MetricError(f"segmentation samples must be shaped (S, C, *spatial), got {p.shape}")
    if len(spacing) != p.ndim - 2:
        raise MetricError(f"spacing has {len(spacing)} axes but the samples have {p.ndim - 2} spatial axes")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    stack = _as_samples(p[:, None])  # (S, 1, C, ...)
    h = predictive_entropy(stack)[0]
    mi = mutual_information(stack)[0]
    pred = p.mean(axis=0).argmax(axis=0)
    member_pred = p.argmax(axis=1)  # (S, *spatial)
    n_classes = p.shape[1]
    out = []
    for c in range(1, n_classes):
        inside = pred == c
        vols = (member_pred == c).reshape(p.shape[0], -1).sum(axis=1) * voxel_ml
        mean_vol = float(vols.mean())
        out.append({
            "label": c,
            "name": (labels or {}).get(c, str(c)),
            "volume_ml": float(inside.sum() * voxel_ml),
            "volume_ml_members_mean": mean_vol,
            "volume_ml_members_std": float(vols.std()),
            "volume_cv": float(vols.std() / mean_vol) if mean_vol > 0 else float("nan"),
            "mean_entropy_inside": float(h[inside].mean()) if inside.any() else float("nan"),
            "mean_mutual_information_inside": float(mi[inside].mean()) if inside.any() else float("nan"),
        })
    return out
