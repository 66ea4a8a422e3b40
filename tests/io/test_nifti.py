"""NIfTI round trip: voxels and world positions survive, checked against SimpleITK's reading of our file."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medsight.errors import CorruptFileError, UnsupportedFormatError
from medsight.image import Geometry, Image, Provenance
from medsight.io.nifti import read_nifti, sidecar_path, write_nifti


def test_round_trip_keeps_voxels_geometry_and_provenance(tmp_path: Path) -> None:
    direction = ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, -1.0))
    g = Geometry((0.8, 0.9, 2.5), (10.0, -20.0, 30.0), direction)
    arr = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    img = Image(arr, g, Provenance(modality="MR").with_step("demo"))
    out = write_nifti(img, tmp_path / "case.nii.gz")
    back = read_nifti(out)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.geometry.affine, g.affine, atol=1e-5)
    assert back.provenance.modality == "MR" and back.provenance.steps[0].name == "demo"
    assert sidecar_path(out).name == "case.provenance.json"
    ref = sitk.ReadImage(str(out))  # SimpleITK reports LPS physical points
    np.testing.assert_allclose(ref.TransformIndexToPhysicalPoint((2, 3, 4)), g.index_to_world((2, 3, 4)), atol=1e-4)
    # SimpleITK's array is (z, y, x): the same voxel.
    assert sitk.GetArrayFromImage(ref)[4, 3, 2] == pytest.approx(arr[2, 3, 4])


def test_corrupt_nifti_is_a_user_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(CorruptFileError, match="broken.nii.gz"):
        read_nifti(bad)


def test_bad_output_name_writes_nothing(tmp_path: Path) -> None:
    img = Image(np.zeros((2, 2, 2), np.float32), Geometry.identity(3))
    with pytest.raises(UnsupportedFormatError):
        write_nifti(img, tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []
