"""The reader's fast paths against independent references: pydicom's own ``pixel_array`` per file (decoded by
pydicom, not by our frombuffer/imagecodecs code), the generator's known slice values, and SimpleITK.

Series come from benchmarks/dicom_series.py (pydicom-data's 693_UNCI.dcm, shuffled file names) stored
uncompressed, as JPEG 2000 lossless and as RLE lossless.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import slice_pixels, write_series as write_small_series, write_slice
from pydicom.uid import generate_uid

import medsight.io.dicom.decode as decode_mod
from medsight.cli.main import main
from medsight.io.dicom import read_dicom

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from dicom_series import STEP_MM, slice_values, template_path, write_series  # noqa: E402

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
N = 5


@pytest.fixture(scope="module")
def template() -> Path:
    path = template_path()
    if path is None:
        pytest.skip("pydicom-data's 693_UNCI.dcm is not installed")
    return path


def _expected(template: Path, n: int) -> np.ndarray:
    """Slice k's stored values from the generator, rescaled by hand (slope 1, intercept from the template)."""
    tpl = pydicom.dcmread(template)
    assert float(tpl.RescaleSlope) == 1.0
    base = tpl.pixel_array
    return np.stack([slice_values(base, k).astype(np.int32) + int(float(tpl.RescaleIntercept))
                     for k in range(n)], axis=-1).transpose(1, 0, 2)


@pytest.mark.parametrize("syntax", ["uncompressed", "jpeg2000", "rle"])
@pytest.mark.parametrize("threads", [1, 2])
def test_series_voxels_and_geometry_for_every_syntax(tmp_path: Path, template: Path, syntax: str, threads: int,
                                                     monkeypatch) -> None:
    paths = write_series(tmp_path, N, syntax)
    assert [p.name for p in paths] != sorted(p.name for p in paths)  # names shuffled against positions
    monkeypatch.setattr(decode_mod, "DECODE_THREADS", threads)
    img = read_dicom(tmp_path)
    np.testing.assert_array_equal(img.array, _expected(template, N))
    assert img.array.dtype == np.int16
    # each file decoded by pydicom itself, in position order, equals our stored values
    raw = np.stack([pydicom.dcmread(p).pixel_array for p in paths], axis=-1).transpose(1, 0, 2)
    np.testing.assert_array_equal(img.array, raw.astype(np.int32) + int(float(pydicom.dcmread(paths[0])
                                                                              .RescaleIntercept)))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path)))
    ref = reader.Execute()
    np.testing.assert_array_equal(img.array, sitk.GetArrayFromImage(ref).transpose(2, 1, 0))
    np.testing.assert_allclose(img.spacing, ref.GetSpacing(), atol=1e-6)
    assert img.spacing[2] == pytest.approx(STEP_MM)
    np.testing.assert_allclose(img.geometry.origin, ref.GetOrigin(), atol=1e-6)
    assert [s.path for s in img.provenance.source_files] == [str(p) for p in paths]  # position order


@pytest.mark.parametrize(("signed", "bits_stored", "bits_allocated"),
                         [(True, 12, 16), (False, 12, 16), (True, 16, 16), (False, 10, 16), (False, 8, 8),
                          (True, 20, 32)])
def test_frombuffer_path_equals_pydicom_pixel_array(tmp_path: Path, signed: bool, bits_stored: int,
                                                    bits_allocated: int) -> None:
    """Garbage in the unused high bits too: pydicom masks (unsigned) or sign-extends (signed) them."""
    rng = np.random.default_rng(bits_stored + 100 * signed)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
    info = np.iinfo(dtype)
    pixels = rng.integers(info.min, info.max, size=(7, 9), endpoint=True).astype(dtype)
    path = write_slice(tmp_path / "a.dcm", slice_pixels(0, 7, 9), (0, 0, 0), AXIAL, generate_uid(), 1,
                       slope=1.0, intercept=0.0)
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    expected = pydicom.dcmread(path).pixel_array
    got = read_dicom(path).array[:, :, 0]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected.T)
    if bits_stored < bits_allocated:
        assert not np.array_equal(expected, pixels)  # the high bits did matter


def test_each_file_is_read_and_parsed_once(tmp_path: Path, monkeypatch, capsys) -> None:
    write_small_series(tmp_path, [(0, 0, 2.0 * k) for k in range(6)], AXIAL, order=[3, 0, 5, 1, 4, 2])
    reads: list[str] = []
    parses: list[object] = []
    real_read, real_parse = Path.read_bytes, pydicom.dcmread
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or real_read(self))
    monkeypatch.setattr(pydicom, "dcmread", lambda *a, **k: parses.append(a[0]) or real_parse(*a, **k))
    img = read_dicom(tmp_path)
    assert sorted(reads) == sorted(p.name for p in tmp_path.iterdir()) and len(parses) == 6
    np.testing.assert_array_equal(img.array[:, :, 3], slice_pixels(3).T.astype(np.int32) - 1024)
    reads.clear()
    parses.clear()
    main(["-q", "info", "--json", str(tmp_path)])  # lists the series and describes it from one scan
    assert '"n_slices": 6' in capsys.readouterr().out
    assert len(reads) == 6 and len(parses) == 6


def test_picked_series_from_a_mixed_folder(tmp_path: Path) -> None:
    write_small_series(tmp_path, [(0, 0, z) for z in (0, 2, 4)], AXIAL, series_uid="1.2.3.1", prefix="a")
    write_small_series(tmp_path, [(0, 0, z) for z in (0, 3)], AXIAL, series_uid="1.2.3.2", prefix="b")
    img = read_dicom(tmp_path, series_uid="1.2.3.2")
    assert img.shape[2] == 2 and img.spacing[2] == pytest.approx(3.0)
    np.testing.assert_array_equal(img.array[:, :, 1], slice_pixels(1).T.astype(np.int32) - 1024)


@pytest.mark.parametrize("threads", [1, 2])
def test_damaged_frame_in_a_compressed_series_names_its_file(tmp_path: Path, template: Path, threads: int,
                                                             monkeypatch) -> None:
    from pydicom.encaps import encapsulate

    from medsight.errors import CorruptFileError

    paths = write_series(tmp_path, 6, "rle")
    ds = pydicom.dcmread(paths[3])
    ds.PixelData = encapsulate([b"\x01\x00\x00\x00" + b"\x00" * 60 + b"\x05garbage"])  # a bad RLE segment table
    ds.save_as(paths[3])
    monkeypatch.setattr(decode_mod, "DECODE_THREADS", threads)
    with pytest.raises(CorruptFileError, match=paths[3].name + ": pixel data could not be decoded"):
        read_dicom(tmp_path)
