"""Test helper, imported by the io and cli tests: small, fully controlled DICOM series written with pydicom.

Nothing here reads DICOM back, so the tests' expectations do not depend on the reader under test.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ROWS, COLS = 8, 6


def slice_pixels(k: int, rows: int = ROWS, cols: int = COLS) -> np.ndarray:
    """Stored values of the slice that lies k-th along the normal: unique per slice and per pixel."""
    return (1000 + 100 * k + np.arange(rows * cols).reshape(rows, cols)).astype(np.int16)


def write_slice(path: Path, pixels: np.ndarray | None, position: Sequence[float] | None,
                orientation: Sequence[float] | None, series_uid: str, instance: int,
                pixel_spacing: Sequence[float] = (0.7, 0.6), slope: float = 1.0, intercept: float = -1024.0,
                modality: str = "CT", **extra: object) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.Modality = modality
    ds.Manufacturer = "TestVendor"
    ds.ManufacturerModelName = "Model X"
    ds.SeriesDescription = "synthetic"
    ds.SeriesNumber = 3
    ds.InstanceNumber = instance
    ds.KVP = "120"
    ds.SliceThickness = "9.9"  # deliberately not the spacing: the reader must measure positions
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
    if pixel_spacing is not None:
        ds.PixelSpacing = [f"{v:g}" for v in pixel_spacing]
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    for key, value in extra.items():
        setattr(ds, key, value)
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.PixelData = pixels.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, positions: Sequence[Sequence[float]], orientation: Sequence[float],
                 order: Sequence[int] | None = None, series_uid: str | None = None, prefix: str = "img",
                 **kw: object) -> list[Path]:
    """Files, one per position; slice ``k`` (k-th position given) holds ``slice_pixels(k)``.

    ``order`` is the permutation used for file names and InstanceNumbers, so that neither matches the position
    order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    order = list(order) if order is not None else list(range(len(positions)))
    paths = []
    for k, pos in enumerate(positions):
        number = order[k]
        paths.append(write_slice(folder / f"{prefix}{number:03d}.dcm", slice_pixels(k), pos, orientation, uid,
                                 instance=number + 1, **kw))
    return paths


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (for 'nothing was written' checks)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))
