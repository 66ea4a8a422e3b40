"""NIfTI-1 reading and writing with explicit RAS (NIfTI) <-> LPS (medsight, DICOM) conversion.

Files written here carry qform and sform code 1 (scanner) so 3D Slicer and ITK-SNAP place them where the source
DICOM would be. The provenance travels in a JSON sidecar (``<name>.provenance.json``) that ordinary tools can read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medsight.errors import CorruptFileError, InputNotFoundError, UnsupportedFormatError
from medsight.files import atomic_path, atomic_write_text, sha256_bytes, sha256_file
from medsight.image import Geometry, Image, Provenance, SourceFile

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def sidecar_path(path: str | Path) -> Path:
    p = Path(path)
    stem = p.name[: -len(".nii.gz")] if p.name.lower().endswith(".nii.gz") else p.stem
    return p.with_name(stem + ".provenance.json")


def read_nifti(path: str | Path, dtype: np.dtype | type | None = None) -> Image:
    """Read a 3D (or 4D multi-channel) NIfTI file; scaling (scl_slope/inter) is applied by nibabel."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("no such NIfTI file; check the path", path)
    try:
        import nibabel as nib  # imported here: `medsight info` on DICOM never needs it

        raw = _small_nifti1_bytes(path)
        # a small single-file NIfTI-1 is parsed from its bytes: the same header and array code as nib.load
        # without its file-name sniffing and streamed gzip (half the CPU of the ~6,000 demo slice reads)
        img = nib.load(str(path)) if raw is None else nib.Nifti1Image.from_bytes(raw[1])
        affine = img.affine
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated or non-NIfTI bytes
        raise CorruptFileError(f"not a readable NIfTI file ({type(exc).__name__}: {exc}); re-export it", path) from exc
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 5 and data.shape[3] == 1:  # (x, y, z, t=1, c)
        data = data[:, :, :, 0, :]
    if data.ndim not in (3, 4):
        raise UnsupportedFormatError(f"NIfTI with {data.ndim} dimensions is not supported (3D, or 4D channels)", path)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    try:
        geometry = Geometry.from_ras_affine(affine)
    except Exception as exc:
        raise CorruptFileError(f"the NIfTI affine is not a valid orientation ({exc})", path) from exc
    prov = _read_sidecar(path)
    prov_source = Provenance(
        source_files=(SourceFile(str(path), sha256_bytes(raw[0]) if raw is not None else sha256_file(path)),),
        format="nifti",
    )
    if prov is not None:
        prov_source = Provenance.from_dict({**prov.to_dict(), "source_files": [
            {"path": s.path, "sha256": s.sha256} for s in prov.source_files + prov_source.source_files
        ], "format": "nifti"})
    return Image(np.ascontiguousarray(data), geometry, prov_source)


SMALL_FILE_BYTES = 8 << 20  # files up to this size are read whole (twice the memory of streaming, briefly)


def _small_nifti1_bytes(path: Path) -> tuple[bytes, bytes] | None:
    """(file bytes, NIfTI bytes) of a small single-file NIfTI-1 (magic ``n+1``, header size 348); None for
    anything else (NIfTI-2, a pair, a large volume), which ``nib.load`` reads as before."""
    import gzip
    import zlib

    if path.stat().st_size > SMALL_FILE_BYTES:
        return None
    raw = path.read_bytes()
    if path.name.lower().endswith(".gz") and int.from_bytes(raw[-4:], "little") > 4 * SMALL_FILE_BYTES:
        return None  # gzip's trailer: a well-compressed large volume (a label map) is streamed as before
    try:
        data = gzip.decompress(raw) if path.name.lower().endswith(".gz") else raw
    except (OSError, EOFError, zlib.error):
        return None  # nib.load reports it
    if len(data) < 352 or data[344:348] != b"n+1\x00" or data[:4] not in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"):
        return None
    return raw, data


