"""From model outputs on disk (per-case metric tables, predictions, manifest) to a ValidationResults document.

Kept apart from validate.py (pure statistics) because this part touches files: manifests, NIfTI predictions,
model folders, package versions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsight.errors import DatasetError, InputNotFoundError, MedsightError
from medsight.files import sha256_file
from medsight.metrics.tables import reference_present
from medsight.package.manifest import library_versions
from medsight.report.results import ValidationResults, clean
from medsight.report.validate import classification_cohort, classification_section, segmentation_section

MANIFEST_COLUMNS = ("site", "scanner", "sex", "age")
PACKAGES = ("medsight", "torch", "monai", "numpy", "scikit-learn", "scipy", "nibabel", "SimpleITK")
MAX_HASHED_BYTES = 512 * 2**20


def model_provenance(model_dir: Path, name: str, task: str) -> dict[str, Any]:
    """Name, task, folder, sha256 of each model file (weights, plan, config), versions."""
    model_dir = Path(model_dir)
    hashes = {}
    if model_dir.is_dir():
        for f in sorted(model_dir.rglob("*")):
            if f.is_file() and f.suffix in (".json", ".pt", ".pth", ".ckpt") and f.stat().st_size < MAX_HASHED_BYTES:
                hashes[str(f.relative_to(model_dir))] = sha256_file(f)
    return {"name": name, "task": task, "dir": str(model_dir), "hashes": hashes,
            "versions": library_versions(PACKAGES)}


def read_manifest(dataset: Path) -> pd.DataFrame:
    """The dataset's manifest.csv (case_id + subgroup attributes), one row per case."""
    p = Path(dataset) / "manifest.csv"
    if not p.is_file():
        raise InputNotFoundError(f"{p} not found: the dataset needs a manifest.csv with case_id and site columns", p)
    from medsight.files import read_csv

    m = read_csv(p, "dataset manifest", dtype={"case_id": str})
    if "case_id" not in m.columns:
        raise DatasetError(f"{p} has no case_id column", p)
    return m


def data_provenance(dataset: Path, manifest: pd.DataFrame, internal: str, external: Sequence[str]) -> dict[str, Any]:
    return {"dataset": str(dataset), "manifest_sha256": sha256_file(Path(dataset) / "manifest.csv"),
            "n_cases": int(len(manifest)), "internal": internal, "external_sites": list(external),
            "sites": sorted(str(s) for s in manifest.get("site", pd.Series(dtype=str)).dropna().unique())}


def _thumbnail(dataset: Path, pred_dir: Path | None, case_id: str, label: int | None) -> tuple[str | None, str]:
    """Axial slice through the reference structure with outlines; (None, why) when files are missing."""
    from medsight.explain.evidence import evidence_thumbnail
    from medsight.io.nifti import read_nifti

    img_p = Path(dataset) / "imagesTr" / f"{case_id}_0000.nii.gz"
    ref_p = Path(dataset) / "labelsTr" / f"{case_id}.nii.gz"
    pred_p = Path(pred_dir) / f"{case_id}.nii.gz" if pred_dir else None
    if not img_p.is_file():
        return None, f"image {img_p.name} not found"
    image = read_nifti(img_p)
    ref = read_nifti(ref_p).array if ref_p.is_file() else None
    pred = read_nifti(pred_p).array if pred_p is not None and pred_p.is_file() else None
    r = None if ref is None else (ref == label if label is not None else ref > 0)
    p = None if pred is None else (pred == label if label is not None else pred > 0)
    # the evidence figure's panel (explain/evidence.py), through the reference structure
    return evidence_thumbnail(image, finding_mask=p, reference=r, through_reference=True), ""


def _classifier_or_none(model_dir: Path | None):  # noqa: ANN202 - ClassifierBundle | None
    if model_dir is None or not (Path(model_dir) / "config.json").is_file():
        return None
    from medsight.classification import load_classifier

    try:
        return load_classifier(model_dir)
    except MedsightError:  # a report without heatmaps beats no report; the note says why there are none
        return None


