"""Tissue outlines as GeoJSON: holes (a lumen, a vessel) are interior rings of their polygon, never more tissue;
every polygon is valid by shapely's rules; a tiling found again when slide and tiles move together."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from medsight.pathology.geojson import feature, mask_to_polygons, rasterize, read_polygons



def _shapely():  # noqa: ANN202 - the shapely.geometry module
    """shapely (the test extra): a failure under CI, a skip elsewhere."""
    try:
        import shapely.geometry
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("shapely (test extra) is not installed")
        pytest.skip("shapely (test extra) is not installed")
    return shapely.geometry


def test_hole_is_an_interior_ring_with_the_hand_worked_area() -> None:
    geo = _shapely()
    m = np.zeros((40, 40), bool)
    m[5:35, 5:35] = True  # tissue 30 x 30
    m[12:28, 12:28] = False  # a lumen 16 x 16
    m[17:23, 17:23] = True  # an island of tissue inside the lumen 6 x 6
    m[36:39, 36:39] = True  # a separate fragment 3 x 3
    polys = mask_to_polygons(m, 2.0, min_points=3, tolerance=0)
    assert sorted(len(p) for p in polys) == [1, 1, 2]  # only the tissue with the lumen has an interior ring
    g = geo.shape(feature(polys, "Tissue", (0, 160, 0))["geometry"])
    assert g.is_valid
    # a traced s x s square has area s^2 - 0.5 px (the 0.5-level contour cuts each corner by 1/8 px); scale 2
    assert g.area == pytest.approx(4 * ((900 - 0.5) - (256 - 0.5) + (36 - 0.5) + (9 - 0.5)))
    back = rasterize(polys, m.shape, 2.0)
    assert not back[20, 13] and back[20, 20] and back[6, 6]  # the lumen stays empty, island and tissue filled


def test_tissue_geojson_of_the_real_slide_is_valid_and_matches_its_mask(real_svs: Path, tmp_path: Path) -> None:
    geo = _shapely()
    from medsight.pathology.tiling import TilingParams, load_tiling, locate_slide, tile_slides
    from medsight.pathology.tissue import detect_tissue
    from medsight.io.slide import open_slide

    slide = tmp_path / "slides" / "cmu.svs"
    slide.parent.mkdir()
    shutil.copy(real_svs, slide)
    tile_slides([slide], tmp_path / "tiles", TilingParams(mpp=2.0, size=64), progress=False)
    data = json.loads((tmp_path / "tiles" / "cmu" / "tissue.geojson").read_text())
    geom = geo.shape(data["features"][0]["geometry"])
    assert geom.is_valid and all(p.is_valid for p in geom.geoms)
    with open_slide(slide) as s:
        tm = detect_tissue(s)
    back = rasterize(read_polygons(tmp_path / "tiles" / "cmu" / "tissue.geojson"), tm.mask.shape, tm.scale)
    inter = (back & tm.mask).sum()
    assert 2 * inter / (back.sum() + tm.mask.sum()) > 0.97  # holes drawn as holes: the outline is the mask
    # slide and tiles moved together: the manifest's relative path finds the slide
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "slides", moved / "slides")
    shutil.copytree(tmp_path / "tiles", moved / "tiles")
    shutil.rmtree(tmp_path / "slides")
    manifest = moved / "tiles" / "cmu" / "tiles.json"
    assert locate_slide(load_tiling(manifest), manifest) == (moved / "slides" / "cmu.svs").resolve()
