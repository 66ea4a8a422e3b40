"""The OOD sets: real shipped DICOMs of other modalities, and corruptions with their documented strength."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medsight.errors import ConfigError
from medsight.image import Geometry, Image
from medsight.synthetic.ood_sets import SOURCES, corrupt, different_modality_images


def test_different_modality_set_reads_every_shipped_source() -> None:
    imgs = different_modality_images(views=["whole"])
    frames = sum(s.max_frames for s in SOURCES)
    assert len(imgs) == frames
    assert {im.provenance.modality for im in imgs} == {"CT", "CR", "MR", "NM", "US"}
    assert all(im.array.ndim == 2 and np.isfinite(im.array).all() and im.array.std() > 0 for im in imgs)
    ct = next(im for im in imgs if im.provenance.steps[-1].params["source"] == "693_UNCI.dcm")
    assert ct.array.min() < -500  # rescaled to Hounsfield units (air ~ -1000)
    cr = next(im for im in imgs if im.provenance.steps[-1].params["source"] == "RG1_UNCI.dcm")
    assert cr.shape == (1841, 1955)  # [i = column, j = row] index order


def test_corruptions_by_hand() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(100, 200, (40, 50)).astype(np.float32)
    img = Image(a, Geometry.identity(2))
    inv = corrupt(img, "inversion").array
    np.testing.assert_allclose(inv, a.max() + a.min() - a, rtol=1e-6)
    blur = corrupt(img, "blur").array
    np.testing.assert_allclose(blur, ndimage.gaussian_filter(a.astype(np.float64), 0.025 * 50), rtol=1e-5)
    noisy = corrupt(img, "noise", seed=1).array
    fg = a[a > np.percentile(a, 10)]
    assert (noisy - a).std() == pytest.approx(fg.std(), rel=0.05)
    assert corrupt(img, "noise", seed=1).provenance.steps[-1].name == "corrupt_noise"
    with pytest.raises(ConfigError, match="unknown corruption"):
        corrupt(img, "jpeg")
