"""2D raster images (PNG, JPEG, TIFF, BMP) -> ``Image`` with identity geometry, greyscale or RGB.

These formats carry no patient geometry: spacing is 1.0 (pixels) and the origin is 0. A DPI tag is kept in the
provenance for reference but never used as spacing (screenshots say 72 dpi whatever they show). Palette, CMYK and
greyscale-with-alpha images are converted to RGB / greyscale so downstream code sees two layouts only:
``[i, j]`` or ``[i, j, c]`` (``i`` along a row, ``j`` down the image, as for DICOM).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsight.errors import CorruptFileError, InputNotFoundError, UnsupportedFormatError
from medsight.files import sha256_file
from medsight.image import Geometry, Image, Provenance, SourceFile

_FORMATS = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff", "BMP": "bmp", "MPO": "jpeg"}
# PIL modes -> the mode we keep (None: keep as is)
_CONVERT = {"P": "RGB", "PA": "RGBA", "CMYK": "RGB", "YCbCr": "RGB", "LA": "L", "1": "L", "I;16B": "I;16",
            "I;16L": "I;16"}


def read_raster(path: str | Path) -> Image:
    """Read one 2D PNG/JPEG/TIFF/BMP; multi-page TIFFs are refused (whole-slide images have their own reader)."""
    from PIL import Image as PILImage, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError("no such image file; check the path", path)
    try:
        with PILImage.open(path) as im:
            fmt = _FORMATS.get(im.format or "", (im.format or "").lower())
            if fmt not in _FORMATS.values():
                raise UnsupportedFormatError(f"{im.format} images are not supported; convert to PNG", path)
            if getattr(im, "n_frames", 1) > 1:
                raise UnsupportedFormatError(
                    f"{im.n_frames}-page {im.format}: medsight reads one 2D image per file; split the pages or use "
                    "the whole-slide reader for pyramids", path)
            mode = im.mode
            im.load()
            converted = im.convert(_CONVERT[mode]) if mode in _CONVERT else im
            array = np.asarray(converted)
            dpi = im.info.get("dpi")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(f"not a readable image ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
                               "re-export it", path) from exc
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3):
        raise UnsupportedFormatError(f"unexpected pixel layout {array.shape}", path)
    acquisition: dict[str, object] = {"pil_mode": mode}
    if dpi:
        acquisition["dpi"] = [float(d) for d in dpi]
    prov = Provenance(source_files=(SourceFile(str(path), sha256_file(path)),), format=fmt, acquisition=acquisition)
    return Image(np.ascontiguousarray(np.swapaxes(array, 0, 1)), Geometry.identity(2), prov)
