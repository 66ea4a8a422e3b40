"""Calibration of segmentation voxel probabilities, measured where it matters: in a band around the structure.

Why: almost every voxel far from the boundary is trivially right (p≈0 background, p≈1 deep inside), which
makes a whole-image ECE look excellent however badly the boundary is calibrated. Restricting the voxels to a
band of ``band_mm`` millimetres either side of the reference boundary measures the calibration of the decisions
that change the measured volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from medsight.errors import MetricError


def boundary_band(mask: np.ndarray, spacing: Sequence[float], band_mm: float) -> np.ndarray:
    """Voxels whose distance (mm, Euclidean, anisotropic spacing respected) to the structure's boundary is
    at most ``band_mm``, on either side."""
    m = np.asarray(mask, dtype=bool)
    if len(spacing) != m.ndim:
        raise MetricError(f"spacing has {len(spacing)} axes for a {m.ndim}-D mask")
    if band_mm <= 0:
        raise MetricError(f"band_mm must be positive, got {band_mm}")
    if not m.any():
        return np.zeros_like(m)
    outside = ndimage.distance_transform_edt(~m, sampling=spacing)  # distance of background voxels to the structure
    inside = ndimage.distance_transform_edt(m, sampling=spacing)  # distance of structure voxels to the background
    # a structure voxel touching background has inside distance of one voxel; count the boundary between voxels
    return (m & (inside <= band_mm + min(spacing) / 2)) | (~m & (outside <= band_mm + min(spacing) / 2))


def band_calibration(prob: np.ndarray, ref: np.ndarray, spacing: Sequence[float], band_mm: float = 3.0,
                     n_bins: int = 15) -> dict[str, object]:
    """ECE, Brier score and reliability curve of foreground probabilities for voxels in the boundary band.

    ``prob`` is the probability of the structure, ``ref`` its reference mask, on the same grid. Uses the
    metrics layer's ECE / Brier / reliability functions so the numbers match the classification ones.
    """
    from medsight.metrics.calibration import brier_score, expected_calibration_error, reliability_curve

    p = np.asarray(prob, dtype=np.float64)
    r = np.asarray(ref, dtype=bool)
    if p.shape != r.shape:
        raise MetricError(f"probability map {p.shape} and reference mask {r.shape} are on different grids")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise MetricError("voxel probabilities must be finite and lie in [0, 1]")
    band = boundary_band(r, spacing, band_mm)
    if not band.any():
        raise MetricError("the reference structure is empty, so there is no boundary band to evaluate")
    y, q = r[band].astype(int), p[band]
    return {
        "n_voxels": int(band.sum()),
        "band_mm": float(band_mm),
        "ece": float(expected_calibration_error(y, q, n_bins=n_bins)),
        "brier": float(brier_score(y, q)),
        "reliability": reliability_curve(y, q, n_bins=n_bins),
    }
