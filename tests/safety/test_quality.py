from __future__ import annotations

import numpy as np

from medsight.image import Geometry, Image, Provenance
from medsight.safety.quality import IMPLAUSIBLE_INTENSITIES, MISSING_SLICES, WRONG_MODALITY, QualitySpec


def _vol(seed: int, modality: str = "MR") -> Image:
    rng = np.random.default_rng(seed)
    arr = 100 + 20 * rng.normal(size=(16, 16, 12))
    return Image(arr, Geometry.identity(3, (1.0, 1.0, 2.0)), Provenance(modality=modality))


def test_clean_images_pass_and_each_fault_is_named() -> None:
    spec = QualitySpec.fit([_vol(s) for s in range(5)])
    assert spec.modalities == ["MR"] and spec.min_slices == 12
    assert spec.check(_vol(99)) == []

    assert [f.code for f in spec.check(_vol(98, modality="CT"))] == [WRONG_MODALITY]

    gap = _vol(97)
    arr = gap.array.copy()
    arr[:, :, 5] = 0.0
    codes = [f.code for f in spec.check(Image(arr, gap.geometry, gap.provenance))]
    assert MISSING_SLICES in codes

    short = Image(gap.array[:, :, :8], gap.geometry, gap.provenance)
    assert [f.code for f in spec.check(short)] == [MISSING_SLICES]

    hu = Image(gap.array - 1100.0, gap.geometry, gap.provenance)  # CT-like range
    assert {f.code for f in spec.check(hu)} == {IMPLAUSIBLE_INTENSITIES}

    nan = gap.array.copy()
    nan[0, 0, 0] = np.nan
    found = spec.check(Image(nan, gap.geometry, gap.provenance))
    assert found[0].code == IMPLAUSIBLE_INTENSITIES and "NaN" in found[0].message
    assert QualitySpec.from_dict(spec.to_dict()) == spec
