"""Find text on a frame cheaply, then read only there: the boxes that OCR will look at.

Two detectors, united, for each polarity (light text on dark, dark text on light) and each reading direction
(level, and turned 90 degrees running bottom to top):

* morphology: a top-hat with a 15-px square keeps strokes and drops the smooth anatomy behind them; pixels that
  stand >= ``contrasts`` grey levels above their surroundings are joined along the reading direction (letters
  of a word, words of a line) and a joined component is kept when it has a text line's shape (3..64 px across,
  at least 1.5x as long, 5-70 % ink);
* Tesseract's own layout analysis (no recognition: ~10 % of a read) on the same top-hat image, which finds text
  over speckle where the morphology joins letters and background into one blob;
* a third page, ``flat_ink``: the pixels drawn in one exact colour (burned-in text is rendered flat, speckle is
  not), black on white, read like the others: faint text over speckle that the top-hat cannot separate.

Boxes of one polarity and direction on the same printed line that overlap or nearly touch are merged, so one
line is read once (as a single line: Tesseract's fastest and most accurate mode for a crop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medsight.deid.tess import Box, Engine

POLARITIES = ("light-on-dark", "dark-on-light")
INK = "flat-ink"  # a third page: pixels of one exact colour, whatever the background (``ink.flat_ink``)


@dataclass(frozen=True)
class Candidate:
    """A box (frame pixels) that may hold text, the polarity it was seen in and whether it runs vertically."""

    box: Box
    polarity: str
    vertical: bool
    line: int = 0  # estimated height of one printed line in the box (px; 0: the box is one line)

    @property
    def across(self) -> int:
        """Size across the reading direction (a line's height) in frame pixels."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) if self.vertical else (y1 - y0)


@dataclass(frozen=True)
class FindSettings:
    tophat: int = 15  # px: wider than any stroke of text up to ~40 px, narrower than anatomy
    contrasts: tuple[int, ...] = (16, 40)  # grey levels (of 255) a stroke stands above its surroundings: faint
    # text on smooth anatomy (CT, radiographs) at the first, bright text beside speckle at the second
    min_across: int = 6  # px: a line lower than this is not readable
    max_across: int = 64  # px
    layout: bool = True  # add Tesseract's layout analysis
    flat_ink: bool = True  # a third page of flat-colour pixels (``flat_ink``): faint text over speckle
    ink_max: float = 0.05  # ... used only where it covers at most this share of the frame: smooth or coarsely
    # quantised images have equal neighbours everywhere, and their "ink" joins into boxes that are not text
    layout_halve: int = 2_000_000  # px: a page area from which layout analysis reads a 2x smaller page (its
    # cost grows with the area: ~1 s per page of a 1955x1841 radiograph); lines >= 12 px stay >= 6 px there,
    # and smaller print is the morphology's, which always runs at full resolution


def tophat(grey: np.ndarray, polarity: str, size: int) -> np.ndarray:
    """Strokes narrower than ``size`` that are brighter (light-on-dark) or darker than their surroundings."""
    if polarity == "light-on-dark":
        return ndimage.white_tophat(grey, size=size)
    if polarity == "dark-on-light":
        return ndimage.black_tophat(grey, size=size)
    raise ValueError(f"unknown polarity {polarity!r}")


def page_contrast(hat: np.ndarray) -> float:
    """The top-hat value shown as full black on the page (its 99.9th percentile)."""
    return float(np.percentile(hat, 99.9)) if hat.size else 0.0


def page(hat: np.ndarray, hi: float | None = None) -> np.ndarray:
    """Dark print on white, stretched: the image Tesseract reads best (one per polarity). ``hi``: the stretch of
    an earlier reading of the same frame, so that pixels a redaction did not touch stay identical."""
    hi = page_contrast(hat) if hi is None else hi
    if hi <= 0:
        return np.full(hat.shape, 255, np.uint8)
    return (255 - np.clip(hat.astype(np.float32) * (255.0 / hi), 0, 255)).astype(np.uint8)


def _morphology(hat: np.ndarray, s: FindSettings, vertical: bool, binary: bool = False) -> list[Box]:
    """Line-shaped components of the top-hat at each contrast level; ``binary``: ``hat`` is the ink page's
    colour labels (``ink_colours``), one mask, and a blob too wide to be a line is split by colour."""
    if binary:
        return _components(hat > 0, s, vertical, hat)
    out = []
    for level in s.contrasts:
        out += _components(hat >= level, s, vertical)
    return out


SPLIT_COLOURS = 2  # colours of a too-wide ink blob tried on their own (the most frequent first)
SPLIT_ACROSS = 2  # ... when the blob is at most this many line heights (``max_across``) across: a turned name
# through a block of annotation lines (112 px across on the planted benchmark), not a Doppler box (the real
# RGB ultrasound's 129 turned ink reads instead of 24 without this bound)
# A blob is split only in the turned search, and only when it is at least as long as it is across: a turned line
# that crosses a block of level annotations lengthwise makes it so, while the block itself seen turned is wider
# than long. On the real RGB ultrasound the split gave 113 candidates (crops read 248, 147 before the split):
# 52 from such blocks, 33 from the level search (its bottom annotation lines, read already on the top-hat pages);
# without them 184 crops, the same identifiers filled and the planted benchmark's leftovers unchanged
SPLIT_LINES = 3  # a colour of the blob that falls into more line-shaped pieces than this is not one crossing
# line (the planted turned name: 2 pieces, the white block it crosses: 8; the real RGB ultrasound's right-hand
# column: 5 and 12; without them the same identifiers are filled there)
SPLIT_MIN = 120  # px of one colour inside the blob to be worth a try: a line of text (a 16-px name has ~400), not
# one band of a colour scale (each of its colours holds a row or two)


def _components(ink: np.ndarray, s: FindSettings, vertical: bool, colours: np.ndarray | None = None) -> list[Box]:
    # along the line only (letters of a word, words of a line): lines above stay apart; a 1-D maximum filter is
    # the same dilation as an 11x1 structuring element, ~10x faster than binary_dilation
    joined = ndimage.maximum_filter1d(ink.view(np.uint8), 11, axis=0 if vertical else 1)
    labels, _n = ndimage.label(joined)
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels)):
        h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        across, along = (w, h) if vertical else (h, w)
        if vertical and s.max_across < across <= SPLIT_ACROSS * s.max_across and along >= across and colours is not None:  # texts of different
            # colours that touch; a blob wider still is a screen's colour image or speckle, not a line of text
            out += _split_by_colour(ink[sl] & (labels[sl] == i + 1), colours[sl], s, vertical, sl)
            continue
        if not (s.min_across <= across <= s.max_across and along >= 1.5 * across):
            continue
        if 0.05 <= float(ink[sl][labels[sl] == i + 1].mean()) <= 0.7:
            out.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return out


