"""From probabilities on the network grid to outputs on the input grid: resample, argmax, entropy."""

from __future__ import annotations

import numpy as np

from medsight.data.preprocess import resample


def to_input_grid(prob: np.ndarray, original_shape: tuple[int, ...]) -> np.ndarray:
    """Resample (C, *S') probabilities back onto the input image's voxel grid (linear), renormalised."""
    out = resample(prob, tuple(original_shape))
    out = np.clip(out, 0.0, None)
    return out / np.maximum(out.sum(0, keepdims=True), 1e-8)


def labels_from_probabilities(prob: np.ndarray) -> np.ndarray:
    return prob.argmax(0).astype(np.uint8)


def entropy(prob: np.ndarray) -> np.ndarray:
    """Per-voxel predictive entropy in nats (0 = certain; log(C) = uniform)."""
    p = np.clip(prob, 1e-8, 1.0)
    return (-(p * np.log(p)).sum(0)).astype(np.float32)
