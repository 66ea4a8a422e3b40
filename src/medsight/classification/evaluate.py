"""Evaluate a model directory on manifest rows: AUC with DeLong CI per label, and explanation checks
(pointing game against lesion masks, deletion curve against a random-order reference)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight.classification.dataset import load_tensors, spatial_array
from medsight.classification.model_io import ClassifierBundle
from medsight.errors import MetricError
from medsight.explain.faithfulness import deletion_curve, pointing_game
from medsight.explain.gradcam import gradcam_maps, to_image_grid
from medsight.io import read_image
from medsight.metrics.bootstrap import bootstrap_ci
from medsight.metrics.classification import binary_metrics, roc_auc, roc_auc_delong


def predict_paths(bundle: ClassifierBundle, paths: Sequence[Path], quiet: bool = True,
                  batch_size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """Network inputs and probabilities (N, n_outputs) for image files."""
    x = load_tensors(paths, bundle.config["input_size"], quiet=quiet)
    logits = np.concatenate([bundle.predict_logits(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    return x, bundle.probabilities(logits)


def auc_report(y: np.ndarray, prob: np.ndarray, threshold: float | None = None, groups: np.ndarray | None = None,
               n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """AUC with its DeLong 95% CI (and operating point at ``threshold``); NaN fields when one class only.

    DeLong treats rows as independent. With ``groups`` (patient ids) a patient-level (cluster) bootstrap CI is
    added as ``auc_patient_lo``/``auc_patient_hi``: slices of one patient are correlated, and that interval is
    the honest one for a few dozen patients."""
    y = np.asarray(y).astype(int)
    out: dict[str, Any] = {"n": int(len(y)), "n_pos": int(y.sum())}
    try:
        auc, lo, hi = roc_auc_delong(y, prob)
        out.update(auc=float(auc), auc_lo=float(lo), auc_hi=float(hi))
    except MetricError as err:
        out.update(auc=float("nan"), auc_lo=float("nan"), auc_hi=float("nan"), note=str(err))
    if groups is not None and np.isfinite(out["auc"]):
        groups = np.asarray(groups)
        out["n_patients"] = int(len(set(groups.tolist())))
        try:
            _, plo, phi = bootstrap_ci(roc_auc, y, np.asarray(prob), n_boot=n_boot, seed=seed, groups=groups)
            out.update(auc_patient_lo=plo, auc_patient_hi=phi)
        except MetricError as err:
            out.update(auc_patient_lo=float("nan"), auc_patient_hi=float("nan"), patient_ci_note=str(err))
    if threshold is not None and 0 < y.sum() < len(y):
        m = binary_metrics(y, prob, threshold)
        out.update(sensitivity=float(m["sensitivity"]), specificity=float(m["specificity"]))
    return out


def explanation_checks(bundle: ClassifierBundle, x: torch.Tensor, image_paths: Sequence[Path],
                       mask_paths: Sequence[Path], label_index: int = 0, tolerance: int = 0,
                       deletion_steps: int = 10, seed: int = 0,
                       also_tolerances: Sequence[float] = ()) -> dict[str, Any]:
    """Pointing game on the image grid (heatmap resampled to each mask) and deletion AUC vs random order.

    ``also_tolerances``: further pointing-game tolerances scored on the same maps (``pointing_game_tol<t>px``),
    so a second tolerance does not cost a second Grad-CAM and deletion pass."""
    cams = gradcam_maps(bundle.model, x, bundle.config["cam_layer"], class_index=label_index)
    heats, masks = [], []
    for cam, mp in zip(cams, mask_paths):
        mask = spatial_array(read_image(mp)) > 0
        masks.append(mask)
        heats.append(to_image_grid(cam, mask.shape))
    pg = pointing_game(heats, masks, tolerance=tolerance)

    scored: dict[bytes, np.ndarray] = {}

    def score(batch: torch.Tensor) -> np.ndarray:
        # both curves start from the intact images and end with every pixel deleted: the same batches, scored
        # once (2 of the 2 * (steps + 1) passes over every positive image)
        key = hashlib.blake2b(batch.detach().contiguous().numpy().tobytes(), digest_size=16).digest()
        if key not in scored:
            scored[key] = bundle.probabilities(bundle.predict_logits(batch, calibrated=False))[:, label_index]
        return scored[key]

    grad = deletion_curve(score, x, cams, steps=deletion_steps)
    rand = deletion_curve(score, x, cams, steps=deletion_steps, seed=seed)
    return {"pointing_game": pg["score"], "pointing_hits": pg["hits"], "pointing_n": pg["n"],
            "tolerance_px": tolerance, "deletion_auc_gradcam": float(np.mean(grad["auc"])),
            "deletion_auc_random": float(np.mean(rand["auc"])),
            "deletion_curve_gradcam": grad["scores"].mean(0).round(4).tolist(),
            "deletion_curve_random": rand["scores"].mean(0).round(4).tolist(),
            **{f"pointing_game_tol{t:g}px": pointing_game(heats, masks, tolerance=t)["score"]
               for t in also_tolerances}}
