"""A segmentation dataset in the Medical Segmentation Decathlon / nnU-Net v2 layout, validated up front.

``dataset.json`` names the channels and labels; images are ``imagesTr/{case}_{channel:04d}.nii.gz`` and labels
``labelsTr/{case}.nii.gz``. When a ``manifest.csv`` sits beside it, its rows decide the cases and carry patient and
site; otherwise every case is its own patient. ``validate`` reads headers and label values so that a bad case stops
the run, naming the case, before any training starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from medsight.data.manifest import read_manifest
from medsight.errors import DatasetError, InputNotFoundError
from medsight.image import Geometry

SPACING_TOLERANCE = 1e-3  # relative; NIfTI headers round spacings to float32


@dataclass(frozen=True)
class Case:
    """One training or test case: its channel files, label file (or None) and who/where it came from."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    patient_id: str
    site: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SegDataset:
    root: Path
    name: str
    channels: dict[int, str]  # channel index -> name (e.g. T1, CT)
    labels: dict[str, int]  # label name -> value, background 0
    file_ending: str
    cases: tuple[Case, ...]

    @property
    def label_names(self) -> dict[int, str]:
        return {v: k for k, v in self.labels.items()}

    @property
    def foreground(self) -> dict[int, str]:
        return {v: k for k, v in self.labels.items() if v != 0}

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise DatasetError(f"no case '{case_id}' in this dataset", self.root)

    def subset(self, case_ids: list[str] | tuple[str, ...]) -> "SegDataset":
        wanted = set(case_ids)
        return SegDataset(self.root, self.name, self.channels, self.labels, self.file_ending,
                          tuple(c for c in self.cases if c.case_id in wanted))


def load_dataset(root: str | Path) -> SegDataset:
    """Read ``dataset.json`` and list the cases (from ``manifest.csv`` if present, else from ``imagesTr``)."""
    root = Path(root)
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise InputNotFoundError("no dataset.json; a dataset folder needs dataset.json, imagesTr/ and labelsTr/", root)
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise DatasetError(f"dataset.json is not valid JSON ({exc})", meta_path) from exc
    channels = meta.get("channel_names", meta.get("modality"))
    labels = meta.get("labels")
    if not isinstance(channels, dict) or not channels:
        raise DatasetError("dataset.json needs 'channel_names', e.g. {\"0\": \"T1\"}", meta_path)
    if not isinstance(labels, dict) or not labels:
        raise DatasetError("dataset.json needs 'labels', e.g. {\"background\": 0, \"tumour\": 1}", meta_path)
    channels = {int(k): str(v) for k, v in channels.items()}
    labels = _normalise_labels(labels, meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    manifest = root / "manifest.csv"
    cases = _cases_from_manifest(root, manifest, channels) if manifest.is_file() else _cases_from_folder(
        root, channels, ending)
    if not cases:
        raise DatasetError("the dataset has no cases; put images in imagesTr/ named {case}_0000" + ending, root)
    return SegDataset(root, str(meta.get("name", root.name)), channels, labels, ending, tuple(cases))


def _normalise_labels(labels: dict, where: Path) -> dict[str, int]:
    # nnU-Net v2: {"name": int}; MSD: {"0": "name"}
    if all(str(k).lstrip("-").isdigit() for k in labels):
        out = {str(v): int(k) for k, v in labels.items()}
    else:
        try:
            out = {str(k): int(v) for k, v in labels.items()}
        except (TypeError, ValueError) as exc:
            raise DatasetError("dataset.json 'labels' must map names to integer values (region labels are not "
                               "supported)", where) from exc
    if 0 not in out.values():
        raise DatasetError("dataset.json 'labels' must include background with value 0", where)
    return out


def _cases_from_folder(root: Path, channels: dict[int, str], ending: str) -> list[Case]:
    folder = root / "imagesTr"
    if not folder.is_dir():
        raise InputNotFoundError("no imagesTr/ folder in the dataset", root)
    pattern = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})" + re.escape(ending) + "$")
    found: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if m:
            found.setdefault(m["case"], {})[int(m["ch"])] = p
    cases = []
    for cid, chans in sorted(found.items()):
        missing = [c for c in channels if c not in chans]
        if missing:
            raise DatasetError(f"case {cid} lacks channel file(s) "
                               + ", ".join(f"{cid}_{c:04d}{ending}" for c in missing), folder)
        label = root / "labelsTr" / f"{cid}{ending}"
        cases.append(Case(cid, tuple(chans[c] for c in sorted(channels)), label if label.is_file() else None, cid))
    return cases


