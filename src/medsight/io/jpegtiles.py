"""Tiles of a JPEG-tiled TIFF level decoded straight at 1/2, 1/4 or 1/8 of their size (libjpeg's DCT scaling).

Tiling at 1 um/px from a 0.5 um/px scan (an Aperio SVS with one level, like the real CMU-1-Small-Region) means
decoding every level-0 pixel and then averaging 2x2 of them away. libjpeg can instead run a reduced inverse DCT
that yields the downscaled block directly (PIL's ``draft``), skipping most of the decode and the copy of
full-size RGBA regions that OpenSlide hands out. The pixels are a low-pass downscale like area averaging but not
bit-identical to it (the tests bound the difference); ``Slide.read_tiles_mpp(..., fast=True)`` uses this path
when the level is a plain JPEG-tiled TIFF page and the downscale is at least 2, and the exact path otherwise.

Aperio writes JPEG tiles whose colour components are R, G, B themselves (TIFF photometric RGB) without the Adobe
marker that would tell a decoder so; asking libjpeg for "YCbCr" output returns those components unconverted,
which are the RGB values (checked against OpenSlide in the tests).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

SCALES = (8, 4, 2)  # the reduced-DCT factors libjpeg offers that are worth it


class JpegLevel:
    """One JPEG-tiled TIFF page, read tile by tile from the file, decoded at 1/k scale."""

    def __init__(self, path: Path, page) -> None:
        self.path = path
        self.tw, self.th = int(page.tilewidth), int(page.tilelength)
        self.height, self.width = int(page.shape[0]), int(page.shape[1])
        self.nx = -(-self.width // self.tw)
        self.offsets, self.counts = list(page.dataoffsets), list(page.databytecounts)
        self.tables = bytes(page.jpegtables or b"")
        # photometric 2 (RGB): the JPEG components are R, G, B; 6 (YCbCr): libjpeg converts to RGB
        self.mode = "YCbCr" if int(page.photometric) == 2 else "RGB"
        self._fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def close(self) -> None:
        self._fh.close()

    def tile(self, tx: int, ty: int, k: int) -> np.ndarray:
        """Tile (tx, ty) as RGB uint8 at 1/k of its size (white where the file stores no data)."""
        key = (tx, ty, k)
        if key in self._cache:
            return self._cache[key]
        i = ty * self.nx + tx
        if i >= len(self.offsets) or not self.counts[i]:
            out = np.full((self.th // k, self.tw // k, 3), 255, np.uint8)
        else:
            self._fh.seek(self.offsets[i])
            data = self._fh.read(self.counts[i])
            if self.tables and data[:2] == b"\xff\xd8":  # abbreviated stream: put the shared tables in front
                data = self.tables[:-2] + data[2:]
            img = Image.open(io.BytesIO(data))
            img.draft(self.mode, (self.tw // k, self.th // k))
            out = np.asarray(img)
            if out.ndim == 2:
                out = np.repeat(out[..., None], 3, axis=2)
            out = out[..., :3]
        self._cache[key] = out
        return out

    def forget_above(self, ty: int) -> None:
        """Drop cached tiles of rows above ``ty`` (rows of boxes are read top to bottom)."""
        for key in [key for key in self._cache if key[1] < ty]:
            del self._cache[key]

    def mosaic(self, x0: int, y0: int, x1: int, y1: int, k: int) -> tuple[np.ndarray, int, int]:
        """The tiles covering level pixels [x0, x1) x [y0, y1) at 1/k scale, and the level pixel of its corner."""
        tx0, ty0 = x0 // self.tw, y0 // self.th
        tx1, ty1 = (min(x1, self.width) - 1) // self.tw, (min(y1, self.height) - 1) // self.th
        sw, sh = self.tw // k, self.th // k
        out = np.empty(((ty1 - ty0 + 1) * sh, (tx1 - tx0 + 1) * sw, 3), np.uint8)
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                out[(ty - ty0) * sh:(ty - ty0 + 1) * sh, (tx - tx0) * sw:(tx - tx0 + 1) * sw] = self.tile(tx, ty, k)
        return out, tx0 * self.tw, ty0 * self.th


def jpeg_level(path: Path, width: int, height: int, k: int) -> JpegLevel | None:
    """The JPEG-tiled page of ``path`` that is ``width`` x ``height``, when its tiles divide by ``k`` and decode
    with libjpeg (8-bit, 3 samples, chunky); None otherwise (the caller reads the exact way)."""
    try:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            for page in tf.pages:
                if (int(page.compression) == 7 and page.is_tiled and int(page.shape[0]) == height
                        and int(page.shape[1]) == width and page.samplesperpixel == 3 and page.bitspersample == 8
                        and int(page.planarconfig) == 1 and int(page.photometric) in (2, 6)
                        and page.tilewidth % k == 0 and page.tilelength % k == 0):
                    return JpegLevel(Path(path), page)
    except Exception:  # noqa: BLE001 - not a TIFF tifffile can parse: the exact path reads it
        return None
    return None


def dct_factor(scale: float) -> int:
    """The largest reduced-DCT factor not above ``scale`` (1: none applies)."""
    return next((k for k in SCALES if k <= scale * (1 + 1e-6)), 1)


def row_runs(boxes: list[tuple[int, int]], w: int, downsample: float, max_run: int) -> Iterator[tuple[int, int]]:
    """Index ranges [i, j) of ``boxes`` (level-0 top-left corners, ``w`` level pixels wide) that one region read
    can serve: same row, each no further than a tile width from the last, the whole run at most ``max_run`` wide."""
    i = 0
    while i < len(boxes):
        x0, y0 = boxes[i]
        j = i + 1
        while j < len(boxes) and boxes[j][1] == y0 and 0 <= boxes[j][0] - boxes[j - 1][0] <= w * downsample and \
                round(boxes[j][0] / downsample) - round(x0 / downsample) + w <= max_run:
            j += 1
        yield i, j
        i = j


def read_tiles(level: JpegLevel, boxes: list[tuple[int, int]], downsample: float, w: int, size: int, k: int,
               max_run: int = 4096) -> Iterator[np.ndarray]:
    """(size, size, 3) tiles for level-0 top-left corners ``boxes`` (each ``w`` level pixels wide), in order:
    neighbours of a row share one mosaic, each tile is cut from it at its exact (fractional) place and shrunk
    from 1/k scale to ``size`` with area averaging."""
    for i, j in row_runs(boxes, w, downsample, max_run):
        x0, y0 = boxes[i]
        lx0, ly0 = round(x0 / downsample), round(y0 / downsample)
        lx1 = round(boxes[j - 1][0] / downsample) + w
        level.forget_above(ly0 // level.th)
        mosaic, mx, my = level.mosaic(lx0, ly0, lx1, ly0 + w, k)
        img = Image.fromarray(mosaic)
        for x, _ in boxes[i:j]:
            lx = round(x / downsample)
            src = ((lx - mx) / k, (ly0 - my) / k, (lx - mx + w) / k, (ly0 - my + w) / k)
            yield np.asarray(img.resize((size, size), Image.Resampling.BOX, box=src))
