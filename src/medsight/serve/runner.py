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
    input: dict[str, Any] | None = None  # the InputSpec the package declares (serve.routing)


def load_series(folder: Path, series_uid: str | None = None) -> tuple[Any, list[Any]]:
    """One image series of the study (the routed one) as an Image, and its source datasets (for SEG/SR)."""
    import pydicom

    from medsight.io.dicom import read_dicom

    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise RunError("the study holds no files")
    image = read_dicom(folder, series_uid=series_uid)
    uid = image.provenance.series_uid
    source = []
    for p in files:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if str(getattr(ds, "SeriesInstanceUID", "")) == uid:
            source.append(ds)
    return image, source


def _lesion_segments(mask: np.ndarray, rows: list[dict[str, Any]], name: str) -> tuple[np.ndarray, list[Any]]:
    """One SEG segment per measured lesion (its own number, matching its SR tracking identifier).

    The lesion table numbers connected components in scan order, as ``components`` does; each component's voxel
    count is checked against its row, so a mismatch can never attach a measurement to the wrong outline.
    """
    from medsight.io.dicom_out import Segment
    from medsight.segmentation.lesions import components

    comp, n = components(mask)
    sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
    if n != len(rows) or any(int(sizes[i]) != int(r["n_voxels"]) for i, r in enumerate(rows)):
        raise RunError(f"the lesion table ({len(rows)} lesions) does not match the label map ({n} components)")
    if n == 0:  # an empty segment still says what was looked for
        return mask.astype(np.uint16), [Segment(1, name)]
    return comp.astype(np.uint16), [Segment(i + 1, f"{name} {i + 1}") for i in range(n)]


def _write_thumbnail(path: Path, image: Any, heat: np.ndarray, mask: np.ndarray) -> None:
    """The evidence panel (explain.evidence: heat over the image, the finding outlined) as a small PNG."""
    import base64

    from medsight.explain.evidence import evidence_thumbnail

    uri = evidence_thumbnail(image, heat=heat, finding_mask=mask if np.any(mask) else None, long_side=256,
                             outline_peak=False)  # outlines only where the model reports a finding
    path.write_bytes(base64.b64decode(uri.split(",", 1)[1]))


def run_segmentation(model: ModelRef, folder: Path, out: Path, uid_seed: str, tta: bool = True,
                     series_uid: str | None = None) -> dict[str, Any]:
    from medsight.image import Image
    from medsight.io.dicom_out import Algorithm, Segment, build_seg, build_sr
    from medsight.segmentation.lesions import measure_lesions
    from medsight.segmentation.predict import Predictor

    image, source = load_series(folder, series_uid)
    predictor = Predictor(model.path, mirror=tta)
    pred = predictor.predict(image)
    labels = np.asarray(pred.labels.array)
    names = {int(v): k for k, v in predictor.plan.labels.items()}
    lesion_labels = {int(k): v for k, v in (predictor.plan.postprocess.get("lesion_labels") or {}).items()}
    lesion_label = min(lesion_labels) if lesion_labels else max(names)  # plans without lesion labels: last class
    table = pred.lesions
    if table is None:  # the plan names no lesion class: measure the last one with the same rules
        _, table = measure_lesions(labels, pred.probabilities, image.geometry, {lesion_label: names[lesion_label]},
                                   policy=predictor.lesion_policy)
    rows = [r for r in table.rows if r["label"] == names.get(lesion_label, r["label"])]
    lesion_map, segments = _lesion_segments(labels == lesion_label, rows, str(names.get(lesion_label, "lesion")))
    rows = [dict(r, segment_number=i + 1) for i, r in enumerate(rows)]  # SEG segment i+1 is lesion i+1
    referred = [r for r in rows if r["decision"] == "refer"]
    kinds = sorted({part.split(" (")[0].strip() for r in referred for part in str(r["reasons"]).split(";") if part.strip()})
    reason = f"{len(referred)} of {len(rows)} lesion(s): {', '.join(kinds)}" if referred else ""  # per lesion: "lesions"
    algo = Algorithm(model.name, model.package_id[:64], parameters={"version": model.version})
    seg_img = Image(lesion_map, image.geometry, image.provenance)
    seg = build_seg(source, seg_img, segments, algo, uid_seed)
    sr = build_sr(source, algo, uid_seed, findings=rows, referred=bool(referred), referral_reason=reason, seg=seg)
    seg.save_as(out / "seg.dcm", enforce_file_format=True)
    sr.save_as(out / "sr.dcm", enforce_file_format=True)
    _write_thumbnail(out / "thumbnail.png", image, pred.probabilities[lesion_label], labels == lesion_label)
    largest = max(rows, key=lambda r: r["volume_ml"]) if rows else None
    return {"task": "segmentation", "positive": bool(rows), "referred": bool(referred), "referral_reason": reason,
            "probability": max((r["mean_probability"] for r in rows), default=0.0),
            "finding": f"{len(rows)} lesion(s)" if rows else "no lesion",
            "size": f"{largest['volume_ml']:.2f} ml, {largest['longest_diameter_mm']:.1f} mm" if largest else "",
            "lesions": rows, "seg_sop_uid": str(seg.SOPInstanceUID),
            "seg_series_uid": str(seg.SeriesInstanceUID), "sr_sop_uid": str(sr.SOPInstanceUID),
            "files": ["seg.dcm", "sr.dcm", "thumbnail.png"]}


def run_classification(model: ModelRef, folder: Path, out: Path, uid_seed: str, tta: bool = True,
                       series_uid: str | None = None) -> dict[str, Any]:
    import torch

    from medsight.classification.model_io import load_classifier
    from medsight.io.dicom_out import Algorithm, build_sr

    from medsight.package import load_package

    image, source = load_series(folder, series_uid)
    pkg = load_package(model.path)
    bundle = load_classifier(pkg)
    x = bundle.preprocess(image)[None]
    prob = bundle.probabilities(bundle.predict_logits(x))[0]
    label = bundle.labels[-1]
    p = float(prob[-1])
    if label not in bundle.thresholds:  # 0.5 is no operating point anyone chose: refuse rather than guess
        raise RunError(f"package {model.name}@{model.version} has no decision threshold for '{label}'; choose one "
                       "on validation data (the package's thresholds) before serving it")
    threshold = float(bundle.thresholds[label])
    referred, reason = False, ""
    if pkg.has("referral.json"):  # the package's calibrated referral rule (safety layer)
        from medsight.safety.assess import SafetyAssessor

        assessor = SafetyAssessor.from_model_dir(pkg, bundle.config.get("activation"))
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


def run_job(model: ModelRef, folder: Path, result_dir: Path, uid_seed: str, tta: bool = True,
            series_uid: str | None = None) -> dict[str, Any]:
    """Run and write the result set atomically at ``result_dir``; returns the worklist summary."""
    result_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in result_dir.parent.glob(f".{result_dir.name}.*"):  # a killed attempt's half-written folder: only
        shutil.rmtree(stale, ignore_errors=True)  # the worker holding the claim gets here, so none is in use
    tmp = Path(tempfile.mkdtemp(prefix=f".{result_dir.name}.", dir=result_dir.parent))
    try:
        fn = run_segmentation if model.task == "segmentation" else run_classification
        summary = fn(model, folder, tmp, uid_seed, tta, series_uid)
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
