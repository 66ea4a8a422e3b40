"""``medsight register``: check two studies, align MOVING onto FIXED, and write what a reader needs to trust it.

Outputs (one folder, written as a unit): ``moved.nii.gz`` (MOVING on FIXED's grid, linear interpolation),
``moved_labels.nii.gz`` (nearest neighbour, when labels are given), ``transform.h5`` (the whole ITK composite,
fixed world -> moving world, LPS mm), ``linear.tfm`` (its rigid/affine part alone, ITK text), ``quality.json``.

Quality record: Mattes mutual information over every fixed voxel before (identity) and after; the Jacobian
determinant of the transform over FIXED's foreground (Otsu threshold) with its min, max and folding % (share of
voxels with determinant <= 0, where the mapping folds space onto itself); label Dice before/after when both label
maps are given. Refused (MedsightError, exit 2): not 3D single-channel volumes, fields of view that do not overlap,
two different DICOM PatientIDs unless ``force``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import MedsightError
from medsight.files import atomic_dir, sha256_bytes
from medsight.image import Image
from medsight.metrics.segmentation import dice
from medsight.registration import engine

MIN_OVERLAP = 0.05  # share of the smaller field of view the two must share (world bounding boxes)


class RegistrationError(MedsightError):
    """Two images that cannot (or must not) be registered to each other."""


@dataclass
class Registered:
    """A registration and the images it produced on the fixed grid."""

    result: engine.Result
    moved: Image
    moved_labels: Image | None
    quality: dict[str, Any]


def check_volume(image: Image, role: str, path: str | Path | None = None) -> None:
    """A 3D, single-channel volume with at least 4 voxels along every axis."""
    if image.is_multichannel:
        raise RegistrationError(f"the {role} image has colour channels; register single-channel volumes", path)
    if image.geometry.ndim != 3 or min(image.shape) < 4:
        raise RegistrationError(f"the {role} image is 2D (shape {image.shape}); registration needs two 3D volumes, "
                                "not a 2D image and a 3D volume", path)


def _box(image: Image) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in image.shape], indexing="ij")).reshape(3, -1).T
    world = image.geometry.index_to_world(corners.astype(float))
    return world.min(0), world.max(0)


def fov_overlap(fixed: Image, moving: Image) -> float:
    """Shared volume of the two world bounding boxes over the smaller box's volume (0 = disjoint)."""
    (a0, a1), (b0, b1) = _box(fixed), _box(moving)
    inter = np.prod(np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None))
    smaller = min(np.prod(a1 - a0), np.prod(b1 - b0))
    return float(inter / smaller) if smaller > 0 else 0.0


def patient_id(path: str | Path) -> str | None:
    """PatientID of a DICOM file or series folder (first readable header), None for other formats."""
    import pydicom

    p = Path(path)
    if p.name.lower().endswith((".nii", ".nii.gz")):
        return None
    files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not DICOM: try the next file
            continue
        return str(getattr(ds, "PatientID", "") or "")
    return None


def check_pair(fixed: Image, moving: Image, fixed_path: str | Path | None = None,
               moving_path: str | Path | None = None, force: bool = False) -> dict[str, Any]:
    """Refuse pairs that cannot be registered; returns what was checked (for quality.json, no identifiers)."""
    check_volume(fixed, "fixed", fixed_path)
    check_volume(moving, "moving", moving_path)
    overlap = fov_overlap(fixed, moving)
    if overlap < MIN_OVERLAP:
        raise RegistrationError(f"the fields of view do not overlap ({overlap:.0%} of the smaller one is shared); "
                                "these images are not of the same body region in one patient frame", moving_path)
    ids = [patient_id(p) if p is not None else None for p in (fixed_path, moving_path)]
    if None in ids:
        patient = "not checked (an input is not DICOM)"
    elif ids[0] == ids[1]:
        patient = "same PatientID"
    elif force:
        patient = "different PatientIDs, registered anyway (--force)"
    else:
        raise RegistrationError("the two studies belong to different patients (PatientID differs); registering them "
                                "is almost always a mistake: pass --force if it is meant (e.g. atlas to patient)")
    return {"fov_overlap": round(overlap, 4), "patient_check": patient,
            "patient_ids_sha256": [sha256_bytes(i.encode())[:16] if i is not None else None for i in ids]}