def _cls_thumbnail(row: pd.Series, bundle, base: Path | None) -> tuple[str | None, str]:  # noqa: ANN001
    """The case's image with the classifier's Grad-CAM map (first output) and the finding's outline."""
    from medsight.classification.dataset import spatial_array
    from medsight.explain.evidence import evidence_thumbnail
    from medsight.io import read_image

    def resolve(value: object) -> Path | None:
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)
        return path if path.is_absolute() or base is None else Path(base) / path

    img_p = resolve(row.get("image"))
    if img_p is None:
        return None, "no image in the predictions table"
    if not img_p.exists():
        return None, f"image {img_p.name} not found"
    image = read_image(img_p)
    grey = spatial_array(image)
    mask_p = resolve(row.get("mask"))
    mask = spatial_array(read_image(mask_p)) > 0 if mask_p is not None and mask_p.exists() else None
    heat, note = None, "no classifier given: image only"
    if bundle is not None and bundle.config.get("cam_layer"):
        from medsight.explain.gradcam import gradcam_maps, to_image_grid

        cam = gradcam_maps(bundle.model, bundle.preprocess(image)[None], bundle.config["cam_layer"])[0]
        heat, note = to_image_grid(cam, grey.shape), (f"Grad-CAM of {bundle.labels[0]!r}; cyan outline: annotated "
                                                      "finding, red: evidence >= 0.5")
    # the evidence figure's panel (explain/evidence.py), through the annotated finding when there is one
    return evidence_thumbnail(image, heat, reference=mask, through_reference=True), note


def _with_fp_components(t: pd.DataFrame, pred_dir: Path | None) -> pd.DataFrame:
    """Add ``n_pred_components`` (false-positive findings) to reference-empty rows from the saved predictions,
    when the table lacks it and the predictions are on disk."""
    if "n_pred_components" in t.columns or pred_dir is None:
        return t
    from medsight.io.nifti import read_nifti
    from medsight.metrics.tables import false_positive_components

    t = t.copy()
    t["n_pred_components"] = np.nan
    for i in t.index[~reference_present(t)]:
        p = Path(pred_dir) / f"{t.at[i, 'case_id']}.nii.gz"
        if p.is_file():
            t.at[i, "n_pred_components"] = false_positive_components(read_nifti(p).array == int(t.at[i, "label"]))
    return t


def segmentation_results(per_case: pd.DataFrame, dataset: Path, labels: dict[int, str], model: dict[str, Any],
                         external_sites: Sequence[str], min_cases: int = 10, n_boot: int = 1000, seed: int = 0,
                         pred_dir: Path | None = None, n_worst: int = 5, title: str = "Validation report",
                         model_card: dict[str, Any] | None = None, internal: str = "internal test fold"
                         ) -> ValidationResults:
    """Results document from a long per-case/per-label metrics table (case_id, label, dice[, site]); ``internal``
    names the cohort of the non-external cases (the demo's is a test set in no fold)."""
    manifest = read_manifest(dataset)
    extra = [c for c in MANIFEST_COLUMNS if c in manifest.columns]
    t = per_case.drop(columns=[c for c in extra if c in per_case.columns]).merge(
        manifest[["case_id", *extra]], on="case_id", how="left")
    ext = set(external_sites)
    t["cohort"] = np.where(t["site"].isin(ext), "external: " + t["site"].astype(str), internal)
    kinds = {c: ("external" if c.startswith("external") else "internal") for c in t["cohort"].unique()}
    order = [internal] + sorted(c for c in kinds if c != internal)
    t["cohort"] = pd.Categorical(t["cohort"], categories=[c for c in order if c in kinds], ordered=True)
    t = _with_fp_components(t, pred_dir)
    seg = segmentation_section(t.sort_values("cohort"), labels, min_cases, n_boot=n_boot, seed=seed, kinds=kinds)
    fg = t[t["label"].isin(list(labels)) & reference_present(t)]  # worst by Dice of what the reference holds
    worst = fg.groupby("case_id", observed=True).agg(dice=("dice", "mean"), cohort=("cohort", "first"))
    worst = worst.sort_values("dice").head(n_worst)
    cases = []
    for cid, row in worst.iterrows():
        lab_rows = fg[fg.case_id == cid].sort_values("dice")
        lab = int(lab_rows["label"].iloc[0])
        thumb, note = _thumbnail(dataset, pred_dir, str(cid), lab)
        cases.append({"case_id": str(cid), "cohort": str(row["cohort"]),
                      "metric": f"mean Dice of the labels its reference holds (outlines: {labels.get(lab, lab)})",
                      "value": float(row["dice"]), "thumbnail": thumb, "note": note})
    return ValidationResults(
        title=title, created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), min_cases=min_cases,
        model=model, data=data_provenance(dataset, manifest, internal, external_sites),
        segmentation=seg, worst_cases=cases, model_card=model_card)


