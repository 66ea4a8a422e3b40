"""Header facts for the user: per-series summaries (``SeriesInfo``) and the ``Provenance`` of a read image.

Only acquisition facts are copied (no patient identifiers); pydicom values become plain JSON types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medsight.image import Provenance, SourceFile
from medsight.io.dicom.layout import Layout, first_item
from medsight.io.dicom.tags import ACQUISITION_GROUPS, ACQUISITION_KEYWORDS

_ENHANCED_ALIASES = {"EffectiveEchoTime": "EchoTime", "ExposureInmAs": "Exposure", "KVP": "KVP"}


@dataclass(frozen=True)
class SeriesInfo:
    """What a folder holds, per series, from headers only (no pixel decoding): enough to choose one."""

    series_uid: str
    modality: str
    description: str
    series_number: int | None
    n_files: int
    n_frames: int
    rows: int | None
    columns: int | None
    has_pixels: bool
    transfer_syntax: str
    manufacturer: str
    scanner_model: str
    files: tuple[str, ...] = ()
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    orientation: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid, "modality": self.modality, "description": self.description,
            "series_number": self.series_number, "n_files": self.n_files, "n_frames": self.n_frames,
            "rows": self.rows, "columns": self.columns, "has_pixels": self.has_pixels,
            "transfer_syntax": self.transfer_syntax, "manufacturer": self.manufacturer,
            "scanner_model": self.scanner_model, "shape": None if self.shape is None else list(self.shape),
            "spacing": None if self.spacing is None else list(self.spacing), "orientation": self.orientation,
            "problem": self.problem, "files": list(self.files),
        }

    def label(self) -> str:
        """Short one-line description used in error messages that ask the user to pick a series."""
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.series_uid} ({self.modality or '?'}{desc}, {self.n_files} file{'s' * (self.n_files != 1)})"


def acquisition(ds: Dataset) -> dict[str, Any]:
    acq: dict[str, Any] = {}
    for keyword in ACQUISITION_KEYWORDS:
        value = ds.get(keyword)
        if value is not None and value != "":
            acq[keyword] = _plain(value)
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = first_item(ds, "PerFrameFunctionalGroupsSequence")
    for group in (per_frame, shared):
        for seq in ACQUISITION_GROUPS:
            item = first_item(group, seq)
            if item is None:
                continue
            for elem in item:
                if elem.VR == "SQ" or elem.keyword in ("", "PixelSpacing"):
                    continue
                key = _ENHANCED_ALIASES.get(elem.keyword, elem.keyword)
                if key in ACQUISITION_KEYWORDS and key not in acq and elem.value not in (None, ""):
                    acq[key] = _plain(elem.value)
    return acq


def _plain(value: Any) -> Any:
    """pydicom values (DSfloat, IS, MultiValue, PersonName...) as plain JSON types."""
    if isinstance(value, (list, tuple, MultiValue)):
        return [_plain(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def provenance(uid: str, ds: Dataset, sources: list[SourceFile], layout: Layout) -> Provenance:
    """Where the image came from: the hashed source files, scanner and acquisition facts, layout notes."""
    acq = acquisition(ds)
    acq.update(layout.notes)
    acq["transfer_syntax"] = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    acq["n_slices"] = len(layout.slices)
    return Provenance(
        source_files=tuple(sources), format="dicom", modality=text(ds, "Modality"),
        manufacturer=text(ds, "Manufacturer"), scanner_model=text(ds, "ManufacturerModelName"),
        protocol=text(ds, "ProtocolName"), series_description=text(ds, "SeriesDescription"), series_uid=uid,
        body_part=text(ds, "BodyPartExamined"), acquisition=acq,
    )
