"""Slice order and geometry of one series, from headers alone (no pixel decoding).

Slices are sorted by their position along the slice normal ``n = rows x cols`` of ImageOrientationPatient, never
by file name or InstanceNumber; the slice spacing is measured from the positions; uneven steps or two slices at one
position raise ``GeometryError``; in-plane drift of slice origins is reported as gantry tilt (``shifts_px``).
Enhanced (multi-frame) objects are placed by their per-frame functional groups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from medsight.errors import (
    CorruptFileError,
    GeometryError,
    MissingPixelDataError,
    MixedSeriesError,
    UnsupportedFormatError,
)
from medsight.image import Geometry
from medsight.io.dicom.scan import Header

SPACING_RTOL = 0.02
"""Largest allowed deviation of one slice step from the median step, relative (2 %; rounding in IPP is far less)."""

_TILT_TOL_PX = 0.05  # in-plane drift of slice origins (in pixels) above which we treat it as gantry tilt


@dataclass
class Slice:
    """One 2D plane of the output: a whole single-frame file, or one frame of a multi-frame file."""

    path: Path
    frame: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    instance: int


@dataclass
class Layout:
    """Where every slice goes: its order, the output geometry and any in-plane shift (gantry tilt)."""

    slices: list[Slice]
    geometry: Geometry
    shape: tuple[int, ...]
    shifts_px: np.ndarray | None = None  # (k, 2) offset along (i, j), in pixels, of slice k from the grid
    notes: dict[str, Any] = field(default_factory=dict)


def _float(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def first_item(ds: Dataset | None, sequence: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(sequence)
    return seq[0] if seq else None


def _grouped(frame_group: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset | None:
    """A functional-group item for one frame: the per-frame one if present, else the shared one."""
    return first_item(frame_group, sequence) or first_item(shared, sequence)


def _positive_spacing(value: Any) -> tuple[float, float] | None:
    arr = _floats(value, 2)
    if arr is None or np.any(arr <= 0):
        return None
    return float(arr[0]), float(arr[1])


def _slices_of(header: Header) -> list[Slice]:
    ds = header.ds
    instance = int(_float(ds, "InstanceNumber", 0) or 0)
    if header.n_frames == 1 or "PerFrameFunctionalGroupsSequence" not in ds:
        if header.n_frames > 1:
            return [Slice(header.path, f, None, None, None, 1.0, 0.0, instance) for f in range(header.n_frames)]
        return [Slice(
            header.path, None, _floats(ds.get("ImagePositionPatient"), 3),
            _floats(ds.get("ImageOrientationPatient"), 6),
            _positive_spacing(ds.get("PixelSpacing")), _float(ds, "RescaleSlope", 1.0) or 1.0,
            _float(ds, "RescaleIntercept", 0.0) or 0.0, instance,
        )]
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    out = []
    for f, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        pos = _grouped(group, shared, "PlanePositionSequence")
        ori = _grouped(group, shared, "PlaneOrientationSequence")
        meas = _grouped(group, shared, "PixelMeasuresSequence")
        pvt = _grouped(group, shared, "PixelValueTransformationSequence")
        slope = (_float(pvt, "RescaleSlope") if pvt is not None else None) or _float(ds, "RescaleSlope", 1.0) or 1.0
        inter = (_float(pvt, "RescaleIntercept") if pvt is not None else None)
        if inter is None:
            inter = _float(ds, "RescaleIntercept", 0.0) or 0.0
        out.append(Slice(
            header.path, f,
            _floats(pos.get("ImagePositionPatient"), 3) if pos is not None else None,
            _floats(ori.get("ImageOrientationPatient"), 6) if ori is not None else None,
            _positive_spacing(meas.get("PixelSpacing")) if meas is not None else None,
            slope, inter, f,
        ))
    return out


def _planar_spacing(ds: Dataset) -> tuple[tuple[float, float], str]:
    """(row spacing, column spacing) of a projection image and the header field it came from."""
    for keyword in ("PixelSpacing", "ImagerPixelSpacing", "NominalScannedPixelSpacing"):
        sp = _positive_spacing(ds.get(keyword))
        if sp is not None:
            return sp, keyword
    return (1.0, 1.0), "none (1.0 assumed: distances are in pixels)"


def order_series(uid: str, headers: list[Header], where: Path) -> Layout:
    """Order the slices of one series and compute its geometry, from headers alone."""
    images = [h for h in headers if h.has_pixels]
    if not images and "Image Storage" in sop_name(headers[0].ds):
        raise CorruptFileError(
            f"the header ends before the pixel data although the SOP class is {sop_name(headers[0].ds)} (file "
            "truncated?); re-export or re-copy it", headers[0].path)
    if not images:
        raise MissingPixelDataError(
            f"no pixel data (SOP class {sop_name(headers[0].ds)}); it is not an image - point medsight at an "
            "image file or series", headers[0].path if len(headers) == 1 else where)
    multi = [h for h in images if h.n_frames > 1]
    if multi and len(images) > 1:
        raise UnsupportedFormatError(
            f"series {uid} holds {len(images)} files of which {len(multi)} are multi-frame; read one file at a "
            "time", where)
    first = images[0].ds
    rows, cols = int(first.get("Rows", 0) or 0), int(first.get("Columns", 0) or 0)
    for h in images:
        if (int(h.ds.get("Rows", 0) or 0), int(h.ds.get("Columns", 0) or 0)) != (rows, cols):
            raise GeometryError(
                f"slices of series {uid} differ in size ({rows}x{cols} vs {h.ds.get('Rows')}x"
                f"{h.ds.get('Columns')} in {h.path.name}); the series mixes images - split it", where)
    slices = [s for h in images for s in _slices_of(h)]
    placed = all(s.position is not None and s.orientation is not None for s in slices)
    if not placed:
        if multi:
            raise UnsupportedFormatError(
                "multi-frame object without per-frame plane positions (cine, ultrasound or a stripped enhanced "
                "object): its frames cannot be placed in space; export the frame you need as a single image",
                images[0].path)
        if len(slices) > 1:
            raise MixedSeriesError(
                f"series {uid} holds {len(slices)} 2D images without positions that cannot be stacked; read one "
                f"file (e.g. {images[0].path.name})", where)
        (row_sp, col_sp), source = _planar_spacing(first)
        geometry = Geometry((col_sp, row_sp), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)))
        return Layout(slices, geometry, (cols, rows), notes={"pixel_spacing_source": source})
    return _volume_layout(uid, slices, rows, cols, first, where)


def _volume_layout(uid: str, slices: list[Slice], rows: int, cols: int, first: Dataset, where: Path) -> Layout:
    iop = slices[0].orientation
    assert iop is not None
    for s in slices[1:]:
        if not np.allclose(s.orientation, iop, atol=1e-4):
            raise GeometryError(
                f"slices of series {uid} have different orientations ({slice_name(slices[0])} vs {slice_name(s)}); the "
                "series mixes stacks (e.g. a localizer) - split it or pick the stack you need", where)
    r, c = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(r), 1, atol=1e-3) and np.isclose(np.linalg.norm(c), 1, atol=1e-3)
            and abs(float(r @ c)) < 1e-3):
        raise GeometryError(f"ImageOrientationPatient {list(iop)} is not two orthonormal vectors; the header is "
                            "corrupt - re-export the series", slices[0].path)
    r, c = r / np.linalg.norm(r), c / np.linalg.norm(c)
    normal = np.cross(r, c)
    spacings = {s.pixel_spacing for s in slices}
    if len(spacings) > 1:
        raise GeometryError(f"slices of series {uid} have different PixelSpacing {sorted(spacings)}; split it", where)
    pixel_spacing = slices[0].pixel_spacing
    notes: dict[str, Any] = {"pixel_spacing_source": "PixelSpacing"}
    if pixel_spacing is None:
        pixel_spacing, notes["pixel_spacing_source"] = _planar_spacing(first)
    row_sp, col_sp = pixel_spacing
    pos = np.stack([s.position for s in slices])  # type: ignore[misc]
    along = pos @ normal
    order = sorted(range(len(slices)), key=lambda i: (along[i], slices[i].instance))
    slices = [slices[i] for i in order]
    pos, along = pos[order], along[order]
    if len(slices) == 1:
        step = (_float(first, "SpacingBetweenSlices") or _float(first, "SliceThickness") or 1.0)
        notes["slice_spacing_source"] = "header (one slice: no positions to measure)"
        step = step if step > 0 else 1.0
    else:
        steps = np.diff(along)
        tiny = np.flatnonzero(steps < 1e-3)
        if tiny.size:
            a, b = slices[tiny[0]], slices[tiny[0] + 1]
            raise GeometryError(
                f"series {uid}: {slice_name(a)} and {slice_name(b)} lie at the same position ({along[tiny[0]]:.3f} mm along "
                "the slice normal); the series holds several volumes (echoes, time points or repeats) - split it "
                "by EchoTime/TemporalPositionIdentifier before reading", where)
        step = float(np.median(steps))
        bad = np.flatnonzero(np.abs(steps - step) > SPACING_RTOL * step)
        if bad.size:
            k = int(bad[0])
            raise GeometryError(
                f"series {uid}: uneven slice spacing - {steps[k]:.3f} mm between {slice_name(slices[k])} and "
                f"{slice_name(slices[k + 1])} where the rest are {step:.3f} mm (a missing or extra slice?); re-export "
                "the complete series", where)
        notes["slice_spacing_source"] = "measured from ImagePositionPatient"
    shifts = None
    offsets = pos - pos[0]
    inplane = offsets - np.outer(offsets @ normal, normal)
    shift_px = np.stack([inplane @ r / col_sp, inplane @ c / row_sp], axis=1)
    if np.max(np.abs(shift_px)) > _TILT_TOL_PX:
        shifts = shift_px
        tilt = float(np.degrees(np.arctan2(np.linalg.norm(inplane[-1]), along[-1] - along[0])))
        notes["gantry_tilt_deg"] = round(tilt, 3)
    direction = np.stack([r, c, normal], axis=1)
    geometry = Geometry(
        (float(col_sp), float(row_sp), float(step)), tuple(float(v) for v in pos[0]),
        tuple(tuple(float(v) for v in row) for row in direction),
    )
    return Layout(slices, geometry, (cols, rows, len(slices)), shifts, notes)


def slice_name(s: Slice) -> str:
    return s.path.name if s.frame is None else f"{s.path.name}[frame {s.frame + 1}]"


def sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None:
        return "unknown"
    name = getattr(uid, "name", str(uid))
    return name or str(uid)


