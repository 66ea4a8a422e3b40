"""From prediction outputs (a predict-cls table row, a segmentation label map) to evidence figures on disk.

The caption's numbers are read from the very row written to the prediction CSV, so the figure and the table
cannot disagree. Kept apart from evidence.py, which draws and knows nothing of table columns or file names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsight.explain.evidence import Finding, classification_figure, montage_figure, segmentation_figure, write_figure
from medsight.image import Image

FINDING_NAMES = ("lesion", "tumour", "tumor", "nodule")


def classification_finding(row: dict[str, Any], label: str, activation: str, calibrated: bool) -> Finding:
    """The Finding for one label of a predict-cls row (sigmoid: threshold and 0/1 decision; softmax: the class)."""
    referral = row.get("referral") or None
    reason = str(row.get("referral_reasons") or "")
    if activation == "softmax":
        return Finding(label, float(row[f"p_{label}"]), calibrated, None, f"class {label}", referral, reason)
    decision = "positive" if int(row[f"decision_{label}"]) else "negative"
    return Finding(label, float(row[f"p_{label}"]), calibrated, float(row[f"threshold_{label}"]), decision, referral,
                   reason)


def write_classification_evidence(image: Image, heats: dict[str, np.ndarray], row: dict[str, Any], activation: str,
                                  calibrated: bool, out_dir: Path, stem: str) -> dict[str, str]:
    """One figure per explained output (``{stem}_{label}_evidence.png``; a volume also gets an axial montage);
    returns the new table columns ``evidence_png_{label}``."""
    out: dict[str, str] = {}
    title = Path(str(row.get("image", stem))).name
    for key, heat in heats.items():
        label = str(row["predicted_class"]) if activation == "softmax" else key
        finding = classification_finding(row, label, activation, calibrated)
        path = write_figure(Path(out_dir) / f"{stem}_{key}_evidence.png",
                            classification_figure(image, heat, finding, title=title))
        out[f"evidence_png_{key}"] = str(path)
        if min(image.shape) > 1 and image.geometry.ndim == 3:
            write_figure(Path(out_dir) / f"{stem}_{key}_montage.png", montage_figure(image, heat, None, finding,
                                                                                     title=title))
    return out


def finding_label(names: dict[int, str]) -> tuple[int, str]:
    """The class a segmentation figure is about: a lesion-like name when there is one, else the last class."""
    fg = {k: v for k, v in names.items() if k != 0}
    for k, v in sorted(fg.items()):
        if v.lower() in FINDING_NAMES:
            return k, v
    k = max(fg)
    return k, fg[k]


def write_segmentation_evidence(image: Image, labels: np.ndarray, probabilities: np.ndarray | None,
                                names: dict[int, str], path: str | Path, lesions: Any = None,
                                reference: np.ndarray | None = None, montage: bool = False) -> Path:
    """The evidence figure of one segmented case: the finding class's probability as heat, its components
    outlined with the ids of ``lesions`` (a lesions.csv table; measured here when None)."""
    k, name = finding_label(names)
    mask = np.asarray(labels) == k
    if lesions is not None and hasattr(lesions, "columns") and "label" in lesions.columns:
        lesions = lesions[lesions["label"].astype(str) == name]  # a table may list several lesion classes
    prob = None if probabilities is None else np.asarray(probabilities)[k]
    p_max = float(prob[mask].max()) if prob is not None and mask.any() else (
        float(prob.max()) if prob is not None else None)
    finding = Finding(name, p_max, False, None, "present" if mask.any() else "absent",
                      heat_meaning=f"probability of {name} per voxel (not calibrated)",
                      outline_meaning=f"predicted {name}, numbered as in the lesion list",
                      basis=f"Probability: the highest {name} probability inside the predicted region (the whole "
                            f"image when none); decision: {name} present when the label map has any {name} voxel.")
    title = Path(str(path)).name.removesuffix("_evidence.png")
    path = write_figure(path, segmentation_figure(image, mask, finding, probability=prob, lesions=lesions,
                                                  reference=reference, title=title))
    if montage and mask.any() and min(image.shape) > 1:
        write_figure(Path(str(path).replace("_evidence.png", "_montage.png")),
                     montage_figure(image, prob, mask, finding, title=title))
    return path


def evidence_path(label_map: str | Path) -> Path:
    """``case.nii.gz`` -> ``case_evidence.png`` beside it."""
    p = Path(label_map)
    stem = p.name[: -len(".nii.gz")] if p.name.endswith(".nii.gz") else p.stem
    return p.with_name(stem + "_evidence.png")


def lesion_table_beside(written: dict[str, Path]) -> Any:
    """The lesion table the prediction wrote (``written["lesions"]``, a CSV), or None to measure here."""
    path = written.get("lesions") if isinstance(written, dict) else None
    if path is None or not Path(path).is_file():
        return None
    import pandas as pd

    return pd.read_csv(path)