def _split_by_colour(blob: np.ndarray, colours: np.ndarray, s: FindSettings, vertical: bool,
                     sl: tuple[slice, slice]) -> list[Box]:
    """The line-shaped components of each of the blob's main colours on its own (frame pixels)."""
    values, counts = np.unique(colours[blob], return_counts=True)
    out = []
    for v in values[np.argsort(-counts)][:SPLIT_COLOURS]:
        one = blob & (colours == v)
        if one.sum() < SPLIT_MIN or one.sum() == blob.sum():
            continue
        lines = _components(one, s, vertical)
        if len(lines) > SPLIT_LINES:  # many pieces: the block's own lines seen crosswise, or a colour scale
            continue
        out += [(a + sl[1].start, b + sl[0].start, c + sl[1].start, d + sl[0].start) for a, b, c, d in lines]
    return out


def halve(pg: np.ndarray) -> np.ndarray:
    """A dark-on-light page at half size, each pixel the darkest of its 2x2 block (thin strokes stay dark)."""
    h, w = pg.shape[0] // 2 * 2, pg.shape[1] // 2 * 2
    q = pg[:h, :w]
    return np.minimum(np.minimum(q[0::2, 0::2], q[0::2, 1::2]), np.minimum(q[1::2, 0::2], q[1::2, 1::2]))


def _layout(pg: np.ndarray, eng: Engine, s: FindSettings, vertical: bool, at: tuple[int, int] = (0, 0)) -> list[Box]:
    k = 2 if pg.size >= s.layout_halve else 1
    if k > 1:
        pg = halve(pg)
    h = pg.shape[0]
    img = np.ascontiguousarray(np.rot90(pg, -1)) if vertical else pg  # clockwise: bottom-to-top text reads level
    out = []
    for x0, y0, x1, y1 in eng.lines(img):
        box = (y0, h - x1, y1, h - x0) if vertical else (x0, y0, x1, y1)
        box = tuple(v * k for v in box)
        across = (box[2] - box[0]) if vertical else (box[3] - box[1])
        if s.min_across <= across <= 2 * s.max_across:
            out.append((box[0] + at[0], box[1] + at[1], box[2] + at[0], box[3] + at[1]))
    return out


