"""Tissue detection on a low-resolution image of the slide: Otsu on saturation, then morphology.

Stained tissue is coloured and glass is grey-white, so saturation separates them better than brightness (which
also picks up folds, dust and bubbles). Otsu picks the threshold per slide; a floor keeps a slide that is almost
all tissue (or almost all glass) from splitting its one class in two. Closing bridges the gaps between fibres,
small specks are dropped and small holes filled. The mask is computed at a fixed physical resolution, capped in
pixels, so its memory does not grow without bound with the slide (docs/pathology.md gives the agreement with a
hand-traced mask of the real slide).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from medsight.io.slide import Slide

log = logging.getLogger(__name__)

MASK_MPP = 4.0  # microns per mask pixel (8x below a 0.5 um/px 20x scan)
MAX_MASK_SIDE = 2048  # the mask never exceeds this many pixels on its longer side (bounded memory)
MIN_SATURATION = 0.05  # Otsu thresholds below this split glass noise, not tissue from glass


@dataclass
class TissueMask:
    """Boolean tissue mask of a whole slide; pixel (r, c) covers level-0 box starting at (c, r) * ``scale``."""

    mask: np.ndarray
    mpp: float  # microns per mask pixel
    scale: float  # level-0 pixels per mask pixel
    threshold: float  # the saturation threshold used

    def __post_init__(self) -> None:
        m = self.mask.astype(np.int32)  # counts up to 2048^2 fit
        self._integral = np.pad(m.cumsum(0, dtype=np.int32).cumsum(1, dtype=np.int32), ((1, 0), (1, 0)))

    @property
    def fraction_total(self) -> float:
        return float(self.mask.mean())

    def fraction(self, x: float, y: float, w: float, h: float) -> float:
        """Share of tissue in the level-0 box (x, y, w, h), from the mask pixels it covers (O(1) per box)."""
        s = self.scale
        r0, c0 = max(0, int(math.floor(y / s))), max(0, int(math.floor(x / s)))
        r1 = min(self.mask.shape[0], max(r0 + 1, int(math.ceil((y + h) / s))))
        c1 = min(self.mask.shape[1], max(c0 + 1, int(math.ceil((x + w) / s))))
        if r1 <= r0 or c1 <= c0:
            return 0.0
        i = self._integral
        total = i[r1, c1] - i[r0, c1] - i[r1, c0] + i[r0, c0]
        return float(total) / ((r1 - r0) * (c1 - c0))


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] ((max - min) / max), computed without a float copy of the whole image."""
    mx = rgb.max(axis=2).astype(np.float32)
    mn = rgb.min(axis=2).astype(np.float32)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1), 0).astype(np.float32)


def mask_from_rgb(rgb: np.ndarray, mpp: float, close_um: float = 24.0, min_object_um2: float = 4000.0,
                  max_hole_um2: float = 20000.0) -> tuple[np.ndarray, float]:
    """(tissue mask, threshold) of an RGB image at ``mpp``; sizes are physical so the result is resolution-free."""
    sat = saturation(rgb)
    dark = rgb.max(axis=2) < 25  # black borders and slide-edge shadows are not tissue
    try:
        t = float(threshold_otsu(sat[~dark])) if (~dark).any() else 1.0
    except ValueError:  # a constant image: nothing to separate
        t = 1.0
    t = max(t, MIN_SATURATION)
    mask = (sat > t) & ~dark
    r = max(1, round(close_um / mpp / 2))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = xx * xx + yy * yy <= r * r
    mask = ndimage.binary_closing(mask, structure=disk, border_value=0)
    px_area = mpp * mpp
    mask = _drop_small(mask, min_object_um2 / px_area)
    holes = _drop_small(~mask, max_hole_um2 / px_area, keep_border=True)
    return mask | ~holes, t


def _drop_small(mask: np.ndarray, min_pixels: float, keep_border: bool = False) -> np.ndarray:
    """``mask`` without connected components smaller than ``min_pixels`` (border-touching ones kept if asked)."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    if keep_border:
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        keep[border[border > 0]] = True
    return keep[labels]


def detect_tissue(slide: Slide, mask_mpp: float = MASK_MPP, max_side: int = MAX_MASK_SIDE) -> TissueMask:
    """The tissue mask of ``slide`` at ``mask_mpp`` (coarser when needed to keep the mask within ``max_side``)."""
    w, h = slide.dimensions
    mpp = max(mask_mpp, slide.mpp, slide.mpp * max(w, h) / max_side)
    rgb = slide.read_downsampled(mpp)
    mask, t = mask_from_rgb(rgb, mpp)
    scale = w / rgb.shape[1]
    log.debug("tissue mask %s at %.2f um/px: %.1f%% tissue, threshold %.3f", mask.shape, mpp, 100 * mask.mean(), t)
    return TissueMask(mask, slide.mpp * scale, scale, t)
