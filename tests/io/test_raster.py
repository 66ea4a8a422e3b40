"""PNG/JPEG/TIFF reading: voxels equal Pillow's decoding (transposed to [i, j]), identity geometry, provenance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from medsight.errors import CorruptFileError, UnsupportedFormatError
from medsight.io import read_image
from medsight.io.raster import read_raster

GREY = (np.arange(7 * 12).reshape(7, 12) * 3 % 256).astype(np.uint8)  # 7 rows x 12 columns


def test_greyscale_png_is_2d_identity_geometry(tmp_path: Path) -> None:
    path = tmp_path / "g.png"
    PILImage.fromarray(GREY).save(path)
    img = read_image(path)
    assert img.shape == (12, 7) and not img.is_multichannel
    np.testing.assert_array_equal(img.array, GREY.T)
    assert img.array[11, 0] == GREY[0, 11]  # i along the row, j down the image
    assert img.geometry.spacing == (1.0, 1.0) and img.geometry.origin == (0.0, 0.0)
    assert img.provenance.format == "png"
    assert img.provenance.source_files[0].sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_rgb_jpeg_keeps_channels(tmp_path: Path) -> None:
    rgb = np.stack([GREY, 255 - GREY, np.full_like(GREY, 128)], axis=-1)
    path = tmp_path / "c.jpg"
    PILImage.fromarray(rgb).save(path, quality=95)
    img = read_raster(path)
    assert img.shape == (12, 7) and img.is_multichannel and img.array.shape == (12, 7, 3)
    with PILImage.open(path) as ref:  # lossy: compare with the decoder's output, not the original
        np.testing.assert_array_equal(img.array, np.swapaxes(np.asarray(ref), 0, 1))
    assert img.provenance.format == "jpeg"


def test_16bit_tiff_and_palette_png(tmp_path: Path) -> None:
    deep = GREY.astype(np.uint16) * 257
    PILImage.fromarray(deep).save(tmp_path / "d.tif")
    img = read_raster(tmp_path / "d.tif")
    assert img.array.dtype == np.uint16 and img.provenance.format == "tiff"
    np.testing.assert_array_equal(img.array, deep.T)
    PILImage.fromarray(GREY).convert("P").save(tmp_path / "p.png")
    pal = read_raster(tmp_path / "p.png")
    assert pal.array.shape == (12, 7, 3)  # palette expanded to RGB


def test_corrupt_and_multipage_rasters_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(CorruptFileError, match=r"broken\.png: not a readable image"):
        read_raster(tmp_path / "broken.png")
    frames = [PILImage.fromarray(GREY), PILImage.fromarray(255 - GREY)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedFormatError, match=r"pages\.tif: 2-page TIFF"):
        read_raster(tmp_path / "pages.tif")