def operating_point(model_dir: Path | None, unit: str = "case", label: str | None = None) -> dict[str, Any] | None:
    """The model's stored operating point for ``unit``: ``scan_level.json`` for scans aggregated from slices,
    else the per-label threshold of ``thresholds.json`` or ``config.json`` (chosen on validation data), with its
    target and what it gave on validation. None when the model folder stores none."""
    if model_dir is None:
        return None
    model_dir = Path(model_dir)
    if unit == "scan" and (model_dir / "scan_level.json").is_file():
        from medsight.classification.scan_level import ScanLevel

        lv = ScanLevel.load(model_dir)
        return {"threshold": lv.threshold, "unit": "scan", "label": lv.label, "target": lv.target,
                "method": lv.method, "source": str(model_dir / "scan_level.json"),
                "temperature": lv.temperature, "bias": lv.bias, "aggregation": lv.aggregation,
                "validation": {k: lv.validation.get(k) for k in ("n", "n_pos", "sensitivity", "specificity")}}
    import json

    for name in ("thresholds.json", "config.json"):
        p = model_dir / name
        if not p.is_file():
            continue
        cfg = json.loads(p.read_text())
        ths = cfg.get("thresholds", cfg)
        info = cfg.get("threshold_selection") or {}
        if not isinstance(ths, dict) or not ths:
            continue
        lab = label if label in ths else next(iter(ths))
        th = ths[lab]
        sel = {**(info.get(lab) or {}), **(th if isinstance(th, dict) else {})}
        value = float(th["threshold"] if isinstance(th, dict) else th)
        target = sel.get("method") or "not stored"
        return {"threshold": value, "unit": cfg.get("unit") or unit,  # the data's unit, never a fixed "slice"
                "label": lab, "target": target, "method": target, "source": str(p),
                "validation": {"sensitivity": sel.get("val_sensitivity"), "specificity": sel.get("val_specificity")}}
    return None


def prediction_partitioning(pred: pd.DataFrame, pkg: Any = None) -> dict[str, Any]:
    """Checked, not asserted: patients of the validation rows (``split`` = val) and of the classifier's recorded
    validation patients (config.json) against the patients of the test rows."""
    from medsight.report.checklist import partitioning

    how = "validation patients (split=val rows; the package's recorded val_patients) vs test rows' patients"
    if "patient_id" not in pred.columns:
        return partitioning({}, how)
    is_val = pred["split"].astype(str) == "val" if "split" in pred.columns else pd.Series(False, index=pred.index)
    test = set(pred.loc[~is_val, "patient_id"].astype(str))
    pairs = {"validation rows vs test rows": (set(pred.loc[is_val, "patient_id"].astype(str)), test)}
    if pkg is not None and pkg.has("config.json"):
        recorded = set((pkg.read_json("config.json").get("data") or {}).get("val_patients") or [])
        pairs["model's validation patients vs test rows"] = (recorded, test)
    return partitioning(pairs, how)


