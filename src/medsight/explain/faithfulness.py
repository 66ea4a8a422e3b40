"""Do the heatmaps point at the evidence? The pointing game and the deletion curve.

* Pointing game (Zhang et al., ECCV 2016): a hit when the heatmap's maximum falls inside the annotated region,
  optionally grown by ``tolerance`` pixels; the score is hits / positive cases.
* Deletion (Petsiuk et al., RISE, BMVC 2018): remove pixels in order of decreasing heat and follow the model's
  score; a faithful map makes it fall fast (low area under the curve). A random order is the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from medsight.errors import MetricError


def pointing_game(heatmaps: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                  tolerance: float = 0) -> dict[str, float]:
    """Share of cases whose heatmap maximum lies in the mask or within ``tolerance`` pixels of it (Euclidean);
    cases with an empty mask are skipped."""
    if len(heatmaps) != len(masks):
        raise MetricError(f"{len(heatmaps)} heatmaps but {len(masks)} masks")
    hits = n = 0
    for h, m in zip(heatmaps, masks):
        h, m = np.asarray(h), np.asarray(m) > 0
        if h.shape != m.shape:
            raise MetricError(f"heatmap shape {h.shape} differs from mask shape {m.shape}")
        if not m.any():
            continue
        peak = np.unravel_index(int(np.argmax(h)), h.shape)
        n += 1
        if tolerance > 0:
            hits += bool(ndimage.distance_transform_edt(~m)[peak] <= tolerance)
        else:
            hits += bool(m[peak])
    if n == 0:
        raise MetricError("no case has an annotated region; the pointing game needs positive cases with masks")
    return {"score": hits / n, "hits": hits, "n": n, "tolerance_px": tolerance}


def deletion_curve(score_fn: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor, heatmaps: np.ndarray,
                   steps: int = 20, seed: int | None = None, baseline: float = 0.0) -> dict[str, np.ndarray]:
    """Model score as the most-heated pixels are set to ``baseline`` (0 = the mean of a z-scored image).

    ``x`` is a batch (N, 1, *size), ``heatmaps`` (N, *size) on the same grid, ``score_fn`` maps a batch to one
    score per image. With ``seed`` the order is random instead (the reference curve). Returns fractions
    (steps+1,), scores (N, steps+1) and the per-image area under the curve (trapezoid over the fraction).
    """
    n = x.shape[0]
    flat = x.reshape(n, -1).clone()
    h = np.asarray(heatmaps, dtype=np.float64).reshape(n, -1)
    if h.shape[1] != flat.shape[1]:
        raise MetricError(f"heatmaps have {h.shape[1]} pixels but images {flat.shape[1]}")
    rng = np.random.default_rng(seed) if seed is not None else None
    order = np.stack([rng.permutation(h.shape[1]) if rng is not None else np.argsort(-hi, kind="stable") for hi in h])
    fractions = np.linspace(0, 1, steps + 1)
    scores = np.empty((n, steps + 1))
    done = 0
    for s, f in enumerate(fractions):
        upto = int(round(f * h.shape[1]))
        idx = torch.as_tensor(order[:, done:upto])
        if idx.numel():
            flat.scatter_(1, idx, baseline)
        done = upto
        scores[:, s] = np.asarray(score_fn(flat.reshape(x.shape)), dtype=np.float64).reshape(n)
    auc = ((scores[:, 1:] + scores[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)
    return {"fractions": fractions, "scores": scores, "auc": auc}
