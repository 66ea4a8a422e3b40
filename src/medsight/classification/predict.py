"""Apply a model directory to images: probabilities, stored-threshold decisions and Grad-CAM evidence per image.

Per image and label the heatmap is written twice: a PNG overlay for people and the raw map for programs, on the
image's own voxel grid (2D: ``.npy`` indexed like the image; 3D: a NIfTI volume with the image's geometry, so it
overlays in any viewer).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from medsight.classification.dataset import spatial_array
from medsight.classification.model_io import ClassifierBundle, load_classifier
from medsight.errors import ConfigError, InputNotFoundError, MedsightError
from medsight.explain.gradcam import gradcam_maps, to_image_grid
from medsight.explain.overlays import save_overlay
from medsight.files import atomic_dir, atomic_write_text, atomic_write_with, read_csv, sweep_stale
from medsight.image import Image
from medsight.io import RASTER_SUFFIXES, read_image

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".dcm", *RASTER_SUFFIXES)


def expand_inputs(inputs: Sequence[str | Path], spatial_dims: int = 2) -> list[Path]:
    """Files as given; a CSV -> its ``image`` column (relative to the CSV); a folder -> its image files, or
    itself when the model is 3D and the folder holds a DICOM series."""
    out: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise InputNotFoundError("input not found; check the path", p)
        if p.is_file() and p.suffix.lower() == ".csv":
            table = read_csv(p, "input CSV", dtype=str, keep_default_na=False)
            if "image" not in table.columns:
                raise MedsightError("input CSV has no image column", p)
            out.extend(q if q.is_absolute() else (p.parent / q) for q in map(Path, table["image"]))
        elif p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES))
            if spatial_dims == 3 and files and all(f.name.lower().endswith(".dcm") for f in files):
                out.append(p)
            else:
                out.extend(files)
        else:
            out.append(p)
    if not out:
        raise InputNotFoundError("no images found in the inputs", ", ".join(map(str, inputs)))
    return out


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz", ".nii", *RASTER_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def require_thresholds(bundle: ClassifierBundle) -> None:
    """Refuse a thresholded (sigmoid) model that stores no threshold for a label: it cannot decide that label,
    and a silent 0.5 would be an operating point nobody chose."""
    if bundle.config.get("activation") == "softmax":
        return  # argmax decisions
    missing = [name for name in bundle.labels if name not in bundle.thresholds]
    if missing:
        where = bundle.package.label if bundle.package is not None else str(bundle.model_dir)
        raise ConfigError(f"model {where} stores no decision threshold for label(s) {', '.join(missing)}, so it "
                          "cannot decide them; fit one with `medsight calibrate` (a new version)")


def default_heatmap_dir(output_csv: Path) -> Path:
    """``pred.csv`` -> ``pred_gradcam/`` beside it (the CSV's name without its extension, as the help says)."""
    return output_csv.with_name(output_csv.stem + "_gradcam")


def predict_images(model_dir: str | Path | ClassifierBundle, inputs: Sequence[str | Path], output_csv: str | Path,
                   heatmap_dir: str | Path | None = None, gradcam: bool = True, quiet: bool = False,
                   assessor: Any = None, evidence: bool = False) -> pd.DataFrame:
    """Classify every input image and write ``output_csv`` (one row per image); returns the table.

    ``assessor`` (the safety layer's ``SafetyAssessor``, built by the caller from the package's referral rule)
    adds the accept/refer decision per image; classification itself does not depend on the safety layer.
    """
    bundle = model_dir if isinstance(model_dir, ClassifierBundle) else load_classifier(model_dir)
    require_thresholds(bundle)
    paths = expand_inputs(inputs, bundle.config["spatial_dims"])
    output_csv = Path(output_csv)
    heat_root = Path(heatmap_dir) if heatmap_dir else default_heatmap_dir(output_csv)
    sweep_stale(output_csv)  # a killed run's half-written table
    if not (gradcam or evidence):  # no figures: the table is the only output
        table = _classify_all(bundle, paths, heat_root, heat_root, gradcam, quiet, assessor, evidence)
        atomic_write_text(output_csv, _csv(table))
        return table
    # the figures are one set: written into a staging folder renamed into place, so a kill leaves the old set or
    # the new one; the table (which names them) is written last, inside the same rename when it lives there
    together = output_csv.parent.resolve() == heat_root.resolve()
    with atomic_dir(heat_root) as staging:
        table = _classify_all(bundle, paths, staging, heat_root, gradcam, quiet, assessor, evidence)
        if together:
            atomic_write_text(staging / output_csv.name, _csv(table))
    if not together:
        atomic_write_text(output_csv, _csv(table))
    return table


def _csv(table: pd.DataFrame) -> str:
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def _classify_all(bundle: ClassifierBundle, paths: list[Path], write_root: Path, heat_root: Path, gradcam: bool,
                  quiet: bool, assessor: Any, evidence: bool) -> pd.DataFrame:
    """One row per image; figures are written under ``write_root`` and named by their place under ``heat_root``."""
    rows = []
    for i, path in enumerate(tqdm(paths, desc="predict", disable=quiet, unit="img")):
        image = read_image(path)
        heats: dict[str, np.ndarray] | None = {} if evidence else None
        row = _predict_one(bundle, image, path, write_root, f"{i:04d}_{_stem(path)}", gradcam, heats)
        if assessor is not None:
            row.update(_referral(bundle, assessor, image))
        if heats is not None:
            from medsight.explain.predictions import write_classification_evidence

            row.update(write_classification_evidence(image, heats, row, bundle.config["activation"], _calibrated(bundle),
                                                     write_root, f"{i:04d}_{_stem(path)}"))
        if write_root != heat_root:
            staged = str(write_root)
            row = {k: (str(heat_root) + v[len(staged):] if isinstance(v, str) and v.startswith(staged) else v)
                   for k, v in row.items()}
        rows.append(row)
    return pd.DataFrame(rows)


def _referral(bundle: ClassifierBundle, assessor, image: Image) -> dict[str, Any]:  # noqa: ANN001
    """``decision`` (accept / refer) and its reasons, from the raw logits and penultimate features."""
    with torch.no_grad():
        z, f = bundle.logits_and_features(bundle.preprocess(image)[None])
    a = assessor.assess(image, z.double().numpy()[0], f.double().numpy()[0])
    return {"referral": a["decision"], "referral_reasons": "; ".join(a["reasons"])}


def _predict_one(bundle: ClassifierBundle, image: Image, path: Path, heat_root: Path, stem: str,
                 gradcam: bool, heats: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    x = bundle.preprocess(image)[None]
    prob = bundle.probabilities(bundle.predict_logits(x))[0]
    labels = bundle.labels
    row: dict[str, Any] = {"image": str(path)}
    if bundle.config["activation"] == "softmax":
        for name, p in zip(labels, prob):
            row[f"p_{name}"] = round(float(p), 6)
        predicted = int(np.argmax(prob))
        row["predicted_class"] = labels[predicted]
        targets = [(predicted, f"class{labels[predicted]}")]
    else:
        thresholds = bundle.thresholds
        for name, p in zip(labels, prob):
            row[f"p_{name}"] = round(float(p), 6)
            row[f"threshold_{name}"] = thresholds[name]
            row[f"decision_{name}"] = int(p >= thresholds[name])
        targets = list(enumerate(labels))
    for index, name in targets if gradcam or heats is not None else []:
        cam = gradcam_maps(bundle.model, x, bundle.config["cam_layer"], class_index=index)[0]
        heat = to_image_grid(cam, spatial_array(image).shape)
        if heats is not None:
            heats[name] = heat
        if gradcam:
            png, arr = _save_heatmap(image, heat, heat_root / f"{stem}_{name}")
            row[f"gradcam_png_{name}"], row[f"gradcam_array_{name}"] = str(png), str(arr)
    return row


def _save_heatmap(image: Image, heat: np.ndarray, base: Path) -> tuple[Path, Path]:
    grey = spatial_array(image)
    base.parent.mkdir(parents=True, exist_ok=True)
    if grey.ndim == 2:
        arr = base.with_suffix(".npy")
        atomic_write_with(arr, lambda tmp: np.save(tmp, heat.astype(np.float32)), suffix=".npy")
        png = save_overlay(base.with_suffix(".png"), grey, heat, image.geometry)
        return png, arr
    from medsight.io.nifti import write_nifti

    arr = Path(str(base) + ".nii.gz")
    write_nifti(Image(heat.astype(np.float32), image.geometry, image.provenance.with_step("gradcam")), arr,
                sidecar=False)
    k = int(np.unravel_index(int(np.argmax(heat)), heat.shape)[2])  # the axial slice through the maximum
    png = save_overlay(base.with_suffix(".png"), grey[:, :, k], heat[:, :, k], image.geometry)
    return png, arr


def _calibrated(bundle: ClassifierBundle) -> bool:
    """Whether ``predict_logits`` applied a calibration (the caption says so)."""
    return bundle.model_dir is not None and (Path(bundle.model_dir) / "calibration.json").is_file()
