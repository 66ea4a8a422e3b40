"""Mirroring test-time augmentation, only where it pays.

``mirrored_softmax`` averages the softmax over every combination of flips of the chosen axes (each combination is
one more network pass per window: 8 in 3D for all three axes). Whether a flip helps depends on the anatomy and the
model, so the study after training (segmentation/tta_study.py) measures it together with the window overlap.
``choose_axes`` / ``combine_studies`` are the rule of packages whose studies predate that (axes whose mean
single-axis Dice gain reaches ``MIN_GAIN``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from medsight.metrics.segmentation import dice

MIN_GAIN = 0.001  # mean Dice gain (over validation cases) an axis must bring to be worth one more pass per window
STUDY_CASES = 4  # validation cases per fold the study predicts (each 1 + n_axes passes)
INFERENCE_FILE = "inference.json"  # in the model package: the mirror axes predict uses by default, and why


def mirror_combinations(axes: list[int] | tuple[int, ...]) -> list[tuple[int, ...]]:
    """All subsets of ``axes`` (spatial axis numbers), the empty one (no flip) first."""
    out: list[tuple[int, ...]] = []
    for r in range(len(axes) + 1):
        out.extend(itertools.combinations(axes, r))
    return out


def _first(out: torch.Tensor | list | tuple) -> torch.Tensor:
    return out[0] if isinstance(out, (list, tuple)) else out


def mirrored_softmax(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     axes: list[int] | tuple[int, ...] = (),
                     combos: Sequence[tuple[int, ...]] | None = None) -> torch.Tensor:
    """Mean softmax over flips of (B, C, *S) input along spatial ``axes`` (or exactly ``combos``); each output is
    flipped back. One network call per flip of the window batch: stacking every flip into one call was 20-24 %
    slower in CPU on the demo and CT networks (docs/benchmarks.md "predict"), with equal outputs."""
    combos = list(combos) if combos is not None else mirror_combinations(axes)
    total = None
    for c in combos:
        dims = [a + 2 for a in c]
        p = torch.softmax(_first(model(torch.flip(x, dims) if dims else x)), 1)
        p = torch.flip(p, dims) if dims else p
        total = p if total is None else total + p
    return total / len(combos)


def hard_dice(prob: np.ndarray, ref: np.ndarray, n_classes: int) -> float:
    """Mean hard Dice over the foreground classes present in the reference or the prediction (NaN if none)."""
    pred = prob.argmax(0)
    values = [dice(pred == c, ref == c) for c in range(1, n_classes) if (pred == c).any() or (ref == c).any()]
    return float(np.mean(values)) if values else float("nan")


def choose_axes(gain_by_axis: dict[str, float], min_gain: float = MIN_GAIN) -> list[int]:
    """The axes whose measured mean Dice gain reaches ``min_gain`` (NaN never does)."""
    return sorted(int(a) for a, g in gain_by_axis.items() if g == g and g >= min_gain)


def combine_studies(studies: Sequence[dict[str, Any]], min_gain: float = MIN_GAIN) -> dict[str, Any] | None:
    """The package's choice from its folds' studies: gains averaged over folds, weighted by their cases."""
    studies = [s for s in studies if s.get("n_cases")]
    if not studies:
        return None
    n = sum(s["n_cases"] for s in studies)
    axes = sorted({a for s in studies for a in s["gain_by_axis"]}, key=int)
    gains = {a: float(sum(s["gain_by_axis"].get(a, 0.0) * s["n_cases"] for s in studies) / n) for a in axes}
    return {"mirror_axes": choose_axes(gains, min_gain), "gain_by_axis": gains, "min_gain": min_gain,
            "n_cases": n, "unit": "validation case", "folds": len(studies),
            "how": "mean hard Dice (foreground classes) with the softmax averaged with each single-axis flip, minus "
                   "the Dice without mirroring, on each fold's validation cases after training"}
