"""DICOM reading checked against SimpleITK (an independent reader) and against positions worked out by hand.

SimpleITK's array is (z, y, x) and its physical points are LPS mm, so ``ours[i, j, k] == sitk_array[k, j, i]`` and
``ours.world(idx) == sitk.TransformIndexToPhysicalPoint(idx)`` wherever both describe the grid the same way. Where
the two choose different but equivalent grids (SimpleITK keeps file order and a left-handed frame for the
enhanced CT), we compare value-at-world-position for every voxel instead.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import COLS, ROWS, slice_pixels, write_series, write_slice
from pydicom.uid import generate_uid

from medsight.errors import (
    CorruptFileError,
    GeometryError,
    InputNotFoundError,
    MissingPixelDataError,
    MixedSeriesError,
    UnsupportedFormatError,
)
from medsight.io import read_image
from medsight.io.dicom import list_series, read_dicom
from medsight.io.nifti import read_nifti, write_nifti

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def _assert_same_world_values(ours, ref: sitk.Image) -> None:
    """Every voxel of ``ref``: its world point maps to an integer index of ours holding the same value."""
    size = np.array(ref.GetSize())
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    lin = np.array(ref.GetDirection()).reshape(3, 3) * np.array(ref.GetSpacing())
    world = idx @ lin.T + np.array(ref.GetOrigin())
    ours_idx = ours.geometry.world_to_index(world)
    np.testing.assert_allclose(ours_idx, np.round(ours_idx), atol=1e-3)
    o = np.round(ours_idx).astype(int)
    ref_arr = sitk.GetArrayFromImage(ref)  # (z, y, x)
    np.testing.assert_array_equal(ours.array[o[:, 0], o[:, 1], o[:, 2]], ref_arr[idx[:, 2], idx[:, 1], idx[:, 0]])


# ------------------------------------------------------------------------------------------- real shipped files
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_jp2klossless.dcm", "MR_small_bigendian.dcm"])
def test_real_file_voxels_spacing_and_world_positions_match_simpleitk(name: str, dicom_test_file) -> None:
    path = dicom_test_file(name)
    img = read_dicom(path)
    ref = sitk.ReadImage(str(path))
    assert img.shape == ref.GetSize()
    np.testing.assert_allclose(img.spacing[:2], ref.GetSpacing()[:2], rtol=1e-9)
    np.testing.assert_array_equal(img.array, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    nx, ny, _ = img.shape
    for index in [(0, 0, 0), (5, 17, 0), (nx - 1, ny - 1, 0), (nx - 1, 0, 0)]:
        np.testing.assert_allclose(img.world(index), ref.TransformIndexToPhysicalPoint(index), atol=1e-4)


def test_ct_small_is_in_hounsfield_units_with_provenance(dicom_test_file) -> None:
    path = dicom_test_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_dicom(path)
    # HU = stored * RescaleSlope + RescaleIntercept (1, -1024 in this file), by hand from pydicom's raw pixels.
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    np.testing.assert_array_equal(img.array[:, :, 0], ds.pixel_array.T.astype(np.int32) - 1024)
    assert img.array.dtype == np.int16 and img.array.min() < 0
    p = img.provenance
    assert (p.format, p.modality, p.manufacturer, p.scanner_model) == ("dicom", "CT", "GE MEDICAL SYSTEMS", "RHAPSODE")
    assert p.acquisition["KVP"] == 120.0 and p.acquisition["ConvolutionKernel"] == "STANDARD"
    assert p.source_files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert p.series_uid == ds.SeriesInstanceUID
    assert "PatientName" not in p.to_json() and str(ds.PatientName) not in p.to_json()


def test_enhanced_ct_frames_are_placed_by_their_functional_group_positions(dicom_test_file) -> None:
    path = dicom_test_file("eCT_Supplemental.dcm")
    img = read_dicom(path)
    assert img.shape == (512, 512, 2) and img.spacing == pytest.approx((0.388672, 0.388672, 10.0))
    # Frame positions are z = -159 and -149; IOP rows (-1,0,0), cols (0,1,0) -> normal (0,0,-1): k=0 at z=-149.
    np.testing.assert_allclose(img.geometry.origin, (99.5, -301.5, -149.0))
    _assert_same_world_values(img, sitk.ReadImage(str(path)))
    assert img.array.min() == -1024  # PixelValueTransformation intercept -1024 applied


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG1_J2KR.dcm"])
def test_chest_cr_reads_as_2d_monochrome1_inverted(name: str, dicom_test_file) -> None:
    path = dicom_test_file(name)
    img = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert img.geometry.ndim == 2 and img.shape == (1841, 1955)  # Columns x Rows
    # The file's PixelSpacing is "0.000\\0.000" and it has no ImagerPixelSpacing: spacing unknown -> 1 px.
    assert img.spacing == (1.0, 1.0)
    assert img.provenance.acquisition["pixel_spacing_source"].startswith("none")
    assert img.provenance.modality == "CR" and img.provenance.body_part == "CHEST"
    # MONOCHROME1, BitsStored 15: higher = brighter after (2**15 - 1) - stored.
    np.testing.assert_array_equal(img.array, (2**15 - 1) - ds.pixel_array.T.astype(np.int64))
    assert [s.name for s in img.provenance.steps] == ["monochrome1_inverted"]
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0]  # GDCM inverts MONOCHROME1 the same way
    np.testing.assert_array_equal(img.array, ref.T)


def test_projection_image_falls_back_to_imager_pixel_spacing(tmp_path: Path) -> None:
    path = write_slice(tmp_path / "dx.dcm", slice_pixels(0), None, None, generate_uid(), 1, pixel_spacing=None,
                       intercept=0.0, modality="DX", ImagerPixelSpacing=["0.15", "0.14"])
    img = read_dicom(path)
    assert img.geometry.ndim == 2 and img.shape == (COLS, ROWS)
    assert img.spacing == (0.14, 0.15)  # (along i = column spacing, along j = row spacing)
    assert img.provenance.acquisition["pixel_spacing_source"] == "ImagerPixelSpacing"
    np.testing.assert_array_equal(img.array, slice_pixels(0).T)


# ------------------------------------------------------------------------------------------- built series
def test_slices_are_sorted_by_position_not_by_name_or_instance_number(tmp_path: Path) -> None:
    positions = [(-10.0, 20.0, z) for z in (10.0, 12.5, 15.0, 17.5, 20.0)]
    write_series(tmp_path / "s", positions, AXIAL, order=[3, 0, 4, 1, 2])
    img = read_dicom(tmp_path / "s")
    assert img.shape == (COLS, ROWS, 5)
    for k in range(5):  # k-th along +z holds the k-th slice written, whatever its name and number
        np.testing.assert_array_equal(img.array[:, :, k], slice_pixels(k).T.astype(np.int32) - 1024)
    assert img.spacing == pytest.approx((0.6, 0.7, 2.5))  # measured, not SliceThickness 9.9
    np.testing.assert_allclose(img.geometry.origin, positions[0])
    assert len(img.provenance.source_files) == 5
    _assert_same_world_values(img, _sitk_series(tmp_path / "s"))


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis) / np.linalg.norm(axis)
    t = math.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * k @ k


@pytest.mark.parametrize("orientation", [
    pytest.param((0.0, 1.0, 0.0, 0.0, 0.0, -1.0), id="sagittal"),
    pytest.param((1.0, 0.0, 0.0, 0.0, 0.0, -1.0), id="coronal"),
    pytest.param(tuple(_rotation((1, 2, 3), 30)[:, 0]) + tuple(_rotation((1, 2, 3), 30)[:, 1]), id="oblique"),
])
def test_non_axial_series_world_coordinates_match_simpleitk(tmp_path: Path, orientation) -> None:
    r, c = np.array(orientation[:3]), np.array(orientation[3:])
    n = np.cross(r, c)
    p0 = np.array([12.0, -30.0, 45.0])
    positions = [tuple(p0 + k * 1.8 * n) for k in range(4)]
    write_series(tmp_path / "s", positions, orientation, order=[2, 3, 0, 1])
    img = read_dicom(tmp_path / "s")
    ref = _sitk_series(tmp_path / "s")
    assert img.spacing == pytest.approx(ref.GetSpacing())
    for index in [(0, 0, 0), (COLS - 1, 2, 1), (3, ROWS - 1, 3)]:
        np.testing.assert_allclose(img.world(index), ref.TransformIndexToPhysicalPoint(index), atol=1e-4)
    _assert_same_world_values(img, ref)
    # By hand: voxel (i, j, k) of slice k sits at IPP_k + i * col_spacing * r + j * row_spacing * c.
    np.testing.assert_allclose(img.world((4, 5, 2)), np.array(positions[2]) + 4 * 0.6 * r + 5 * 0.7 * c, atol=1e-4)


def test_gantry_tilt_is_resampled_onto_an_orthogonal_grid(tmp_path: Path) -> None:
    # Each slice origin moves 2.0 mm along the normal and 0.7 mm (one row) along the column direction: 19.29 deg.
    positions = [(0.0, 0.7 * k, 2.0 * k) for k in range(5)]
    write_series(tmp_path / "tilt", positions, AXIAL, order=[4, 2, 0, 3, 1])
    img = read_dicom(tmp_path / "tilt")
    steps = {s.name: s.params for s in img.provenance.steps}
    assert steps["gantry_tilt_resampled"]["tilt_deg"] == pytest.approx(math.degrees(math.atan(0.35)), abs=1e-3)
    assert img.spacing == pytest.approx((0.6, 0.7, 2.0))
    for k in range(5):
        raw = slice_pixels(k).astype(np.float64) - 1024  # [row j, col i]
        for j in range(ROWS):
            for i in range(COLS):
                world = np.array(positions[k]) + i * 0.6 * np.array([1, 0, 0]) + j * 0.7 * np.array([0, 1, 0])
                idx = img.geometry.world_to_index(world)
                np.testing.assert_allclose(idx, (i, j + k, k), atol=1e-6)
                if j + k < ROWS:
                    assert img.array[i, j + k, k] == pytest.approx(raw[j, i])


def test_dicom_to_nifti_round_trip_keeps_voxels_and_world_coordinates(tmp_path: Path) -> None:
    orientation = tuple(_rotation((0, 1, 1), 20)[:, 0]) + tuple(_rotation((0, 1, 1), 20)[:, 1])
    n = np.cross(orientation[:3], orientation[3:])
    write_series(tmp_path / "s", [tuple(np.array([5.0, 6.0, 7.0]) + k * 3.0 * n) for k in range(3)], orientation,
                 order=[1, 2, 0])
    img = read_dicom(tmp_path / "s")
    out = write_nifti(img, tmp_path / "out" / "case.nii.gz")
    back = read_nifti(out)
    np.testing.assert_array_equal(back.array, img.array)
    np.testing.assert_allclose(back.geometry.affine, img.geometry.affine, atol=1e-5)
    assert back.provenance.series_uid == img.provenance.series_uid
    ref_dicom, ref_nifti = _sitk_series(tmp_path / "s"), sitk.ReadImage(str(out))
    for index in [(0, 0, 0), (5, 7, 2), (2, 3, 1)]:
        np.testing.assert_allclose(ref_nifti.TransformIndexToPhysicalPoint(index),
                                   ref_dicom.TransformIndexToPhysicalPoint(index), atol=1e-4)
        np.testing.assert_allclose(back.world(index), ref_dicom.TransformIndexToPhysicalPoint(index), atol=1e-4)
        assert back.array[index] == ref_dicom[index]


def test_list_series_reports_every_series_and_read_image_reads_one(tmp_path: Path) -> None:
    a, b = "1.2.826.0.1.3680043.8.498.10", "1.2.826.0.1.3680043.8.498.11"
    write_series(tmp_path, [(0, 0, z) for z in (0, 2, 4)], AXIAL, series_uid=a, prefix="a")
    write_series(tmp_path / "sub", [(0, 0, z) for z in (0, 3, 6, 12)], AXIAL, series_uid=b, prefix="b")
    (tmp_path / "README.txt").write_text("not dicom")
    infos = {s.series_uid: s for s in list_series(tmp_path)}
    assert set(infos) == {a, b}
    assert infos[a].n_files == 3 and infos[a].shape == (COLS, ROWS, 3) and infos[a].spacing == pytest.approx(
        (0.6, 0.7, 2.0)) and infos[a].orientation == "LPS" and infos[a].problem is None
    assert infos[b].shape is None and "uneven slice spacing" in infos[b].problem
    img = read_image(tmp_path / "sub" / "b000.dcm")  # a single file of a series reads as one slice
    assert img.shape == (COLS, ROWS, 1)


# ------------------------------------------------------------------------------------------- bad inputs
def test_mixed_series_lists_them_and_says_how_to_pick(tmp_path: Path) -> None:
    a, b = "1.2.826.0.1.3680043.8.498.20", "1.2.826.0.1.3680043.8.498.21"
    write_series(tmp_path, [(0, 0, z) for z in (0, 2)], AXIAL, series_uid=a, prefix="a")
    write_series(tmp_path, [(0, 0, z) for z in (0, 2, 4)], AXIAL, series_uid=b, prefix="b")
    before = _tree(tmp_path)
    with pytest.raises(MixedSeriesError) as err:
        read_dicom(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and a in msg and b in msg and "--series UID" in msg and str(tmp_path) in msg
    assert _tree(tmp_path) == before
    assert read_dicom(tmp_path, series_uid=b).shape == (COLS, ROWS, 3)
    with pytest.raises(InputNotFoundError, match="no series 9.9.9"):
        read_dicom(tmp_path, series_uid="9.9.9")


def test_gap_in_slice_positions_is_refused(tmp_path: Path) -> None:
    write_series(tmp_path, [(0, 0, z) for z in (0.0, 2.0, 4.0, 8.0, 10.0)], AXIAL, order=[0, 1, 2, 3, 4])
    before = _tree(tmp_path)
    with pytest.raises(GeometryError, match=r"uneven slice spacing - 4\.000 mm between img002\.dcm and img003\.dcm "
                                            r"where the rest are 2\.000 mm"):
        read_dicom(tmp_path)
    assert _tree(tmp_path) == before


def test_two_slices_at_one_position_are_refused(tmp_path: Path) -> None:
    write_series(tmp_path, [(0, 0, z) for z in (0.0, 2.0, 2.0, 4.0)], AXIAL)
    with pytest.raises(GeometryError, match="same position.*several volumes"):
        read_dicom(tmp_path)


def test_mixed_orientations_in_one_series_are_refused(tmp_path: Path) -> None:
    uid = generate_uid()
    write_series(tmp_path, [(0, 0, 0), (0, 0, 2)], AXIAL, series_uid=uid, prefix="ax")
    write_slice(tmp_path / "loc.dcm", slice_pixels(0), (0, 0, 0), (0, 1, 0, 0, 0, -1), uid, 9)
    with pytest.raises(GeometryError, match="different orientations.*localizer"):
        read_dicom(tmp_path)


def test_garbage_and_truncated_files_are_corrupt(tmp_path: Path, dicom_test_file) -> None:
    (tmp_path / "garbage.dcm").write_bytes(b"\x00" * 40 + b"this is not a DICOM file")
    data = dicom_test_file("CT_small.dcm").read_bytes()
    (tmp_path / "half.dcm").write_bytes(data[: len(data) * 6 // 10])  # cut inside the pixel data
    (tmp_path / "header_only.dcm").write_bytes(data[:700])  # cut inside the header
    before = _tree(tmp_path)
    with pytest.raises(CorruptFileError, match=r"garbage\.dcm: not a DICOM file.*re-export"):
        read_dicom(tmp_path / "garbage.dcm")
    with pytest.raises(CorruptFileError, match=r"half\.dcm: pixel data is damaged or truncated"):
        read_dicom(tmp_path / "half.dcm")
    with pytest.raises(CorruptFileError, match=r"header_only\.dcm: the header ends before the pixel data"):
        read_dicom(tmp_path / "header_only.dcm")
    assert _tree(tmp_path) == before


def test_a_corrupt_file_inside_a_series_folder_is_named(tmp_path: Path) -> None:
    write_series(tmp_path, [(0, 0, z) for z in (0, 2, 4)], AXIAL)
    (tmp_path / "img999.dcm").write_bytes(b"DICM but not really")
    with pytest.raises(CorruptFileError, match=r"img999\.dcm"):
        read_dicom(tmp_path)


def test_missing_pixel_data(tmp_path: Path) -> None:
    path = write_slice(tmp_path / "nopix.dcm", None, (0, 0, 0), AXIAL, generate_uid(), 1,
                       SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    before = _tree(tmp_path)
    with pytest.raises(MissingPixelDataError, match=r"nopix\.dcm: no pixel data \(SOP class Basic Text SR"):
        read_dicom(path)
    assert _tree(tmp_path) == before


def test_unsupported_transfer_syntax(tmp_path: Path, dicom_test_file) -> None:
    ds = pydicom.dcmread(dicom_test_file("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: encapsulated, no decoder in pydicom
    ds.save_as(tmp_path / "video.dcm")
    before = _tree(tmp_path)
    with pytest.raises(UnsupportedFormatError, match=r"video\.dcm: transfer syntax MPEG2 .*convert the file"):
        read_dicom(tmp_path / "video.dcm")
    assert _tree(tmp_path) == before


def test_multiframe_without_positions_is_refused(dicom_test_file) -> None:
    with pytest.raises(UnsupportedFormatError, match="emri_small.dcm: multi-frame object without per-frame plane"):
        read_dicom(dicom_test_file("emri_small.dcm"))


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputNotFoundError, match="holds no DICOM files"):
        read_dicom(tmp_path)
