"""Safety figures for a trained segmentation model folder: per-case uncertainty and boundary-band calibration.

Members of the predictive distribution are the trained folds (deep ensemble) crossed with the mirror
test-time augmentations the plan allows (each flip predicted separately, then flipped back). With a single
trained fold the spread is test-time-augmentation uncertainty only, and the result says so (``members``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medsight.image import Image
from medsight.safety.seg_calibration import band_calibration
from medsight.safety.uncertainty import segmentation_case_summary


def member_probabilities(model_dir: str | Path, image: Image, max_flips: int = 4) -> tuple[np.ndarray, list[str]]:
    """Probability maps (S, C, *spatial) on the input grid, one per (fold, flip) member, and the member names."""
    from medsight.segmentation.ensemble import available_folds
    from medsight.segmentation.predict import Predictor

    samples, names = [], []
    for fold in available_folds(Path(model_dir)):
        pred = Predictor(model_dir, folds=[fold], mirror=False)
        axes_ok = [a for a in (pred.cfg.mirror_axes or range(image.array.ndim)) if a < image.array.ndim]
        flips: list[tuple[int, ...]] = [()] + [(a,) for a in axes_ok][: max_flips - 1]
        for axes in flips:
            arr = np.flip(image.array, axes).copy() if axes else image.array
            p = pred.predict(image.with_array(arr, "mirror", axes=list(axes)) if axes else image).probabilities
            samples.append(np.flip(p, [a + 1 for a in axes]).copy() if axes else p)
            names.append(f"fold {fold}" + (f", flip axis {axes[0]}" if axes else ""))
    return np.stack(samples), names


def case_safety(model_dir: str | Path, image: Image, reference: np.ndarray | None, labels: Mapping[int, str],
                band_mm: float = 3.0, max_flips: int = 4) -> dict[str, Any]:
    """Per structure: volume CV across members, mean entropy / MI inside the predicted structure, and (with a
    reference) ECE and Brier of the mean foreground probability in a ±``band_mm`` boundary band."""
    samples, names = member_probabilities(model_dir, image, max_flips)
    rows = segmentation_case_summary(samples, image.spacing, dict(labels))
    if reference is not None:
        mean = samples.mean(axis=0)
        for row in rows:
            ref = np.asarray(reference) == row["label"]
            if ref.any():
                cal = band_calibration(np.clip(mean[row["label"]], 0, 1), ref, image.spacing, band_mm)
                row.update({"band_ece": cal["ece"], "band_brier": cal["brier"], "band_voxels": cal["n_voxels"]})
    return {"members": names, "structures": rows}
