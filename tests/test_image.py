"""Geometry arithmetic checked against SimpleITK's own index->physical mapping."""

import numpy as np
import pytest
import SimpleITK as sitk

from medsight.errors import GeometryError
from medsight.image import Geometry, Image, Provenance


def _oblique_direction() -> np.ndarray:
    a = np.deg2rad(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return rot


def test_index_to_world_matches_simpleitk() -> None:
    d = _oblique_direction()
    g = Geometry((0.7, 0.8, 2.5), (-100.0, 20.0, 35.5), tuple(map(tuple, d)))
    ref = sitk.Image(8, 9, 10, sitk.sitkUInt8)
    ref.SetSpacing(g.spacing)
    ref.SetOrigin(g.origin)
    ref.SetDirection(tuple(d.flatten()))
    for idx in [(0, 0, 0), (3, 4, 5), (7.5, 1.25, 9)]:
        np.testing.assert_allclose(g.index_to_world(idx), ref.TransformContinuousIndexToPhysicalPoint(idx), atol=1e-9)
        np.testing.assert_allclose(g.world_to_index(g.index_to_world(idx)), idx, atol=1e-9)


def test_affine_round_trip_and_ras() -> None:
    g = Geometry((1.0, 2.0, 3.0), (5.0, 6.0, 7.0), tuple(map(tuple, _oblique_direction())))
    assert Geometry.from_affine(g.affine) == pytest.approx(g) or np.allclose(Geometry.from_affine(g.affine).affine, g.affine)
    ras = g.ras_affine()
    # RAS x and y are the negated LPS x and y (NIfTI convention), z is unchanged.
    np.testing.assert_allclose(ras[0], -g.affine[0])
    np.testing.assert_allclose(ras[1], -g.affine[1])
    np.testing.assert_allclose(ras[2], g.affine[2])
    np.testing.assert_allclose(Geometry.from_ras_affine(ras).affine, g.affine, atol=1e-12)


def test_orientation_code() -> None:
    assert Geometry.identity(3).orientation_code() == "LPS"
    flipped = Geometry((1, 1, 1), (0, 0, 0), ((-1, 0, 0), (0, -1, 0), (0, 0, 1)))
    assert flipped.orientation_code() == "RAS"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"spacing": (1.0, 0.0, 1.0), "origin": (0, 0, 0), "direction": ((1, 0, 0), (0, 1, 0), (0, 0, 1))},
        {"spacing": (1.0, 1.0, 1.0), "origin": (0, 0), "direction": ((1, 0, 0), (0, 1, 0), (0, 0, 1))},
        {"spacing": (1.0, 1.0, 1.0), "origin": (0, 0, 0), "direction": ((2, 0, 0), (0, 1, 0), (0, 0, 1))},
    ],
)
def test_invalid_geometry_is_a_user_error(kwargs: dict) -> None:
    with pytest.raises(GeometryError):
        Geometry(**kwargs)


def test_image_shape_must_fit_geometry_and_provenance_serialises() -> None:
    with pytest.raises(GeometryError):
        Image(np.zeros((4, 4)), Geometry.identity(3))
    rgb = Image(np.zeros((4, 5, 3)), Geometry.identity(2))
    assert rgb.is_multichannel and rgb.shape == (4, 5)
    p = Provenance(modality="CT", acquisition={"kvp": np.float32(120.0)}).with_step("resample", spacing=(1.0, 1.0))
    again = Provenance.from_dict(__import__("json").loads(p.to_json()))
    assert again.acquisition["kvp"] == 120.0 and again.steps[0].params["spacing"] == [1.0, 1.0]
