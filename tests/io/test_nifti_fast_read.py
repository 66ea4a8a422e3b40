"""read_nifti's in-memory path for small NIfTI-1 files gives what nib.load gives (array, dtype, affine, hash),
and leaves everything else (NIfTI-2, scaled data, large or damaged files) to nib.load as before."""

from __future__ import annotations

import gzip
import hashlib

import nibabel as nib
import numpy as np
import pytest

from medsight.errors import CorruptFileError
from medsight.io import nifti
from medsight.io.nifti import read_nifti


def _by_nibabel(path):  # noqa: ANN001, ANN202 - the reference: nib.load as read_nifti used it before
    img = nib.load(str(path))
    return np.ascontiguousarray(np.asanyarray(img.dataobj)), img.affine


def _affine() -> np.ndarray:
    a = np.diag([-1.8, -1.8, 2.4, 1.0])
    a[:3, 3] = (91.3, 120.7, -70.2)
    return a


@pytest.mark.parametrize("name,make", [
    ("int16.nii.gz", lambda: nib.Nifti1Image(np.arange(7 * 5 * 3, dtype=np.int16).reshape(7, 5, 3) - 40, _affine())),
    ("uint8.nii", lambda: nib.Nifti1Image((np.arange(60) % 4).astype(np.uint8).reshape(5, 4, 3), _affine())),
    ("scaled.nii.gz", lambda: _scaled()),
    ("float4d.nii.gz", lambda: nib.Nifti1Image(np.linspace(-1, 1, 120, dtype=np.float32).reshape(5, 4, 3, 2),
                                               _affine())),
    ("nifti2.nii.gz", lambda: nib.Nifti2Image(np.arange(24, dtype=np.int32).reshape(4, 3, 2), _affine())),
])
def test_same_image_as_nib_load(tmp_path, name, make) -> None:  # noqa: ANN001
    path = tmp_path / name
    nib.save(make(), str(path))
    got = read_nifti(path)
    ref, affine = _by_nibabel(path)
    assert got.array.dtype == ref.dtype and got.array.tobytes() == ref.tobytes()
    assert got.array.flags.writeable and got.array.flags.c_contiguous
    np.testing.assert_array_equal(got.geometry.ras_affine(), nifti.Geometry.from_ras_affine(affine).ras_affine())
    assert got.provenance.source_files[-1].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def _scaled() -> nib.Nifti1Image:
    img = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(4, 3, 2), _affine())
    img.header.set_slope_inter(0.5, -3.0)
    return img


def test_which_files_take_the_in_memory_path(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    small = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), _affine()), str(small))
    assert nifti._small_nifti1_bytes(small) is not None
    two = tmp_path / "b.nii.gz"
    nib.save(nib.Nifti2Image(np.zeros((4, 4, 4), np.int16), _affine()), str(two))
    assert nifti._small_nifti1_bytes(two) is None  # NIfTI-2: nib.load, never a NIfTI-1 parse of it
    monkeypatch.setattr(nifti, "SMALL_FILE_BYTES", 16)
    assert nifti._small_nifti1_bytes(small) is None  # large: streamed by nib.load


def test_damaged_small_file_is_still_a_corrupt_file_error(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "t.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(512, dtype=np.int16).reshape(8, 8, 8), _affine()), str(path))
    path.write_bytes(path.read_bytes()[:-30])  # truncated gzip stream
    with pytest.raises(CorruptFileError):
        read_nifti(path)
    raw = bytearray(gzip.decompress(gzip.compress(b"\0" * 400)))
    (tmp_path / "z.nii").write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError):
        read_nifti(tmp_path / "z.nii")
