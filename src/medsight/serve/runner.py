"""Run one verified model package on one study folder and write the result set: result.json, a DICOM SEG and a
Comprehensive 3D SR (highdicom), and a heatmap thumbnail.

The result folder is written into a temporary sibling and renamed as one, so a worker killed half-way leaves
either nothing or a complete result; a retry overwrites it with the same bytes' meaning and the same SOP UIDs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import MedsightError
from medsight.files import _fsync_dir

# a lesion whose mean predictive entropy (nats) is above this is referred to a human reader (stated in docs/service.md)
REFER_ENTROPY = 0.4


class RunError(MedsightError):
    """The study could not be processed by the model (wrong modality, no image series, model refused it)."""


@dataclass(frozen=True)
class ModelRef:
    """A verified model package the service runs: where it is, what task, and its identity."""

    name: str
    version: str
    package_id: str
    task: str  # segmentation | classification
    path: Path


def load_series(folder: Path) -> tuple[Any, list[Any]]:
    """The study's image series as an Image, and its source datasets (for references in SEG/SR)."""
    import pydicom

    from medsight.io.dicom import read_dicom

    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise RunError("the study holds no files")
    image = read_dicom(folder)
    uid = image.provenance.series_uid
    source = []
    for p in files:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if str(getattr(ds, "SeriesInstanceUID", "")) == uid:
            source.append(ds)
    return image, source


def _lesion_rows(labels: np.ndarray, probs: np.ndarray, spacing: tuple[float, ...], label: int) -> list[dict]:
    """Connected components of ``label`` with volume (ml), longest extent (mm) and mean probability/entropy."""
    from scipy import ndimage

    comp, n = ndimage.label(labels == label)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    eps = 1e-12
    ent = -(probs * np.log(probs + eps)).sum(axis=0)
    rows = []
    for i in range(1, n + 1):
        idx = np.argwhere(comp == i)
        mm = idx * np.asarray(spacing)
        # longest diameter over the component's corner points of its bounding voxels (exact for convex blobs'
        # extremes along the sampled directions is not needed: brute force over at most 2000 voxels)
        pts = mm if len(mm) <= 2000 else mm[np.linspace(0, len(mm) - 1, 2000).astype(int)]
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).max() if len(pts) > 1 else 0.0
        sel = comp == i
        rows.append({"lesion_id": i, "segment_number": 1, "voxels": int(len(idx)),
                     "volume_ml": round(len(idx) * voxel_ml, 4), "longest_diameter_mm": round(float(d), 2),
                     "mean_probability": round(float(probs[label][sel].mean()), 4),
                     "mean_entropy": round(float(ent[sel].mean()), 4)})
    rows.sort(key=lambda r: -r["volume_ml"])
    return rows


