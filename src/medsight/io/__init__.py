"""Readers and writers. ``read_image`` picks the reader from the path; every reader returns an ``Image``."""

from __future__ import annotations

from pathlib import Path

from medsight.errors import InputNotFoundError, UnsupportedFormatError
from medsight.image import Image

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_image(path: str | Path) -> Image:
    """Read a NIfTI file, a PNG/JPEG, a DICOM file or a folder holding one DICOM series."""
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError("no such file or folder; check the path", p)
    name = p.name.lower()
    if p.is_file() and name.endswith((".nii", ".nii.gz")):
        from medsight.io.nifti import read_nifti

        return read_nifti(p)
    if p.is_file() and name.endswith(RASTER_SUFFIXES):
        from medsight.io.raster import read_raster

        return read_raster(p)
    if p.is_dir() or name.endswith(".dcm") or _looks_like_dicom(p):
        from medsight.io.dicom import read_dicom

        return read_dicom(p)
    raise UnsupportedFormatError(
        "unrecognised image format; medsight reads DICOM (file or series folder), NIfTI, PNG and JPEG", p
    )


def _looks_like_dicom(p: Path) -> bool:
    """DICOM Part 10 files have 'DICM' at byte 128, whatever their name."""
    try:
        with open(p, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False
