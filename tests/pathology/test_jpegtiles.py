"""DCT-domain tile reads (``read_tiles_mpp(fast=True)``) on the real SVS, against OpenSlide's own decode.

* full-size JPEG tiles decoded by ``jpegtiles`` equal OpenSlide's pixels exactly (the colour handling is right);
* where the tile shrinks by exactly 2 or 4, the fast tiles equal OpenSlide's level-0 pixels box-averaged to the
  tile size within half a grey level on average (libjpeg's reduced inverse DCT against area averaging);
* at 1 um/px (a 2.004 shrink on this 0.499 um/px slide: DCT 1/2, then 224.5 -> 224 px) they differ from the
  exact tiles less than the exact tiles differ from themselves moved by one level-0 pixel;
* the fast path is not taken where it does not apply (tiles not shrunk by >= 2): the pixels are the exact ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide

from medsight.io.jpegtiles import dct_factor, jpeg_level
from medsight.io.slide import open_slide
from medsight.pathology.tiling import TilingParams, tile_slide


def test_full_size_tiles_equal_openslide(real_svs: Path) -> None:
    ref = openslide.OpenSlide(str(real_svs))
    w, h = ref.dimensions
    level = jpeg_level(real_svs, w, h, 1)
    assert level is not None and level.mode == "YCbCr"  # Aperio: R, G, B components, no Adobe marker
    for tx, ty in ((0, 0), (4, 5), (6, 9), (3, 11)):
        theirs = np.asarray(ref.read_region((tx * 240, ty * 240), 0, (240, 240)).convert("RGB"))
        assert np.array_equal(level.tile(tx, ty, 1), theirs)
    level.close()


def _tiles(s, mpp: float, size: int, fast: bool, shift: int = 0) -> np.ndarray:
    tiling, _ = tile_slide(s, TilingParams(mpp=mpp, size=size, min_tissue=0.5), sha="-")
    boxes = tiling.boxes + np.array([shift, 0, 0, 0])
    return np.stack(list(s.read_tiles_mpp(boxes, mpp, size, fast=fast))).astype(np.int64)


def test_fast_tiles_match_area_averaging(real_svs: Path) -> None:
    with open_slide(real_svs) as s:
        for factor, size in ((2, 224), (4, 112)):
            mpp = s.mpp * factor
            assert dct_factor(s.level_for(mpp)[1]) == factor
            fast, exact = _tiles(s, mpp, size, True), _tiles(s, mpp, size, False)
            assert len(fast) >= 5
            assert np.abs(fast - exact).mean() < 0.5
        fast, exact, moved = _tiles(s, 1.0, 224, True), _tiles(s, 1.0, 224, False), _tiles(s, 1.0, 224, False, 1)
        assert np.abs(fast - exact).mean() < np.abs(moved - exact).mean()


def test_no_fast_path_below_a_shrink_of_two(real_svs: Path) -> None:
    with open_slide(real_svs) as s:
        mpp = s.mpp * 1.5
        assert dct_factor(s.level_for(mpp)[1]) == 1
        assert np.array_equal(_tiles(s, mpp, 112, True), _tiles(s, mpp, 112, False))
