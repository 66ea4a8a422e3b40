"""NiftiSliceWriter writes what write_nifti writes (the decompressed bytes: header, extension flag, voxels)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from medsight.image import Geometry, Image
from medsight.io.nifti import NiftiSliceWriter, read_nifti, write_nifti


@pytest.mark.parametrize("dtype", [np.int16, np.uint8])
def test_slices_match_write_nifti_bytes(tmp_path, dtype) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    direction = ((0.9961947, -0.0871557, 0.0), (0.0871557, 0.9961947, 0.0), (0.0, 0.0, 1.0))  # 5 degrees in-plane
    volume = Geometry((1.8, 1.8, 2.4), (-91.3, 120.7, -70.2), direction)
    writer = NiftiSliceWriter()
    for k in (0, 1, 17, 40):  # slices of one volume: same grid, origins along the third axis
        origin = volume.index_to_world((0.0, 0.0, float(k)))
        geom = Geometry(volume.spacing, tuple(float(v) for v in origin), direction)
        img = Image(rng.integers(-300, 3000, size=(37, 29, 1)).astype(np.int16), geom)
        write_nifti(img, tmp_path / f"ref_{k}.nii.gz", dtype=dtype, sidecar=False)
        writer.write(img, tmp_path / f"fast_{k}.nii.gz", dtype=dtype)
        ref = gzip.decompress((tmp_path / f"ref_{k}.nii.gz").read_bytes())
        fast = gzip.decompress((tmp_path / f"fast_{k}.nii.gz").read_bytes())
        assert fast == ref
        back = read_nifti(tmp_path / f"fast_{k}.nii.gz")
        np.testing.assert_array_equal(back.array, img.array.astype(dtype))
        np.testing.assert_allclose(back.geometry.origin, origin, atol=1e-4)
    assert len(writer._headers) == 1  # one header built for the four slices


def test_other_images_fall_back_to_write_nifti(tmp_path) -> None:  # noqa: ANN001
    img = Image(np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(map(tuple, np.eye(3)))))
    NiftiSliceWriter().write(img, tmp_path / "f.nii.gz")  # float voxels: nibabel's own path
    np.testing.assert_array_equal(read_nifti(tmp_path / "f.nii.gz").array, img.array)
