"""DICOM reading: a file or a folder -> series grouped by SeriesInstanceUID -> one ``Image`` with its geometry.

Modules, one job each: ``scan`` (find files; one read, one hash and one parse per file), ``tags`` (the elements
used), ``layout`` (slice order and geometry from headers), ``stage`` (stored values into one stack:
``np.frombuffer`` for native data, decoding on a thread pool for compressed data), ``decode`` (codecs),
``values`` (inversion, rescale, tilt), ``provenance`` (series summaries and provenance). This module ties them
together: ``scan_dicom`` reads a path once; ``list_series``, ``read_dicom`` and ``medsight info`` use it.

Why not just ``SimpleITK.ImageSeriesReader``: it sorts by position but silently accepts gaps, ignores gantry tilt,
drops the header facts our provenance needs, and cannot tell the user which of several series to pick. We use
pydicom (whose pixel handlers, with pylibjpeg installed, decode JPEG, JPEG-LS, JPEG 2000 and RLE) and compute the
geometry ourselves; tests check every voxel position against SimpleITK on the cases where SimpleITK is right.
It is also faster: docs/io.md and docs/benchmarks.md (section io) give the measured ratios.

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

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from medsight.errors import (
    GeometryError,
    InputNotFoundError,
    MissingPixelDataError,
    MixedSeriesError,
    UnsupportedFormatError,
)
from medsight.image import Image, SourceFile
from medsight.io.dicom.layout import SPACING_RTOL, Layout, order_series
from medsight.io.dicom.provenance import SeriesInfo, provenance, text
from medsight.io.dicom.scan import Header, group, scan
from medsight.io.dicom.stage import Stager, assemble
from medsight.io.dicom.values import correct_tilt, invert_monochrome1, rescaled

__all__ = ["SPACING_RTOL", "DicomScan", "SeriesInfo", "list_series", "read_dicom", "scan_dicom"]

@dataclass
class DicomScan:
    """One pass over a file or folder: parsed headers by series, and (when read with pixels) staged pixels.

    ``series()`` summarises every series and ``image(uid)`` builds one ``Image`` from the same scan, so
    ``medsight info`` reads each file once.
    """

    root: Path
    headers: list[Header]
    stager: Stager | None
    progress: bool = False
    groups: dict[str, list[Header]] = field(init=False)
    _layouts: dict[str, Layout] = field(init=False, default_factory=dict)
    _built: set[str] = field(init=False, default_factory=set)  # series whose staged pixels became an Image

    def __post_init__(self) -> None:
        self.groups = group(self.headers)

    def layout(self, uid: str) -> Layout:
        if uid not in self._layouts:
            self._layouts[uid] = order_series(uid, self.groups[uid], self.root)
        return self._layouts[uid]

    def series(self) -> list[SeriesInfo]:
        """Every series, from headers only; one that cannot form a volume says why in ``problem``."""
        infos = [self._info(uid, g) for uid, g in self.groups.items()]
        return sorted(infos, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))

    def _info(self, uid: str, headers: list[Header]) -> SeriesInfo:
        ds = headers[0].ds
        ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        try:
            number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
        except (TypeError, ValueError):
            number = None
        info = SeriesInfo(
            series_uid=uid, modality=text(ds, "Modality"), description=text(ds, "SeriesDescription"),
            series_number=number, n_files=len(headers), n_frames=sum(h.n_frames for h in headers if h.has_pixels),
            rows=int(ds.Rows) if "Rows" in ds else None, columns=int(ds.Columns) if "Columns" in ds else None,
            has_pixels=any(h.has_pixels for h in headers),
            transfer_syntax=(getattr(ts, "name", "") or str(ts)) if ts else "",
            manufacturer=text(ds, "Manufacturer"), scanner_model=text(ds, "ManufacturerModelName"),
            files=tuple(str(h.path) for h in headers),
        )
        try:
            lay = self.layout(uid)
        except (GeometryError, MixedSeriesError, MissingPixelDataError, UnsupportedFormatError) as exc:
            return replace(info, problem=str(exc))
        return replace(info, shape=lay.shape, spacing=lay.geometry.spacing,
                       orientation=lay.geometry.orientation_code() if lay.geometry.ndim == 3 else None)

    def pick(self, series_uid: str | None) -> str:
        """The series to read: the one asked for, else the only image series (several -> MixedSeriesError)."""
        if series_uid is not None:
            if series_uid not in self.groups:
                known = ", ".join(sorted(self.groups)[:6])
                raise InputNotFoundError(f"no series {series_uid} here; series present: {known} (see `medsight "
                                         "info`)", self.root)
            return series_uid
        with_pixels = {u: g for u, g in self.groups.items() if any(h.has_pixels for h in g)}
        if len(with_pixels) > 1:
            labels = [self._info(u, g).label() for u, g in with_pixels.items()]
            more = f" and {len(labels) - 5} more" if len(labels) > 5 else ""
            raise MixedSeriesError(
                f"{len(with_pixels)} image series in one folder: {'; '.join(labels[:5])}{more}; pick one with "
                "--series UID (read_dicom(path, series_uid=...))", self.root)
        return next(iter(with_pixels)) if with_pixels else next(iter(self.groups))

    def image(self, series_uid: str | None = None) -> Image:
        """One series as an ``Image`` (geometry in LPS mm, values rescaled), from this scan's bytes."""
        uid = self.pick(series_uid)
        lay = self.layout(uid)
        if (self.stager is None or self.stager.dropped or self.stager.series_uid not in (None, uid)
                or uid in self._built):
            # listed without pixels, another series staged, or pixels already handed out: read this series now
            return scan_dicom(self.root, series_uid=uid, progress=self.progress).image(uid)
        self._built.add(uid)
        return _build(uid, lay, self.groups[uid], self.stager)