def _foreground(image: Image) -> np.ndarray:
    import SimpleITK as sitk

    mask = sitk.GetArrayFromImage(sitk.OtsuThreshold(engine.to_sitk(image), 0, 1)).transpose().astype(bool)
    return mask if mask.any() else np.ones(image.shape, bool)


def label_dice(reference: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Dice per label value present in ``reference`` (0 = background left out)."""
    values = [int(v) for v in np.unique(reference) if v != 0]
    return {str(v): round(float(dice(labels == v, reference == v)), 4) for v in values}


def align(fixed: Image, moving: Image, mode: str = "deformable", moving_labels: Image | None = None,
          fixed_labels: Image | None = None, settings: engine.Settings | None = None) -> Registered:
    """Register, resample, and measure the result (the library call behind the command)."""
    import SimpleITK as sitk

    if mode not in engine.MODES:
        raise RegistrationError(f"unknown mode {mode!r}; choose one of {', '.join(engine.MODES)}")
    for lab, img, role in ((moving_labels, moving, "moving"), (fixed_labels, fixed, "fixed")):
        if lab is not None and (lab.shape != img.shape or not np.allclose(lab.geometry.affine, img.geometry.affine,
                                                                              atol=1e-3)):
            raise RegistrationError(f"the {role} labels are not on the {role} image's grid (shape or geometry "
                                    "differ); give the label map that was segmented from that image")
    result = engine.register(fixed, moving, mode, settings)
    grid = (fixed.geometry, fixed.shape)
    moved = engine.resample(moving, *grid, result.transform)
    moved_labels = engine.resample(moving_labels, *grid, result.transform, labels=True) if moving_labels else None
    det = engine.jacobian(result.transform, *grid)[_foreground(fixed)]
    quality: dict[str, Any] = {
        "mode": mode, "engine": f"SimpleITK {sitk.Version.VersionString()}", "seconds": result.seconds,
        "stages": result.stages,
        "metric": {"name": "Mattes mutual information (negative; lower is better), every fixed voxel",
                   "before": round(engine.metric_value(fixed, moving, sitk.Transform(3, sitk.sitkIdentity)), 5),
                   "after": round(engine.metric_value(fixed, moving, result.transform), 5)},
        "jacobian": {"region": "fixed foreground (Otsu)", "n_voxels": int(det.size),
                     "min": round(float(det.min()), 4), "max": round(float(det.max()), 4),
                     "folding_percent": round(100.0 * float((det <= 0).mean()), 4)},
    }
    if moved_labels is not None and fixed_labels is not None:
        before = engine.resample(moving_labels, *grid, sitk.Transform(3, sitk.sitkIdentity), labels=True)
        quality["label_dice"] = {"before": label_dice(fixed_labels.array, before.array),
                                 "after": label_dice(fixed_labels.array, moved_labels.array)}
        for k in ("before", "after"):
            d = quality["label_dice"][k]
            quality["label_dice"][f"mean_{k}"] = round(float(np.mean(list(d.values()))), 4) if d else None
    return Registered(result, moved, moved_labels, quality)


def write_outputs(reg: Registered, out: str | Path, checks: dict[str, Any] | None = None) -> Path:
    """Write the folder described in the module doc, as one unit."""
    with atomic_dir(out, replaces=OUTPUTS) as tmp:
        write_files(reg, tmp, checks)
    return Path(out)


OUTPUTS = ("moved.nii.gz", "moved.provenance.json", "moved_labels.nii.gz", "moved_labels.provenance.json",
           "transform.h5", "linear.tfm", "quality.json")


def write_files(reg: Registered, folder: Path, checks: dict[str, Any] | None = None) -> None:
    """The registration's files into an existing (temporary) folder."""
    import SimpleITK as sitk

    from medsight.io.nifti import write_nifti

    quality = {**reg.quality, "checks": checks or {}, "transform_direction":
               "transform.h5 maps FIXED world points (LPS mm) to MOVING world points (ITK resampling convention)"}
    folder.mkdir(parents=True, exist_ok=True)
    write_nifti(reg.moved, folder / "moved.nii.gz", dtype=np.float32)
    if reg.moved_labels is not None:
        write_nifti(reg.moved_labels, folder / "moved_labels.nii.gz")
    sitk.WriteTransform(reg.result.transform, str(folder / "transform.h5"))
    sitk.WriteTransform(reg.result.linear, str(folder / "linear.tfm"))
    (folder / "quality.json").write_text(json.dumps(quality, indent=2, sort_keys=True))
