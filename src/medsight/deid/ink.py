"""Flat-colour "ink": burned-in text is drawn in one exact colour, speckle and anatomy are not.

``flat_ink`` gives the mask of such pixels (a third page for ``textfind``), ``ink_colours`` labels it by colour
(so that touching texts of different colours can be told apart), ``drop_specks`` removes its isolated dots, and
``colour_page`` draws one crop's text colour alone (a faint name beside brighter speckle).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medsight.deid.tess import Box

RULE = 48  # px: an ink run this long is a ruled line, not a glyph stroke


def _packed(raw: np.ndarray) -> np.ndarray:
    """One integer per pixel colour, so that equality means all channels equal."""
    a = np.asarray(raw)
    if a.ndim == 3:
        a = a.astype(np.int64)
        a = (a[..., 0] << 42) | (a[..., 1] << 21) | a[..., 2]
    return a


def flat_ink(raw: np.ndarray, hats: dict[str, np.ndarray], min_hat: int = 4, min_count: int = 24) -> np.ndarray:
    """Pixels drawn in one exact colour that stand out from their surroundings: burned-in text is rendered in a
    flat colour, while the speckle or anatomy it lies on varies from pixel to pixel. A pixel counts when >= 2 of
    its 4 neighbours hold exactly its value (all channels) and either top-hat is >= ``min_hat`` (a flat plateau,
    such as a black background, stands above nothing). This separates faint text (35 % contrast) from the
    ultrasound speckle that a top-hat joins it with. Only colours held by >= ``min_count`` such pixels are kept:
    a text's colour is shared by all its strokes, while speckle that happens to equal its neighbours is spread
    over every grey level. Lossy-compressed pixels lose the exact equality; the top-hat pages still cover them."""
    a = _packed(raw)
    eq = np.zeros(a.shape, np.uint8)
    h = a[:, 1:] == a[:, :-1]
    v = a[1:] == a[:-1]
    eq[:, 1:] += h
    eq[:, :-1] += h
    eq[1:] += v
    eq[:-1] += v
    stands = np.zeros(a.shape, bool)
    for hat in hats.values():
        stands |= hat >= min_hat
    ink = (eq >= 2) & stands
    values, counts = np.unique(a[ink], return_counts=True)
    drop = values[counts < min_count]
    if len(drop):
        ink[ink] = ~np.isin(a[ink], drop)  # only the candidate pixels: a radiograph has millions of others
    # straight rules and frame borders (runs longer than any glyph stroke) would join the text beside them
    rules = np.zeros(ink.shape, bool)
    for axis in (0, 1):  # only columns (rows) with >= RULE ink pixels can hold such a run
        lines = np.flatnonzero(ink.sum(axis=axis) >= RULE)
        if not len(lines):
            continue
        part = (ink[:, lines] if axis == 0 else ink[lines]).view(np.uint8)
        rule = ndimage.maximum_filter1d(ndimage.minimum_filter1d(part, RULE, axis=axis), RULE, axis=axis)
        if axis == 0:
            rules[:, lines] |= rule.view(bool)
        else:
            rules[lines] |= rule.view(bool)
    return ink & ~rules


def drop_specks(ink: np.ndarray, min_px: int = 4, near: int = 2) -> np.ndarray:
    """The ink mask without its isolated specks: connected pieces (8-neighbourhood) of fewer than ``min_px``
    pixels with no other ink within ``near`` px. Speckle that happens to equal its neighbours' colour leaves such
    dots around a faint turned name, and Tesseract reads "O'BRIEN" among them at confidence 19, without them at
    95 (measured on the planted benchmark). Small pieces close to other ink stay: faint text over speckle breaks
    into fragments of its strokes, which together still spell the name."""
    labels, _n = ndimage.label(ink, np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())
    size = sizes[labels]
    small = ink & (size < min_px)
    if not small.any():
        return ink
    k = 2 * near + 1
    around = np.rint(ndimage.uniform_filter(ink.astype(np.float32), k, mode="constant") * k * k)
    return ink & ~(small & (around <= size))


COLOUR_MIN = 60  # px of one exact colour in a crop for a colour page (``colour_page``)
COLOUR_SHARE = 0.02  # ... and this share of the crop


def colour_page(raw: np.ndarray, box: Box) -> np.ndarray | None:
    """A frame-sized white page with, inside ``box`` only, the pixels of the box's text colour in black: the most
    frequent exact colour after the background's (the most frequent one), when it holds >= ``COLOUR_MIN`` pixels
    and >= ``COLOUR_SHARE`` of the box. None when no colour qualifies (speckle, smooth anatomy)."""
    x0, y0, x1, y1 = box
    a = _packed(np.asarray(raw)[y0:y1, x0:x1])
    values, counts = np.unique(a, return_counts=True)
    if len(values) < 2:
        return None
    order = np.argsort(-counts, kind="stable")
    text, n = values[order[1]], int(counts[order[1]])
    if n < COLOUR_MIN or n < COLOUR_SHARE * a.size:
        return None
    out = np.full(np.asarray(raw).shape[:2], 255, np.uint8)
    out[y0:y1, x0:x1] = np.where(a == text, np.uint8(0), np.uint8(255))
    return out


def ink_colours(raw: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """The ink page as colour labels: 0 where there is no ink, else the rank of the pixel's exact colour among the
    ink colours (1 = the most frequent; ranks past 255 share 255). Two texts of different colours that touch (a
    turned grey name drawn across a block of white annotations) join into one blob of the plain ink mask, too
    wide to be a line; their colours tell them apart (``_components``)."""
    a = _packed(raw)
    out = np.zeros(ink.shape, np.uint8)
    values, inverse, counts = np.unique(a[ink], return_inverse=True, return_counts=True)
    rank = np.empty(len(values), np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(1, len(values) + 1)
    out[ink] = np.minimum(rank[inverse.ravel()], 255).astype(np.uint8)
    return out
