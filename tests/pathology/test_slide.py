"""The slide reader against OpenSlide and tiffslide run side by side on the real SVS, and wsidicom's DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest

from medsight.io.slide import MissingPixelSizeError, is_dicom_slide, is_slide_path, open_slide


def test_describe_matches_openslide(real_svs: Path) -> None:
    ref = openslide.OpenSlide(str(real_svs))
    with open_slide(real_svs) as s:
        d = s.describe()
    assert d["dimensions"] == list(ref.dimensions) == [2220, 2967]
    assert d["mpp"] == float(ref.properties["openslide.mpp-x"]) == 0.499 and d["mpp_source"] == "file"
    assert d["objective_power"] == 20.0
    assert d["associated_images"] == sorted(ref.associated_images) == ["label", "macro", "thumbnail"]


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_native_tile_equals_openslide_read_region(real_svs: Path, backend: str) -> None:
    ref = openslide.OpenSlide(str(real_svs))
    with open_slide(real_svs, backend=backend) as s:
        for x, y in [(0, 0), (731, 1219), (1900, 2700)]:
            ours = s.read_region_mpp(x, y, 0.499, 256, 256)
            theirs = np.asarray(ref.read_region((x, y), 0, (256, 256)).convert("RGB"))
            assert np.array_equal(ours, theirs)


def test_read_by_mpp_averages_2x2_blocks(real_svs: Path) -> None:
    """At twice the pixel size each output pixel is the mean of a 2x2 block of level 0 (no other level exists)."""
    ref = np.asarray(openslide.OpenSlide(str(real_svs)).read_region((400, 800), 0, (200, 200)).convert("RGB"))
    expected = ref.astype(np.float64).reshape(100, 2, 100, 2, 3).mean((1, 3))
    with open_slide(real_svs) as s:
        ours = s.read_region_mpp(400, 800, 0.998, 100, 100)
    assert np.abs(ours - expected).max() <= 1.0


def test_associated_image_is_the_label(real_svs: Path) -> None:
    ref = np.asarray(openslide.OpenSlide(str(real_svs)).associated_images["label"].convert("RGB"))
    with open_slide(real_svs) as s:
        assert np.array_equal(s.associated_image("label"), ref)


def test_missing_mpp_is_refused_unless_given(no_mpp_tiff: Path) -> None:
    with pytest.raises(MissingPixelSizeError, match="--mpp"):
        open_slide(no_mpp_tiff)
    with open_slide(no_mpp_tiff, mpp=0.5) as s:
        assert (s.mpp, s.mpp_source) == (0.5, "user")
        assert [lv.downsample for lv in s.levels] == [1.0, 4.0]


def test_dicom_wsi_written_by_wsidicom_is_read(real_svs: Path, dicom_wsi: Path) -> None:
    assert is_dicom_slide(dicom_wsi) and is_slide_path(dicom_wsi)
    ref = openslide.OpenSlide(str(real_svs))
    with open_slide(dicom_wsi) as s:
        assert s.backend == "wsidicom" and s.mpp == pytest.approx(0.499)
        assert s.dimensions == ref.dimensions
        assert [lv.downsample for lv in s.levels] == [1.0, 2.0, 4.0]
        ours = s.read_region(600, 900, 0, 300, 300).astype(np.float64)
        low = s.read_region_mpp(600, 900, 0.998, 150, 150).astype(np.float64)  # read from level 1
    theirs = np.asarray(ref.read_region((600, 900), 0, (300, 300)).convert("RGB")).astype(np.float64)
    assert np.abs(ours - theirs).mean() < 3.0  # JPEG re-encoding only
    halved = theirs.reshape(150, 2, 150, 2, 3).mean((1, 3))
    assert np.abs(low - halved).mean() < 4.0


def test_plain_dicom_is_not_a_slide(dicom_test_file) -> None:  # noqa: ANN001 - conftest fixture
    assert not is_dicom_slide(dicom_test_file("CT_small.dcm"))