def merge(boxes: list[Box], vertical: bool, gap: int = 4) -> list[Box]:
    """Union of boxes on one printed line (they overlap across the line by >= half the smaller one's size) that
    overlap or lie within ``gap`` px along it, repeated until none do. Lines above each other stay apart.

    Each box (in sorted order) joins the first earlier union it touches; the test against all earlier unions is
    one vectorised step (a textured radiograph gives hundreds of boxes: a pairwise Python loop cost ~10 % of a
    file's redaction)."""
    a0, a1, b0, b1 = (1, 3, 0, 2) if vertical else (0, 2, 1, 3)  # along, across index pairs
    cur = sorted(tuple(int(v) for v in b) for b in boxes)
    result: list = []
    changed = True
    while changed:
        changed = False
        out = np.empty((len(cur), 4), np.int64)
        k = 0
        for b in cur:
            if k:
                o = out[:k]
                overlap = np.minimum(b[b1], o[:, b1]) - np.maximum(b[b0], o[:, b0])
                ok = ((overlap >= 0.5 * np.minimum(b[b1] - b[b0], o[:, b1] - o[:, b0]))
                      & (b[a0] <= o[:, a1] + gap) & (o[:, a0] <= b[a1] + gap))
                i = int(ok.argmax())
                if ok[i]:
                    out[i, :2] = np.minimum(out[i, :2], b[:2])
                    out[i, 2:] = np.maximum(out[i, 2:], b[2:])
                    changed = True
                    continue
            out[k] = b
            k += 1
        result = [tuple(int(v) for v in r) for r in out[:k]]
        cur = sorted(result)
    return result if cur else []  # type: ignore[return-value]


def background_polarity(grey: np.ndarray, box: Box) -> str:
    """The text polarity a box's pixels suggest: strokes are the minority, so a dark median means light text."""
    x0, y0, x1, y1 = box
    patch = grey[y0:y1, x0:x1]
    if patch.size == 0:
        return POLARITIES[0]
    lo, med, hi = percentiles(patch, (5, 50, 95))
    return "light-on-dark" if med - lo <= hi - med else "dark-on-light"


def percentiles(a: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(a, qs)`` (linear interpolation) with one partial sort: the same values, without
    np.percentile's per-call overhead, which dominated for the thousands of small boxes of a radiograph."""
    v = np.ravel(a)
    pos = [q / 100 * (v.size - 1) for q in qs]
    kth = sorted({int(np.floor(p)) for p in pos} | {int(np.ceil(p)) for p in pos})
    part = np.partition(v, kth)
    out = []
    for p in pos:
        lo, hi = float(part[int(np.floor(p))]), float(part[int(np.ceil(p))])
        out.append(lo + (hi - lo) * (p - np.floor(p)))
    return out


def covered(box: Box, others: list[Box]) -> float:
    """Share of ``box``'s area inside the union of ``others``."""
    return float(coverage([box], others)[0]) if others else 0.0


def coverage(boxes: list[Box], others: list[Box]) -> np.ndarray:
    """Share of each box's area inside the union of ``others``, all at once: ``others`` are painted into one
    mask over the boxes' common extent and each box's share is read from its summed-area table, or, when the
    boxes together cover less than that extent, summed over each box's own slice (a radiograph's few hundred
    text boxes span the whole frame, whose two cumulative sums cost more than the boxes' own pixels)."""
    if not boxes:
        return np.zeros(0)
    b = np.asarray(boxes, np.int64)
    gx0, gy0 = int(b[:, 0].min()), int(b[:, 1].min())
    m = np.zeros((int(b[:, 3].max()) - gy0, int(b[:, 2].max()) - gx0), bool)
    for ox0, oy0, ox1, oy1 in others:
        m[max(0, oy0 - gy0):max(0, oy1 - gy0), max(0, ox0 - gx0):max(0, ox1 - gx0)] = True
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    if int(np.maximum(area, 0).sum()) < m.size:
        inside = np.array([m[y0 - gy0:y1 - gy0, x0 - gx0:x1 - gx0].sum() for x0, y0, x1, y1 in b.tolist()])
        return np.where(area > 0, inside / np.maximum(area, 1), 0.0)
    sat = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.int64 if m.size >= 2**31 else np.int32)
    sat[1:, 1:] = m.cumsum(0, dtype=sat.dtype).cumsum(1, dtype=sat.dtype)
    x0, y0, x1, y1 = b[:, 0] - gx0, b[:, 1] - gy0, b[:, 2] - gx0, b[:, 3] - gy0
    inside = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = (x1 - x0) * (y1 - y0)
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0)


