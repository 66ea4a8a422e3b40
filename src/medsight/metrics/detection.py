"""Lesion detection: FROC curve and the LUNA16 competition performance metric (CPM).

Each candidate is either a hit on a reference lesion or a false positive, decided by a hit criterion
(``match_candidates``: LUNA16's rule, the candidate lies within the lesion's radius of its centre). At a score
threshold, sensitivity = distinct lesions hit by at least one candidate / all lesions, and the FP rate = false
positive candidates / number of images; further hits on an already-found lesion count as neither (LUNA16).
CPM = mean sensitivity at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image, read off the FROC curve by
linear interpolation (as LUNA16's evaluation script does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medsight.errors import MetricError
from medsight.metrics._inputs import as_scores

CPM_FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def match_candidates(candidate_image: Sequence[str], candidate_xyz: np.ndarray, lesion_image: Sequence[str],
                     lesion_xyz: np.ndarray, lesion_radius_mm: Sequence[float]) -> np.ndarray:
    """For each candidate, the index of the lesion it hits (nearest centre within the radius, same image) or -1."""
    cxyz = np.asarray(candidate_xyz, dtype=float).reshape(len(candidate_image), -1)
    lxyz = np.asarray(lesion_xyz, dtype=float).reshape(len(lesion_image), -1)
    rad = np.asarray(lesion_radius_mm, dtype=float).ravel()
    if rad.shape[0] != lxyz.shape[0]:
        raise MetricError(f"{lxyz.shape[0]} lesions but {rad.shape[0]} radii; give one radius per lesion")
    l_img = np.asarray(lesion_image, dtype=str)
    hit = np.full(cxyz.shape[0], -1, dtype=np.int64)
    for i, (img, xyz) in enumerate(zip(np.asarray(candidate_image, dtype=str), cxyz)):
        idx = np.flatnonzero(l_img == img)
        if idx.size == 0:
            continue
        d = np.linalg.norm(lxyz[idx] - xyz, axis=1)
        inside = d <= rad[idx]
        if inside.any():
            hit[i] = int(idx[inside][np.argmin(d[inside])])
    return hit


def froc_curve(scores: Sequence[float] | np.ndarray, lesion_hit: Sequence[int] | np.ndarray, n_lesions: int,
               n_images: int) -> dict[str, np.ndarray]:
    """FROC operating points at every distinct score threshold (highest first), starting at (0 FP, 0 sens).

    ``lesion_hit[i]`` is the index of the lesion candidate i hits, or -1 for a false positive.
    """
    s = as_scores(scores, name="candidate score")
    hit = np.asarray(lesion_hit, dtype=np.int64).ravel()
    if hit.shape[0] != s.shape[0]:
        raise MetricError(f"{s.shape[0]} candidate scores but {hit.shape[0]} hit flags")
    if n_lesions < 1 or n_images < 1:
        raise MetricError(f"FROC needs at least one lesion and one image, got {n_lesions} and {n_images}")
    if hit.size and hit.max() >= n_lesions:
        raise MetricError(f"a candidate hits lesion {hit.max()} but only {n_lesions} lesions exist")
    order = np.argsort(-s, kind="mergesort")
    s, hit = s[order], hit[order]
    is_fp = hit < 0
    first_hit = np.zeros(s.shape[0], dtype=bool)  # first (highest-scoring) candidate on each lesion
    if (~is_fp).any():
        _, first = np.unique(hit[~is_fp], return_index=True)
        first_hit[np.flatnonzero(~is_fp)[first]] = True
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.shape[0] - 1] if s.size else np.empty(0, dtype=np.int64)
    fps = np.cumsum(is_fp)[last_of_tie] / n_images
    sens = np.cumsum(first_hit)[last_of_tie] / n_lesions
    return {"fp_per_image": np.r_[0.0, fps], "sensitivity": np.r_[0.0, sens],
            "threshold": np.r_[np.inf, s[last_of_tie]]}


def sensitivity_at_fp_rates(curve: dict[str, np.ndarray], fp_rates: Sequence[float] = CPM_FP_RATES) -> np.ndarray:
    """Sensitivity at each FP-per-image rate, linearly interpolated on the FROC curve (held beyond its end)."""
    return np.interp(np.asarray(fp_rates, dtype=float), curve["fp_per_image"], curve["sensitivity"])


def cpm(scores: Sequence[float] | np.ndarray, lesion_hit: Sequence[int] | np.ndarray, n_lesions: int,
        n_images: int) -> float:
    """LUNA16 competition performance metric: mean FROC sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPs/image."""
    return float(np.mean(sensitivity_at_fp_rates(froc_curve(scores, lesion_hit, n_lesions, n_images))))
