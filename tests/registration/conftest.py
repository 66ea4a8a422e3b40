"""Shared pieces of the registration tests: the MNI pair with a known deformation, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def mni3():
    """MNI template at 3 mm and its known deformation: 12 degree rotation, 14 mm shift, ~3 mm smooth warp."""
    from medsight.synthetic.deform import mni_pair

    return mni_pair(spacing_mm=3.0, rotation_deg=12.0, shift_mm=14.0, warp_mm=3.0, seed=0)
