"""Fixtures for the pathology tests: the real SVS vendored with medsight (synthetic/data/)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def require(ok: bool, reason: str) -> None:
    """Fail under CI (the install is broken), skip elsewhere."""
    if not ok:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def real_svs() -> Path:
    from medsight.errors import InputNotFoundError
    from medsight.synthetic.slides import real_slide_path

    try:
        return real_slide_path()
    except InputNotFoundError as err:
        require(False, str(err))
        raise


@pytest.fixture(scope="session")
def dicom_wsi(real_svs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real slide written as a DICOM WSI by wsidicom (3 levels)."""
    from medsight.io.slide import open_slide
    from medsight.synthetic.dicom_wsi import write_dicom_wsi

    out = tmp_path_factory.mktemp("dicom_wsi")
    with open_slide(real_svs) as s:
        write_dicom_wsi(s, out, levels=3)
    return out


@pytest.fixture(scope="session")
def no_mpp_tiff(real_svs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiled TIFF of a real crop with no resolution tags: a slide without a pixel size."""
    import tifffile

    from medsight.io.slide import open_slide

    with open_slide(real_svs) as s:
        crop = s.read_region(0, 0, 0, 1024, 1024)
    p = tmp_path_factory.mktemp("nompp") / "nompp.tif"
    with tifffile.TiffWriter(p) as tif:
        tif.write(crop, tile=(256, 256), photometric="rgb", compression="jpeg", metadata=None)
        tif.write(np.ascontiguousarray(crop[::4, ::4]), tile=(256, 256), photometric="rgb", compression="jpeg",
                  subfiletype=1, metadata=None)
    return p