def _thumbnail(path: Path, image: np.ndarray, heat: np.ndarray) -> None:
    """A small PNG of the slice with the most heat, the heat (probability) over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(np.argmax(heat.reshape(-1, heat.shape[-1]).sum(0))) if heat.ndim == 3 else 0
    img = image[:, :, k].T if image.ndim == 3 else image.T
    h = heat[:, :, k].T if heat.ndim == 3 else heat.T
    lo, hi = np.percentile(img, [1, 99])
    fig = plt.figure(figsize=(2.56, 2.56), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
    ax.imshow(np.ma.masked_less(h, 0.1), cmap="inferno", vmin=0, vmax=1, alpha=0.6)
    ax.axis("off")
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def run_segmentation(model: ModelRef, folder: Path, out: Path, uid_seed: str, tta: bool = True) -> dict[str, Any]:
    from medsight.image import Image
    from medsight.io.dicom_out import Algorithm, Segment, build_seg, build_sr
    from medsight.segmentation.predict import Predictor

    image, source = load_series(folder)
    pred = Predictor(model.path, mirror=tta).predict(image)
    labels = np.asarray(pred.labels.array)
    names = pred.info.get("labels") or {}
    lesion_label = int(labels.max()) if labels.max() > 0 else int(pred.probabilities.shape[0] - 1)
    rows = _lesion_rows(labels, pred.probabilities, image.spacing, lesion_label)
    referred = [r for r in rows if r["mean_entropy"] > REFER_ENTROPY]
    reason = (f"{len(referred)} finding(s) with mean entropy > {REFER_ENTROPY} nats" if referred else "")
    algo = Algorithm(model.name, model.package_id[:64], parameters={"version": model.version})
    seg_img = Image((labels == lesion_label).astype(np.uint8), image.geometry, image.provenance)
    seg = build_seg(source, seg_img, [Segment(1, str(names.get(lesion_label, "lesion")))], algo, uid_seed)
    sr = build_sr(source, algo, uid_seed, findings=rows, referred=bool(referred), referral_reason=reason, seg=seg)
    seg.save_as(out / "seg.dcm", enforce_file_format=True)
    sr.save_as(out / "sr.dcm", enforce_file_format=True)
    _thumbnail(out / "thumbnail.png", np.asarray(image.array, dtype=np.float32), pred.probabilities[lesion_label])
    largest = rows[0] if rows else None
    return {"task": "segmentation", "positive": bool(rows), "referred": bool(referred), "referral_reason": reason,
            "probability": max((r["mean_probability"] for r in rows), default=0.0),
            "finding": f"{len(rows)} lesion(s)" if rows else "no lesion",
            "size": f"{largest['volume_ml']} ml, {largest['longest_diameter_mm']} mm" if largest else "",
            "lesions": rows, "seg_sop_uid": str(seg.SOPInstanceUID), "sr_sop_uid": str(sr.SOPInstanceUID),
            "files": ["seg.dcm", "sr.dcm", "thumbnail.png"]}


def run_classification(model: ModelRef, folder: Path, out: Path, uid_seed: str, tta: bool = True) -> dict[str, Any]:
    import torch

    from medsight.classification.model_io import load_classifier
    from medsight.io.dicom_out import Algorithm, build_sr

    image, source = load_series(folder)
    bundle = load_classifier(model.path)
    x = bundle.preprocess(image)[None]
    prob = bundle.probabilities(bundle.predict_logits(x))[0]
    label = bundle.labels[-1]
    p = float(prob[-1])
    threshold = float(bundle.thresholds.get(label, 0.5))
    from medsight.safety.assess import SafetyAssessor

    assessor = SafetyAssessor.from_model_dir(model.path, bundle.config.get("activation"))
    with torch.no_grad():
        z, f = bundle.logits_and_features(x)
    a = assessor.assess(image, z.double().numpy()[0], f.double().numpy()[0])
    referred, reason = a["decision"] == "refer", "; ".join(a["reasons"])
    algo = Algorithm(model.name, model.package_id[:64], parameters={"version": model.version})
    sr = build_sr(source, algo, uid_seed, probability=p, referred=referred, referral_reason=reason)
    sr.save_as(out / "sr.dcm", enforce_file_format=True)
    return {"task": "classification", "positive": p >= threshold, "referred": referred, "referral_reason": reason,
            "probability": round(p, 6), "threshold": threshold, "finding": label if p >= threshold else f"no {label}",
            "size": "", "sr_sop_uid": str(sr.SOPInstanceUID), "files": ["sr.dcm"]}


def run_job(model: ModelRef, folder: Path, result_dir: Path, uid_seed: str, tta: bool = True) -> dict[str, Any]:
    """Run and write the result set atomically at ``result_dir``; returns the worklist summary."""
    result_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{result_dir.name}.", dir=result_dir.parent))
    try:
        fn = run_segmentation if model.task == "segmentation" else run_classification
        summary = fn(model, folder, tmp, uid_seed, tta)
        summary.update({"model": model.name, "model_version": model.version, "package_id": model.package_id})
        (tmp / "result.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                import os

                os.fsync(fh.fileno())
        if result_dir.exists():  # an earlier attempt finished writing but died before marking the job done
            shutil.rmtree(result_dir)
        tmp.rename(result_dir)
        _fsync_dir(result_dir.parent)
        return summary
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