def write_nifti(image: Image, path: str | Path, dtype: np.dtype | type | None = None, sidecar: bool = True,
                durable: bool = True) -> Path:
    """Write ``image`` to ``path`` (.nii or .nii.gz) atomically; returns the path written (``durable``: see
    files.atomic_path)."""
    path = Path(path)
    if not is_nifti(path):
        raise UnsupportedFormatError("NIfTI output must end in .nii or .nii.gz", path)
    if image.geometry.ndim != 3:
        geometry = Geometry(
            image.spacing + (1.0,),
            image.geometry.origin + (0.0,),
            tuple(tuple(r) + (0.0,) for r in image.geometry.direction) + ((0.0, 0.0, 1.0),),
        )
        array = image.array[:, :, None, ...]
    else:
        geometry, array = image.geometry, image.array
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    import nibabel as nib

    nii = _nifti1(array, geometry)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    with atomic_path(path, suffix=suffix, durable=durable) as tmp:
        nib.save(nii, str(tmp))
    if sidecar:
        atomic_write_text(sidecar_path(path), json.dumps(image.provenance.to_dict(), indent=2, sort_keys=True))
    return path


def _nifti1(array: np.ndarray, geometry: Geometry):  # noqa: ANN202 - nibabel.Nifti1Image
    import nibabel as nib

    nii = nib.Nifti1Image(array, geometry.ras_affine())
    nii.set_qform(geometry.ras_affine(), code=1)
    nii.set_sform(geometry.ras_affine(), code=1)
    nii.header.set_xyzt_units("mm", "sec")
    return nii


# byte offsets in the NIfTI-1 header of the affine's translation: qoffset_x/y/z and srow_x/y/z[3] (float32)
_QOFFSET, _SROW_T = 268, (292, 308, 324)


class NiftiSliceWriter:
    """``write_nifti`` (``sidecar=False``, ``.nii.gz``) for many small images that differ only in voxels and
    origin, such as the axial slices of one volume: nibabel builds the header once per grid and each file patches
    its translation (the qform rotation and zooms do not depend on it), then one zlib call. Same decompressed
    bytes as ``write_nifti`` (tests/io/test_nifti_slices.py), ~10x less CPU (the demo writes ~6,000 slices)."""

    def __init__(self) -> None:
        self._headers: dict[tuple, tuple[bytes, str]] = {}  # grid -> (header + extension flag, byte order)

    def write(self, image: Image, path: str | Path, dtype: np.dtype | type | None = None,
              durable: bool = True) -> Path:
        import gzip
        import struct

        path = Path(path)
        array = image.array if dtype is None else image.array.astype(dtype, copy=False)
        if image.geometry.ndim != 3 or array.ndim != 3 or array.dtype.kind not in "iu" or not path.name.endswith(
                ".nii.gz"):
            return write_nifti(image, path, dtype=dtype, sidecar=False, durable=durable)
        geometry = image.geometry
        key = (array.shape, array.dtype.str, geometry.spacing, geometry.direction)
        if key not in self._headers:
            nii = _nifti1(array, geometry)
            whole = nii.to_bytes()
            self._headers[key] = (whole[: len(whole) - array.nbytes], nii.header.endianness)
        header, order = self._headers[key]
        head = bytearray(header)
        t = np.asarray(geometry.ras_affine()[:3, 3], dtype=np.float32)
        struct.pack_into(f"{order}3f", head, _QOFFSET, *t)
        for offset, v in zip(_SROW_T, t):
            struct.pack_into(f"{order}f", head, offset, v)
        voxels = array.astype(array.dtype.newbyteorder(order), copy=False).tobytes("F")
        data = gzip.compress(bytes(head) + voxels, compresslevel=1, mtime=0)
        with atomic_path(path, suffix=".nii.gz", durable=durable) as tmp:
            tmp.write_bytes(data)
        return path


def _read_sidecar(path: Path) -> Provenance | None:
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        return Provenance.from_dict(json.loads(side.read_text()))
    except (ValueError, KeyError, TypeError):
        return None
