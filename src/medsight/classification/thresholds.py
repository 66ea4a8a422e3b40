"""Decision thresholds chosen on validation data for a target sensitivity, one per label."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from medsight.metrics.classification import threshold_for_sensitivity

log = logging.getLogger(__name__)


def choose_thresholds(y_val: np.ndarray, prob_val: np.ndarray, labels: Sequence[str],
                      target_sensitivity: float, calibrated: bool = False) -> dict[str, dict[str, float | str]]:
    """Per label: the highest threshold whose validation sensitivity reaches the target.

    The record per label holds the target, the threshold and the validation sensitivity/specificity it gave, and
    whether the probabilities were calibrated: thresholds must be chosen on the same probabilities predict-cls
    compares them with, so fitting a calibration re-runs this on the calibrated validation probabilities.
    A label with only one class in the validation set cannot be tuned; it keeps 0.5 and says so (``method``),
    so the stored model never hides an untuned threshold.
    """
    y = np.asarray(y_val).reshape(len(y_val), -1)
    p = np.asarray(prob_val).reshape(len(prob_val), -1)
    out: dict[str, dict[str, float | str]] = {}
    for j, name in enumerate(labels):
        yj, pj = y[:, j], p[:, j]
        if yj.min() == yj.max():
            log.warning("label %s has one class in the validation set; its threshold stays 0.5", name)
            out[name] = {"threshold": 0.5, "method": "default (validation set has one class)"}
            continue
        t = float(threshold_for_sensitivity(yj, pj, target_sensitivity))
        pos = yj == 1
        out[name] = {"threshold": t, "method": f"validation sensitivity >= {target_sensitivity}",
                     "target_sensitivity": float(target_sensitivity), "calibrated": calibrated,
                     "val_sensitivity": float(np.mean(pj[pos] >= t)), "val_specificity": float(np.mean(pj[~pos] < t)),
                     "n_val_positive": int(pos.sum()), "n_val_negative": int((~pos).sum())}
    return out


def decisions(prob: np.ndarray, thresholds: dict[str, float], labels: Sequence[str]) -> np.ndarray:
    """0/1 decisions per label from the stored thresholds."""
    p = np.asarray(prob).reshape(len(prob), -1)
    return np.stack([(p[:, j] >= thresholds[n]).astype(int) for j, n in enumerate(labels)], axis=1)