def scan_dicom(path: str | Path, *, pixels: bool = True, series_uid: str | None = None,
               progress: bool = False) -> DicomScan:
    """Read a DICOM file or folder once. ``pixels=False`` parses headers only (pixel data is skipped on disk)."""
    stager = Stager(series_uid) if pixels else None
    try:
        root, headers = scan(Path(path), stager, with_pixels=pixels, progress=progress)
    except BaseException:
        if stager is not None:
            stager.close()
        raise
    return DicomScan(root, headers, stager, progress)


def list_series(path: str | Path) -> list[SeriesInfo]:
    """Every series under ``path`` (file or folder, searched recursively), from headers only.

    A series whose slices cannot form a volume is still listed, with the reason in ``problem``.
    """
    return scan_dicom(path, pixels=False).series()


def read_dicom(path: str | Path, series_uid: str | None = None, progress: bool = False) -> Image:
    """Read one DICOM file or one series from a folder into an ``Image`` (geometry in LPS mm, values rescaled).

    ``series_uid`` picks a series when the folder holds several image series; without it such a folder raises
    ``MixedSeriesError`` listing them. Nothing is written.
    """
    return scan_dicom(path, series_uid=series_uid, progress=progress).image(series_uid)


def _build(uid: str, layout: Layout, headers: list[Header], stager: Stager) -> Image:
    """Stack, invert, rescale and orient the pixels of one series; the array is a view of the stack (no copy)."""
    by_path = {h.path: h for h in headers}
    stack = assemble(stager, layout.slices, by_path, (layout.shape[1], layout.shape[0]))  # (rows, cols)
    first = by_path[layout.slices[0].path]
    first_ds = first.ds
    photometric = str(first_ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "MONOCHROME1":
        invert_monochrome1(stack, first_ds)
    stack = rescaled(stack, np.array([s.slope for s in layout.slices], dtype=float),
                     np.array([s.intercept for s in layout.slices], dtype=float))
    volume = stack.transpose((2, 1, 0) + tuple(range(3, stack.ndim)))  # -> [i, j, k(, c)], a view
    paths = list(dict.fromkeys(s.path for s in layout.slices))
    sources = [SourceFile(str(p), by_path[p].sha256 or "") for p in paths]
    prov = provenance(uid, first_ds, sources, layout)
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
            array = correct_tilt(array, layout.shifts_px)
            prov = prov.with_step("gantry_tilt_resampled", tilt_deg=layout.notes.get("gantry_tilt_deg"),
                                  max_shift_px=float(np.max(np.abs(layout.shifts_px))), order=1)
    return Image(array, layout.geometry, prov)
