"""DICOM reading: a file or a folder -> series grouped by SeriesInstanceUID -> one ``Image`` with its geometry.

Why not just ``SimpleITK.ImageSeriesReader``: it sorts by position but silently accepts gaps, ignores gantry tilt,
drops the header facts our provenance needs, and cannot tell the user which of several series to pick. We use
pydicom (whose pixel handlers, with pylibjpeg installed, decode JPEG, JPEG-LS, JPEG 2000 and RLE) and compute the
geometry ourselves; tests check every voxel position against SimpleITK on the cases where SimpleITK is right.

Conventions (see ``medsight.image``):

- ``array[i, j, k]``: ``i`` runs along a row (DICOM column index), ``j`` down a column (row index), ``k`` across
  slices. ``PixelSpacing`` is (row spacing, column spacing), so spacing along ``i`` is ``PixelSpacing[1]``.
- Slices are sorted by their position along the slice normal ``n = rows x cols`` of ImageOrientationPatient, never
  by file name or InstanceNumber. The slice spacing is measured from the positions (SliceThickness is not the
  spacing); uneven steps (a missing slice) or two slices at one position raise ``GeometryError``.
- Gantry tilt (slice origins that also move within the slice plane) is corrected by shifting each slice in-plane
  onto a grid orthogonal to the slices (linear interpolation), recorded as the processing step
  ``gantry_tilt_resampled``; without it every slice but the first would sit at the wrong world position.
- RescaleSlope/Intercept are applied (CT comes out in Hounsfield units). Integer results stay integer (int16 when
  they fit), otherwise float32.
- MONOCHROME1 (CR/DX where low values are displayed white) is inverted on the stored values,
  ``(2**BitsStored - 1) - v`` (``-1 - v`` when signed), before rescaling, so that a higher value is always brighter;
  the step ``monochrome1_inverted`` is recorded.
- Single-frame images without ImagePositionPatient/ImageOrientationPatient (CR, DX, SC) are 2D with identity
  direction; spacing from PixelSpacing, else ImagerPixelSpacing (at the detector), else
  NominalScannedPixelSpacing, else 1.0 (pixels) - ``acquisition["pixel_spacing_source"]`` says which.
- Enhanced (multi-frame) CT/MR are read from their per-frame functional groups (positions, orientation, spacing,
  rescale). Multi-frame objects without plane positions (cine, ultrasound) are refused: they are not volumes.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from medsight.errors import (
    CorruptFileError,
    GeometryError,
    InputNotFoundError,
    MissingPixelDataError,
    MixedSeriesError,
    UnsupportedFormatError,
)
from medsight.files import sha256_bytes
from medsight.image import Geometry, Image, Provenance, SourceFile

log = logging.getLogger(__name__)

SPACING_RTOL = 0.02
"""Largest allowed deviation of one slice step from the median step, relative (2 %; rounding in IPP is far less)."""

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_TILT_TOL_PX = 0.05  # in-plane drift of slice origins (in pixels) above which we treat it as gantry tilt

# Header fields copied into Provenance.acquisition when present (no patient identifiers among them).
_ACQUISITION_KEYWORDS = (
    "KVP", "XRayTubeCurrent", "Exposure", "ExposureTime", "ConvolutionKernel", "FilterType", "SliceThickness",
    "SpacingBetweenSlices", "MagneticFieldStrength", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
    "EchoTrainLength", "ScanningSequence", "SequenceVariant", "SequenceName", "PulseSequenceName",
    "MRAcquisitionType", "ImagingFrequency", "PixelBandwidth", "ContrastBolusAgent", "ReconstructionDiameter",
    "ViewPosition", "PatientPosition", "DistanceSourceToDetector", "SoftwareVersions", "RescaleType",
    "PhotometricInterpretation", "BitsStored", "LossyImageCompression", "ImageType",
)
# Functional-group sequences in enhanced objects whose items may hold acquisition facts.
_ACQUISITION_GROUPS = (
    "MRTimingAndRelatedParametersSequence", "MREchoSequence", "MRModifierSequence", "CTAcquisitionDetailsSequence",
    "CTExposureSequence", "CTReconstructionSequence", "CTXRayDetailsSequence", "PixelMeasuresSequence",
)
_ENHANCED_ALIASES = {"EffectiveEchoTime": "EchoTime", "ExposureInmAs": "Exposure", "KVP": "KVP"}


# --------------------------------------------------------------------------------------------------- public types
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


# --------------------------------------------------------------------------------------------------- internals
@dataclass
class _Header:
    path: Path
    ds: Dataset

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")

    @property
    def has_pixels(self) -> bool:
        return any(k in self.ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))

    @property
    def n_frames(self) -> int:
        try:
            return max(1, int(self.ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            return 1


@dataclass
class _Slice:
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
class _Layout:
    """Where every slice goes: its order, the output geometry and any in-plane shift (gantry tilt)."""

    slices: list[_Slice]
    geometry: Geometry
    shape: tuple[int, ...]
    shifts_px: np.ndarray | None = None  # (k, 2) offset along (i, j), in pixels, of slice k from the grid
    notes: dict[str, Any] = field(default_factory=dict)


def _read_header(path: Path, strict: bool) -> _Header | None:
    """Parse a file's header (large values deferred). Non-DICOM files give None unless ``strict``."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            magic = f.read(4) == b"DICM"
    except OSError as exc:
        raise InputNotFoundError(f"cannot open the file ({exc.strerror}); check permissions", path) from exc
    try:
        ds = pydicom.dcmread(path, defer_size="4 KB", force=magic)
        ds.get("SeriesInstanceUID")  # touches the parser enough to surface gross corruption here
    except InvalidDicomError as exc:
        if strict or magic:
            raise CorruptFileError("not a DICOM file (no DICM preamble, unreadable header); re-export it from "
                                   "the scanner or PACS", path) from exc
        return None
    except Exception as exc:  # pydicom raises many types on damaged bytes
        if strict or magic:
            raise CorruptFileError(f"the DICOM header is damaged ({type(exc).__name__}: {_short(exc)}); re-export "
                                   "the file", path) from exc
        return None
    if not magic and "SOPClassUID" not in ds and "SeriesInstanceUID" not in ds:
        if strict:
            raise CorruptFileError("not a DICOM file (no DICM preamble, no SOP class); re-export it", path)
        return None
    if str(ds.get("MediaStorageSOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", ""))) == \
            _DICOMDIR_SOP_CLASS:
        return None
    return _Header(path, ds)