def classification_results(pred: pd.DataFrame, dataset: Path, model: dict[str, Any], external_sites: Sequence[str],
                           min_cases: int = 10, n_boot: int = 1000, seed: int = 0, threshold: float | None = None,
                           title: str = "Validation report", model_card: dict[str, Any] | None = None,
                           classifier_dir: Path | None = None, base: Path | None = None, unit: str = "case",
                           op: dict[str, Any] | None = None) -> ValidationResults:
    """Results document from per-case predictions: case_id, y_true, prob[, prob_uncalibrated, referred, split,
    patient_id, image, mask], one row per ``unit`` (slice, scan, patient). The threshold is ``op`` (the model's
    stored operating point, see ``operating_point``), else ``threshold``, else 0.5 marked as not the model's.
    Rows with ``split`` = val form a validation cohort (where calibration and threshold were fitted), left out of
    subgroups and worst cases; rows with ``split`` = train (the model trained on them) are left out of every
    cohort, with a note; with ``patient_id`` the CIs resample patients. With an ``image`` column (paths, relative
    to ``base``) the worst cases get a thumbnail, with the Grad-CAM heatmap of ``classifier_dir``'s
    model and the outline of ``mask`` (the annotated finding) on it."""
    need = {"case_id", "y_true", "prob"} - set(pred.columns)
    if need:
        raise DatasetError(f"the predictions table lacks columns {sorted(need)}; expected case_id,y_true,prob"
                           "[,prob_uncalibrated,referred]")
    if op is None:
        op = ({"threshold": float(threshold), "unit": unit, "target": "given by the user (--threshold)",
               "method": "given by the user", "source": "command line", "validation": {}} if threshold is not None
              else {"threshold": 0.5, "unit": unit, "target": "none: the model stores no operating point",
                    "method": "default 0.5 (not the model's)", "source": "default", "validation": {}})
    thr = float(op["threshold"])
    manifest = read_manifest(dataset)
    extra = [c for c in MANIFEST_COLUMNS if c in manifest.columns]
    keep = [c for c in ("patient_id",) if c in manifest.columns and c not in pred.columns]
    t = pred.drop(columns=[c for c in extra if c in pred.columns]).merge(manifest[["case_id", *extra, *keep]],
                                                                         on="case_id", how="left")
    notes = []
    if "split" in t.columns and (t["split"].astype(str).str.strip().str.lower() == "train").any():
        # rows the model trained on are no test evidence (the same leak as scoring a fold's own cases)
        train = t["split"].astype(str).str.strip().str.lower() == "train"
        notes.append(f"{int(train.sum())} row(s) with split = train left out of every cohort: the model trained on "
                     "them.")
        t = t[~train].reset_index(drop=True)
    is_val = (t["split"].astype(str) == "val") if "split" in t.columns else pd.Series(False, index=t.index)
    ext = t["site"].isin(set(external_sites)) if "site" in t.columns else pd.Series(False, index=t.index)
    ext &= ~is_val

    def cohort(name: str, kind: str, s: pd.DataFrame) -> dict[str, Any]:
        return classification_cohort(name, kind, s["y_true"], s["prob"], s.get("prob_uncalibrated"), thr,
                                     s.get("referred"), n_boot=n_boot, seed=seed, unit=unit,
                                     groups=s["patient_id"] if "patient_id" in s.columns else None)

    cohorts = [cohort("validation (calibration and threshold fitted here)", "validation", t[is_val])] \
        if is_val.any() else []
    test = t[~is_val]
    if (~ext & ~is_val).any():
        cohorts.append(cohort("internal test folds", "internal", t[~ext & ~is_val]))
    for site in external_sites:
        s = test[test["site"] == site] if "site" in test.columns else test.iloc[:0]
        if len(s):
            cohorts.append(cohort(f"external: {site}", "external", s))
    cls = classification_section(cohorts, test, min_cases, n_boot=n_boot, seed=seed)
    cls.update(unit=unit, operating_point=clean(op))
    wrong = test.assign(err=(test["y_true"] - test["prob"]).abs()).sort_values("err", ascending=False).head(5)
    bundle = _classifier_or_none(classifier_dir)
    cases = []
    for i, r in wrong.iterrows():
        thumb, note = _cls_thumbnail(r, bundle, base)
        cases.append({"case_id": str(r.case_id), "cohort": "external" if ext.loc[i] else "internal",
                      "metric": f"|label - probability| ({unit})", "value": float(r.err), "thumbnail": thumb,
                      "note": note})
    return ValidationResults(
        title=title, created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), min_cases=min_cases,
        model=model, data=data_provenance(dataset, manifest, "internal test folds", external_sites),
        classification=cls, worst_cases=cases, model_card=model_card, notes=notes)
