from __future__ import annotations

import numpy as np
import pytest

from medsight.safety.seg_calibration import band_calibration, boundary_band


def test_band_width_respects_spacing() -> None:
    m = np.zeros((1, 21), bool)
    m[0, 10:] = True  # boundary between voxel 9 and 10
    band = boundary_band(m, spacing=(1.0, 2.0), band_mm=4.0)
    # voxel centres are 1, 3, 5 mm from the boundary on each side: 2 voxels of 2 mm on each side lie within 4 mm
    assert np.flatnonzero(band[0]).tolist() == [8, 9, 10, 11]


def test_band_ece_by_hand() -> None:
    ref = np.zeros((1, 20), bool)
    ref[0, 10:] = True
    prob = np.where(ref, 0.8, 0.2)  # in the band: 0.8 at positives, 0.2 at negatives -> gap 0.2 in each bin
    out = band_calibration(prob, ref, spacing=(1.0, 1.0), band_mm=2.0)
    assert out["n_voxels"] == 4
    assert out["ece"] == pytest.approx(0.2)
    assert out["brier"] == pytest.approx(0.04)
    perfect = band_calibration(ref.astype(float), ref, spacing=(1.0, 1.0), band_mm=2.0)
    assert perfect["ece"] == pytest.approx(0.0)