def _scan(path: Path) -> tuple[Path, list[_Header]]:
    """Headers of every DICOM file under ``path`` (a file, or a folder searched recursively)."""
    if not path.exists():
        raise InputNotFoundError("no such file or folder; check the path", path)
    if path.is_file():
        header = _read_header(path, strict=True)
        if header is None:
            raise UnsupportedFormatError("this is a DICOMDIR index, not an image; point at the series folder", path)
        return path, [header]
    headers = []
    for p in sorted(q for q in path.rglob("*") if q.is_file() and not q.name.startswith(".")):
        h = _read_header(p, strict=p.suffix.lower() == ".dcm")
        if h is not None:
            headers.append(h)
    if not headers:
        raise InputNotFoundError("the folder holds no DICOM files; check the path", path)
    return path, headers


def _group(headers: Iterable[_Header]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = defaultdict(list)
    for h in headers:
        groups[h.series_uid].append(h)
    return dict(groups)


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


def _first_item(ds: Dataset | None, sequence: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(sequence)
    return seq[0] if seq else None


def _grouped(frame_group: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset | None:
    """A functional-group item for one frame: the per-frame one if present, else the shared one."""
    return _first_item(frame_group, sequence) or _first_item(shared, sequence)


def _positive_spacing(value: Any) -> tuple[float, float] | None:
    arr = _floats(value, 2)
    if arr is None or np.any(arr <= 0):
        return None
    return float(arr[0]), float(arr[1])


def _slices_of(header: _Header) -> list[_Slice]:
    ds = header.ds
    instance = int(_float(ds, "InstanceNumber", 0) or 0)
    if header.n_frames == 1 or "PerFrameFunctionalGroupsSequence" not in ds:
        if header.n_frames > 1:
            return [_Slice(header.path, f, None, None, None, 1.0, 0.0, instance) for f in range(header.n_frames)]
        return [_Slice(
            header.path, None, _floats(ds.get("ImagePositionPatient"), 3),
            _floats(ds.get("ImageOrientationPatient"), 6),
            _positive_spacing(ds.get("PixelSpacing")), _float(ds, "RescaleSlope", 1.0) or 1.0,
            _float(ds, "RescaleIntercept", 0.0) or 0.0, instance,
        )]
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
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
        out.append(_Slice(
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


def _layout(uid: str, headers: list[_Header], where: Path) -> _Layout:
    """Order the slices of one series and compute its geometry, from headers alone."""
    images = [h for h in headers if h.has_pixels]
    if not images and "Image Storage" in _sop_name(headers[0].ds):
        raise CorruptFileError(
            f"the header ends before the pixel data although the SOP class is {_sop_name(headers[0].ds)} (file "
            "truncated?); re-export or re-copy it", headers[0].path)
    if not images:
        raise MissingPixelDataError(
            f"no pixel data (SOP class {_sop_name(headers[0].ds)}); it is not an image - point medsight at an "
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
        return _Layout(slices, geometry, (cols, rows), notes={"pixel_spacing_source": source})
    return _volume_layout(uid, slices, rows, cols, first, where)


def _volume_layout(uid: str, slices: list[_Slice], rows: int, cols: int, first: Dataset, where: Path) -> _Layout:
    iop = slices[0].orientation
    assert iop is not None
    for s in slices[1:]:
        if not np.allclose(s.orientation, iop, atol=1e-4):
            raise GeometryError(
                f"slices of series {uid} have different orientations ({_name(slices[0])} vs {_name(s)}); the "
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
                f"series {uid}: {_name(a)} and {_name(b)} lie at the same position ({along[tiny[0]]:.3f} mm along "
                "the slice normal); the series holds several volumes (echoes, time points or repeats) - split it "
                "by EchoTime/TemporalPositionIdentifier before reading", where)
        step = float(np.median(steps))
        bad = np.flatnonzero(np.abs(steps - step) > SPACING_RTOL * step)
        if bad.size:
            k = int(bad[0])
            raise GeometryError(
                f"series {uid}: uneven slice spacing - {steps[k]:.3f} mm between {_name(slices[k])} and "
                f"{_name(slices[k + 1])} where the rest are {step:.3f} mm (a missing or extra slice?); re-export "
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
    return _Layout(slices, geometry, (cols, rows, len(slices)), shifts, notes)


def _name(s: _Slice) -> str:
    return s.path.name if s.frame is None else f"{s.path.name}[frame {s.frame + 1}]"


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None:
        return "unknown"
    name = getattr(uid, "name", str(uid))
    return name or str(uid)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] + ("..." if len(text) > 160 else "")


# --------------------------------------------------------------------------------------------------- pixel decoding
def _decode(path: Path, data: bytes) -> tuple[Dataset, np.ndarray]:
    """Full parse and pixel decode of one file's bytes; decoder failures become user errors naming the file."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:
        raise CorruptFileError(f"the DICOM file is damaged ({type(exc).__name__}: {_short(exc)}); re-export it",
                               path) from exc
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    ts_name = f"{getattr(ts, 'name', '') or ts}" if ts else "unknown"
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        message = str(exc)
        if "decod" in message.lower() or "plugin" in message.lower() or "transfer syntax" in message.lower():
            raise UnsupportedFormatError(
                f"transfer syntax {ts_name} ({ts}) cannot be decoded by the installed pixel handlers; convert the "
                "file to an uncompressed syntax (e.g. `gdcmconv --raw in.dcm out.dcm`)", path) \
                from exc
        raise CorruptFileError(f"pixel data could not be decoded ({_short(exc)}); re-export the file", path) from exc
    except AttributeError as exc:
        raise MissingPixelDataError("no pixel data; it is not an image - point medsight at an image file", path) \
            from exc
    except Exception as exc:  # truncated or inconsistent pixel data: ValueError, EOFError, struct.error...
        raise CorruptFileError(f"pixel data is damaged or truncated ({type(exc).__name__}: {_short(exc)}); "
                               "re-export the file", path) from exc
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
    return ds, arr


def _invert_monochrome1(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    bits = int(ds.get("BitsStored", 8 * raw.dtype.itemsize) or 8 * raw.dtype.itemsize)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    wide = raw.astype(np.int64)
    inverted = (-1 - wide) if signed else ((1 << bits) - 1 - wide)
    return inverted.astype(raw.dtype)


def _rescaled(stack: np.ndarray, slices: Sequence[_Slice]) -> np.ndarray:
    """Apply each plane's slope/intercept to a (k, rows, cols[, c]) stack of stored values, vectorised.

    Identity rescale keeps the stored dtype; integer-only rescale (CT: slope 1, intercept -1024) gives the
    smallest signed integer type that holds the result; anything else float32.
    """
    slopes = np.array([s.slope for s in slices], dtype=float)
    inters = np.array([s.intercept for s in slices], dtype=float)
    per_plane = (-1,) + (1,) * (stack.ndim - 1)
    if np.all(slopes == 1.0) and np.all(inters == 0.0):
        return stack
    if np.all(slopes == 1.0) and np.all(inters == np.round(inters)) and stack.dtype.kind in "iu":
        lo, hi = int(stack.min()) + int(inters.min()), int(stack.max()) + int(inters.max())
        dtype = next((t for t in (np.int16, np.int32) if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max), np.int64)
        out = stack.astype(dtype)
        out += inters.astype(dtype).reshape(per_plane)
        return out
    out = stack.astype(np.float32)
    out *= slopes.astype(np.float32).reshape(per_plane)
    out += inters.astype(np.float32).reshape(per_plane)
    return out


def _correct_tilt(volume: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Move slice k by ``shifts_px[k]`` in-plane so every voxel sits on the grid orthogonal to the slices.

    Slice k's origin lies ``shifts_px[k]`` pixels from the grid's, so its pixel ``p`` belongs at grid ``p + shift``.
    """
    from scipy import ndimage

    fill = float(volume.min())
    out = np.empty(volume.shape, dtype=np.float32)
    for k in range(volume.shape[2]):
        plane = volume[:, :, k].astype(np.float32)
        shift = np.where(np.abs(shifts_px[k] - np.round(shifts_px[k])) < 1e-6, np.round(shifts_px[k]), shifts_px[k])
        # grid-constant: samples a hair outside the slice still interpolate against the edge (no lost rows)
        out[:, :, k] = ndimage.shift(plane, shift, order=1, mode="grid-constant", cval=fill)
    return out


# --------------------------------------------------------------------------------------------------- provenance
def _acquisition(ds: Dataset) -> dict[str, Any]:
    acq: dict[str, Any] = {}
    for keyword in _ACQUISITION_KEYWORDS:
        value = ds.get(keyword)
        if value is not None and value != "":
            acq[keyword] = _plain(value)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _first_item(ds, "PerFrameFunctionalGroupsSequence")
    for group in (per_frame, shared):
        for seq in _ACQUISITION_GROUPS:
            item = _first_item(group, seq)
            if item is None:
                continue
            for elem in item:
                if elem.VR == "SQ" or elem.keyword in ("", "PixelSpacing"):
                    continue
                key = _ENHANCED_ALIASES.get(elem.keyword, elem.keyword)
                if key in _ACQUISITION_KEYWORDS and key not in acq and elem.value not in (None, ""):
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


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


# --------------------------------------------------------------------------------------------------- public API
def list_series(path: str | Path) -> list[SeriesInfo]:
    """Every series under ``path`` (file or folder, searched recursively), from headers only.

    A series whose slices cannot form a volume is still listed, with the reason in ``problem``.
    """
    root, headers = _scan(Path(path))
    infos = []
    for uid, group in _group(headers).items():
        infos.append(_info(uid, group, root))
    return sorted(infos, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))


def _info(uid: str, group: list[_Header], root: Path) -> SeriesInfo:
    ds = group[0].ds
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    info = SeriesInfo(
        series_uid=uid, modality=_text(ds, "Modality"), description=_text(ds, "SeriesDescription"),
        series_number=number, n_files=len(group), n_frames=sum(h.n_frames for h in group if h.has_pixels),
        rows=int(ds.Rows) if "Rows" in ds else None, columns=int(ds.Columns) if "Columns" in ds else None,
        has_pixels=any(h.has_pixels for h in group),
        transfer_syntax=(getattr(ts, "name", "") or str(ts)) if ts else "",
        manufacturer=_text(ds, "Manufacturer"), scanner_model=_text(ds, "ManufacturerModelName"),
        files=tuple(str(h.path) for h in group),
    )
    try:
        lay = _layout(uid, group, root)
    except (GeometryError, MixedSeriesError, MissingPixelDataError, UnsupportedFormatError) as exc:
        return replace(info, problem=str(exc))
    return replace(info, shape=lay.shape, spacing=lay.geometry.spacing,
                   orientation=lay.geometry.orientation_code() if lay.geometry.ndim == 3 else None)


def read_dicom(path: str | Path, series_uid: str | None = None, progress: bool = False) -> Image:
    """Read one DICOM file or one series from a folder into an ``Image`` (geometry in LPS mm, values rescaled).

    ``series_uid`` picks a series when the folder holds several image series; without it such a folder raises
    ``MixedSeriesError`` listing them. Nothing is written.
    """
    root, headers = _scan(Path(path))
    groups = _group(headers)
    if series_uid is not None:
        if series_uid not in groups:
            known = ", ".join(sorted(groups)[:6])
            raise InputNotFoundError(f"no series {series_uid} here; series present: {known} (see `medsight info`)",
                                     root)
        uid = series_uid
    else:
        with_pixels = {u: g for u, g in groups.items() if any(h.has_pixels for h in g)}
        if len(with_pixels) > 1:
            labels = [_info(u, g, root).label() for u, g in with_pixels.items()]
            more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
            raise MixedSeriesError(
                f"{len(with_pixels)} image series in one folder: {'; '.join(labels[:5])}{more}; pick one with "
                "--series UID (read_dicom(path, series_uid=...))", root)
        uid = next(iter(with_pixels)) if with_pixels else next(iter(groups))
    layout = _layout(uid, groups[uid], root)
    return _load(uid, layout, progress)


def _load(uid: str, layout: _Layout, progress: bool) -> Image:
    paths = list(dict.fromkeys(s.path for s in layout.slices))
    iterator: Iterable[Path] = paths
    if progress and len(paths) > 1:
        from tqdm.auto import tqdm

        iterator = tqdm(paths, desc="reading DICOM", unit="file", leave=False)
    sources, decoded = [], {}
    first_ds: Dataset | None = None
    for p in iterator:
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise InputNotFoundError(f"cannot read the file ({exc.strerror}); check permissions", p) from exc
        sources.append(SourceFile(str(p), sha256_bytes(data)))
        ds, arr = _decode(p, data)  # decode the very bytes we hashed
        decoded[p] = (ds, arr)
        first_ds = first_ds or ds
    assert first_ds is not None
    photometric = str(first_ds.get("PhotometricInterpretation", "")).upper()
    planes = []
    for s in layout.slices:
        ds, arr = decoded[s.path]
        plane = arr[s.frame] if s.frame is not None else arr
        if plane.ndim == 3 and s.frame is None and int(ds.get("NumberOfFrames", 1) or 1) > 1:
            plane = plane[0]
        if plane.shape[:2] != layout.shape[1::-1]:
            raise CorruptFileError(f"decoded pixels are {plane.shape[1]}x{plane.shape[0]}, the header says "
                                   f"{layout.shape[0]}x{layout.shape[1]}; re-export the file", s.path)
        planes.append(plane)
    stack = np.stack(planes)  # (k, rows, cols[, c]) of stored values
    del planes, decoded
    if photometric == "MONOCHROME1":
        stack = _invert_monochrome1(stack, first_ds)
    stack = _rescaled(stack, layout.slices)
    volume = stack.transpose((2, 1, 0) + tuple(range(3, stack.ndim)))  # -> [i, j, k(, c)]
    prov = _provenance(uid, first_ds, sources, layout)
    if photometric == "MONOCHROME1":
        prov = prov.with_step("monochrome1_inverted", bits_stored=int(first_ds.get("BitsStored", 0) or 0))
    if layout.geometry.ndim == 2:
        array = volume[:, :, 0] if volume.ndim == 3 else volume[:, :, 0, :]
    else:
        array = volume
        if layout.shifts_px is not None:
            if array.ndim == 4:
                raise UnsupportedFormatError("gantry-tilted colour series are not supported; export greyscale",
                                             layout.slices[0].path)
            array = _correct_tilt(array, layout.shifts_px)
            prov = prov.with_step("gantry_tilt_resampled", tilt_deg=layout.notes.get("gantry_tilt_deg"),
                                  max_shift_px=float(np.max(np.abs(layout.shifts_px))), order=1)
    return Image(np.ascontiguousarray(array), layout.geometry, prov)


def _provenance(uid: str, ds: Dataset, sources: list[SourceFile], layout: _Layout) -> Provenance:
    acquisition = _acquisition(ds)
    acquisition.update(layout.notes)
    acquisition["transfer_syntax"] = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") \
        else ""
    acquisition["n_slices"] = len(layout.slices)
    return Provenance(
        source_files=tuple(sources), format="dicom", modality=_text(ds, "Modality"),
        manufacturer=_text(ds, "Manufacturer"), scanner_model=_text(ds, "ManufacturerModelName"),
        protocol=_text(ds, "ProtocolName"), series_description=_text(ds, "SeriesDescription"), series_uid=uid,
        body_part=_text(ds, "BodyPartExamined"), acquisition=acquisition,
    )