def _cases_from_manifest(root: Path, manifest: Path, channels: dict[int, str]) -> list[Case]:
    cases = []
    for row in read_manifest(manifest):
        cid = row["case_id"].strip()
        images = tuple(root / p.strip() for p in row["image"].split(";") if p.strip())
        if len(images) != len(channels):
            raise DatasetError(f"case {cid}: manifest lists {len(images)} image channel(s) but dataset.json names "
                               f"{len(channels)}", manifest)
        for p in images:
            if not p.is_file():
                raise DatasetError(f"case {cid}: image file {p} is missing (a missing channel?)", manifest)
        label = root / row["label"].strip() if (row.get("label") or "").strip() else None
        if label is not None and not label.is_file():
            raise DatasetError(f"case {cid}: label file {label} is missing", manifest)
        attrs = {k: v for k, v in row.items() if k not in ("case_id", "image", "label", "patient_id", "site")}
        cases.append(Case(cid, images, label, row["patient_id"].strip(), (row.get("site") or "").strip(), attrs))
    return cases


def header_geometry(path: Path) -> tuple[tuple[int, ...], Geometry]:
    """Shape and geometry from a NIfTI header alone (no voxel read)."""
    try:
        img = nib.load(str(path))
        return tuple(int(s) for s in img.shape[:3]), Geometry.from_ras_affine(img.affine)
    except Exception as exc:
        raise DatasetError(f"cannot read NIfTI header ({type(exc).__name__}: {exc})", path) from exc


def validate(ds: SegDataset, require_labels: bool = True) -> None:
    """Stop with a DatasetError naming the case on the first inconsistency: a missing label, image/label shape
    or spacing mismatch between channels and label, or label values that dataset.json does not name."""
    allowed = set(ds.labels.values())
    for case in ds.cases:
        if require_labels and case.label is None:
            raise DatasetError(f"case {case.case_id} has no label file labelsTr/{case.case_id}{ds.file_ending}", ds.root)
        ref_shape, ref_geom = header_geometry(case.images[0])
        others = list(case.images[1:]) + ([case.label] if case.label is not None else [])
        for p in others:
            shape, geom = header_geometry(p)
            what = "label" if p == case.label else f"channel {p.name}"
            if shape != ref_shape:
                raise DatasetError(f"case {case.case_id}: {what} has shape {shape} but image has {ref_shape}", p)
            if not np.allclose(geom.spacing, ref_geom.spacing, rtol=SPACING_TOLERANCE):
                raise DatasetError(f"case {case.case_id}: {what} spacing {tuple(round(s, 4) for s in geom.spacing)} "
                                   f"differs from image spacing {tuple(round(s, 4) for s in ref_geom.spacing)}", p)
            if not np.allclose(geom.origin, ref_geom.origin, atol=1e-2 * max(ref_geom.spacing)):
                raise DatasetError(f"case {case.case_id}: {what} origin differs from the image's; resample it onto "
                                   "the image grid", p)
        if case.label is not None:
            values = np.unique(np.asanyarray(nib.load(str(case.label)).dataobj))
            bad = [v for v in values.tolist() if v not in allowed or v != int(v)]
            if bad:
                raise DatasetError(f"case {case.case_id}: label values {bad[:5]} are not in dataset.json labels "
                                   f"{sorted(allowed)}", case.label)