def _outside(box: Box, windows: list[Box]) -> bool:
    return all(box[2] <= w[0] or box[0] >= w[2] or box[3] <= w[1] or box[1] >= w[3] for w in windows)


def find_text(greys: dict[str, np.ndarray], hats: dict[str, np.ndarray], pages: dict[str, np.ndarray], eng: Engine,
              settings: FindSettings | None = None, windows: list[Box] | None = None,
              previous: list[Candidate] | None = None) -> list[Candidate]:
    """Candidate text boxes of one frame, given its display grey, top-hat and page image per polarity.

    A box is kept in the polarity its own pixels show (``background_polarity``). A column of level words and a
    word turned 90 degrees look alike to both detectors; both readings are kept and ``reading.resolve`` keeps
    the more confident one.

    ``windows`` + ``previous`` (a later round, after filling): only the windows' pixels changed, so detection
    runs inside them and the previous candidates wholly outside them are kept as they were (the same pixels give
    the same boxes); the caller pads each window by more than a line's length across and the top-hat's size.
    """
    s = settings or FindSettings()
    found: dict[tuple[str, bool], list[Box]] = {}
    morph: dict[tuple[str, bool], list[Box]] = {}
    full = (0, 0, *next(iter(hats.values())).shape[::-1])
    for polarity, hat in hats.items():
        for vertical in (False, True):
            boxes, morph_boxes = [], []
            for x0, y0, x1, y1 in ([full] if windows is None else windows):
                if s.layout and polarity != INK:  # the ink page is clean: its components are its lines
                    boxes += _layout(pages[polarity][y0:y1, x0:x1], eng, s, vertical, (x0, y0))
                morph_boxes += [(a + x0, b + y0, c + x0, d + y0)
                                for a, b, c, d in _morphology(hat[y0:y1, x0:x1], s, vertical, polarity == INK)]
            morph[(polarity, vertical)] = morph_boxes
            boxes = _blocks_to_lines(boxes, morph_boxes, s, vertical)
            # morphology adds what layout analysis missed; where both saw text, layout's lines are cleaner
            share = coverage(morph_boxes, boxes) if boxes else np.zeros(len(morph_boxes))
            boxes += [b for b, c in zip(morph_boxes, share) if c < 0.3]
            found[(polarity, vertical)] = [b for b in merge(boxes, vertical)
                                           if polarity == INK or background_polarity(greys[polarity], b) == polarity]
    out = []
    for (polarity, vertical), boxes in found.items():
        lines = morph[(polarity, vertical)]
        out += [Candidate(b, polarity, vertical, _line_height(b, lines, vertical)) for b in boxes]
    if windows is not None and previous is not None:
        out += [c for c in previous if _outside(c.box, windows)]
    return out


def _blocks_to_lines(layout: list[Box], lines: list[Box], s: FindSettings, vertical: bool) -> list[Box]:
    """Layout boxes wider across than one line (> ``max_across``) that hold morphology lines are dropped in
    favour of those lines: such a block is often text joined with anatomy beside it (a turned date along the
    skull), which then reads as junk and whose background hides the text's polarity. A block without
    morphology lines inside (two lines of small text, say) stays."""
    out = []
    for b in layout:
        across = (b[2] - b[0]) if vertical else (b[3] - b[1])
        if across > s.max_across and any(b[0] <= (m[0] + m[2]) / 2 <= b[2] and b[1] <= (m[1] + m[3]) / 2 <= b[3]
                                         for m in lines):
            continue
        out.append(b)
    return out


def _line_height(box: Box, lines: list[Box], vertical: bool) -> int:
    """The median size across of the morphology's line boxes centred inside ``box`` (0 when none): layout
    analysis may return two lines as one box, which is then read as a block at this line's scale."""
    x0, y0, x1, y1 = box
    sizes = [(b[2] - b[0]) if vertical else (b[3] - b[1]) for b in lines
             if x0 <= (b[0] + b[2]) / 2 <= x1 and y0 <= (b[1] + b[3]) / 2 <= y1]
    return int(np.median(sizes)) if sizes else 0
