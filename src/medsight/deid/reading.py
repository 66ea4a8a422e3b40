"""Read the words inside candidate text boxes and say which are identifiers.

Each candidate box is cut (padded) from its polarity's page image, turned level when it runs vertically, scaled so
that its line is ~36 px high (Tesseract's sweet spot; small annotation fonts grow), framed in white and read as one
line. Word boxes come back in frame pixels. A reading is cached under the crop's own pixels: after a redaction
round only the crops whose pixels changed (or new candidates) are read again, and a crop whose pixels are
unchanged reads the same by construction, so the verification still reflects exactly the written pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from medsight.deid.tess import Box, Engine
from medsight.deid.textfind import Candidate
from medsight.deid.words import IDENTIFIER, classify

TARGET_HEIGHT = 36  # px of a scaled line
BORDER = 12  # px of white around a crop
MAX_LINE = 48  # px: a taller box is not one line
# identifiers by their shape or the header's values (``words.classify`` rules): for them the least confident
# character's confidence counts when it is higher than the word's (``FoundWord.sure``)
SHAPED = frozenset(("header value", "date", "time", "number of >= 5 digits", "year",
                    "six or more digits (a date or ID read with a slip)"))


@dataclass(frozen=True)
class FoundWord:
    """A word read in a candidate box: its text, confidence, frame box, line, and classification."""

    text: str
    conf: float
    box: Box
    line: tuple  # (candidate box, polarity, vertical, line number): words of one printed line share it
    vertical: bool
    kind: str
    rule: str
    line_box: Box  # the extent of the words read on its line, along and across it (frame pixels)
    chars: float = -1.0  # confidence of its least confident character (``tess.Read.chars``; -1: not known)

    @property
    def sure(self) -> float:
        """How sure the reading is: Tesseract's word confidence, or for an identifier by its shape or the header
        (``SHAPED``: a date, a time, an ID, a header value; not an unknown word nor a label such as "AGE", which
        texture reads too: "age," at 15, characters at 88) the least confident character's, when higher.
        Tesseract 5 may give 0 to a word whose every character it reads at >= 80 ("04/08/19<": a turned date
        cut at its end by a fill, characters 83-99); a date's shape is evidence of its own, whereas made-up
        words read in speckle also have confident characters ("mete!": 0 as a word, 80-99 by character)."""
        if self.kind == IDENTIFIER and self.rule in SHAPED:
            return max(self.conf, self.chars)
        return self.conf

    @property
    def n_alnum(self) -> int:
        return sum(ch.isalnum() for ch in self.text)

    @property
    def identifier(self) -> bool:
        return self.kind == IDENTIFIER


def crop_box(c: Candidate, h: int, w: int) -> Box:
    """The frame area read for a candidate: its box padded by a third of its line height (at least 3 px)."""
    x0, y0, x1, y1 = c.box
    p = max(3, c.across // 3)
    return max(0, x0 - p), max(0, y0 - p), min(w, x1 + p), min(h, y1 + p)


class CropReader:
    """Reads candidates with one engine, caching each reading under the crop's pixels."""

    def __init__(self, eng: Engine, terms: frozenset[str] = frozenset(), psm: int = 7) -> None:
        self.eng, self.terms, self.psm = eng, terms, psm
        self.cache: dict[tuple, list[FoundWord]] = {}
        self.crops_read = 0

    def read(self, c: Candidate, page: np.ndarray, variant: str = "") -> list[FoundWord]:
        """The words of candidate ``c``, read in its polarity's page (cached under the crop's pixels; ``variant``
        names another page of the same polarity)."""
        h, w = page.shape
        box = crop_box(c, h, w)
        cx0, cy0, cx1, cy1 = box
        crop = page[cy0:cy1, cx0:cx1]
        key = (c.polarity, variant, c.vertical, box, hashlib.sha1(crop.tobytes()).digest())
        if key not in self.cache:
            self.cache[key] = self._read(c, crop, box, h, w)
        return self.cache[key]

    def _read(self, c: Candidate, crop: np.ndarray, box: Box, h: int, w: int) -> list[FoundWord]:
        from PIL import Image

        cx0, cy0, cx1, cy1 = box
        img = np.ascontiguousarray(np.rot90(crop, -1)) if c.vertical else crop
        line = c.line if 0 < c.line < 0.75 * c.across else c.across  # one line, or a block of lines this high
        s = float(np.clip(TARGET_HEIGHT / max(1, min(line, MAX_LINE)), 1.0, 4.0))
        if s > 1.0:
            img = np.asarray(Image.fromarray(img).resize((round(img.shape[1] * s), round(img.shape[0] * s)),
                                                         Image.BICUBIC))
        framed = np.pad(img, BORDER, constant_values=255)
        # a box taller than its line (two lines, text joined with anatomy) is read as a block
        reads = self.eng.words(framed, self.psm if line == c.across and c.across <= MAX_LINE else 6)
        self.crops_read += 1
        ch = cy1 - cy0
        mapped = []
        for r in reads:
            x0, y0, x1, y1 = ((v - BORDER) / s for v in r.box)
            if c.vertical:  # the crop was turned clockwise: (x', y') came from (x = y', y = ch - x')
                x0, y0, x1, y1 = y0, ch - x1, y1, ch - x0
            wbox = (int(np.floor(x0)) + cx0, int(np.floor(y0)) + cy0, int(np.ceil(x1)) + cx0, int(np.ceil(y1)) + cy0)
            mapped.append((r, _clip_across(wbox, c, h, w)))
        words = []
        for (r, wbox), (run, line_box) in zip(mapped, _runs([(r.line, b) for r, b in mapped], c.vertical)):
            kind, rule = classify(r.text, self.terms)
            words.append(FoundWord(r.text, r.conf, wbox, (c.box, c.polarity, c.vertical, r.line, run), c.vertical,
                                   kind, rule, line_box, r.chars))
        return words


RUN_GAP = 1.5  # line heights: a wider gap between two words on one Tesseract line parts two printed runs


def _runs(words: list[tuple[int, Box]], vertical: bool) -> list[tuple[int, Box]]:
    """For each (Tesseract line, word box): the run of words it belongs to on that line and the run's extent.

    A printed line is the words of one Tesseract line that follow each other with gaps of at most ``RUN_GAP``
    line heights. The line that a redaction fills whole is this run, not the crop: a layout line along an image
    edge may carry a short junk "word" at each end ("PWR" read as "PUR" at both sides of an ultrasound), and
    filling from one to the other blanked a band across the whole image."""
    a0, a1, b0, b1 = _axes(vertical)
    out: list[tuple[int, Box]] = [(0, (0, 0, 0, 0))] * len(words)
    for line in {ln for ln, _b in words}:
        idx = sorted((i for i, (ln, _b) in enumerate(words) if ln == line), key=lambda i: words[i][1][a0])
        size = max(1, max(words[i][1][b1] for i in idx) - min(words[i][1][b0] for i in idx))
        groups: list[list[int]] = []
        for i in idx:
            if groups and words[i][1][a0] <= max(words[j][1][a1] for j in groups[-1]) + RUN_GAP * size:
                groups[-1].append(i)
            else:
                groups.append([i])
        for k, g in enumerate(groups):
            box = [0, 0, 0, 0]
            for axis in (a0, b0):
                box[axis] = min(words[i][1][axis] for i in g)
            for axis in (a1, b1):
                box[axis] = max(words[i][1][axis] for i in g)
            for i in g:
                out[i] = (k, (box[0], box[1], box[2], box[3]))
    return out


def _clip_across(wbox: Box, c: Candidate, h: int, w: int) -> Box:
    """A word box kept within the frame and, across its line, within the candidate's own extent plus a sixth of
    it: Tesseract may stretch a word over the crop's padding (speckle dots of the ink page beside a turned
    name), and the fill, padded again, then eats the annotations beside the line."""
    x0, y0, x1, y1 = c.box
    m = max(2, c.across // 6)
    if c.vertical:
        return max(0, wbox[0], x0 - m), max(0, wbox[1]), min(w, wbox[2], x1 + m), min(h, wbox[3])
    return max(0, wbox[0]), max(0, wbox[1], y0 - m), min(w, wbox[2]), min(h, wbox[3], y1 + m)


def _score(words: list[FoundWord]) -> float:
    return sum(w.sure * w.n_alnum for w in words if w.sure >= 30)


def weak(words: list[FoundWord], conf: float = 60.0) -> bool:
    """No word of >= 3 letters/digits read at ``conf`` or more: a reading worth a second try on a cleaner page."""
    return not any(w.sure >= conf and w.n_alnum >= 3 for w in words)


def better(first: list[FoundWord], second: list[FoundWord]) -> list[FoundWord]:
    """The reading with the larger confidence x characters (the first on a tie)."""
    return second if _score(second) > _score(first) else first


def _inside(b: Box, box: Box) -> bool:
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def _overlap(a: Box, b: Box) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def resolve(readings: list[tuple[Candidate, list[FoundWord]]]) -> list[FoundWord]:
    """Words of all readings, where a vertical and level reading of the same pixels compete: the reading with
    the larger confidence x characters wins inside the vertical box (a column of level words read turned,
    or a turned word read level, gives short unconfident junk)."""
    drop: set[int] = set()
    level_readings = [(o, ws) for o, ws in readings if not o.vertical and ws]
    for c, words in readings:
        if not c.vertical:
            continue
        level = [w for o, ws in level_readings if o.polarity == c.polarity and _overlap(o.box, c.box)
                 for w in ws if _inside(w.box, c.box)]
        if not level:
            continue
        if _score(words) >= _score(level):
            drop |= {id(w) for w in level}
        else:
            drop |= {id(w) for w in words}
    return [w for _c, words in readings for w in words if id(w) not in drop]


def _axes(vertical: bool) -> tuple[int, int, int, int]:
    """(along start, along end, across start, across end) indices of a box for a line of this direction."""
    return (1, 3, 0, 2) if vertical else (0, 2, 1, 3)


def along_line(line: Box, vertical: bool, words: list[FoundWord], h: int, w: int, reach: float = 1.0,
               join: float = RUN_GAP, weak_below: float = 0.0) -> tuple[Box, list[FoundWord]]:
    """An identifier's printed line grown along its direction: by ``reach`` x its height on each side (a glyph
    at the end of the line that neither detector nor OCR put in the box: the leading "0" of a turned date over
    bone), then, repeatedly, to every word read on the same printed line (same direction, overlapping across by
    half the smaller height, height within 2x) that lies within ``join`` x its height, the gap that parts two
    printed runs (``_runs``): the rest of a name after a space, found in another box ("NGUYEN" filled, "VAN AN"
    left: a monospaced 33-px name's space with a Doppler box's edge in it is 0.74 line heights, beyond the
    0.6 of ``reach``), up to twice the line's own length and one such gap (a chain of texture read as words
    along a radiograph must not run on). A word read below ``weak_below`` as a word (taken for its characters' confidence: "VAN-AN",
    0, characters 83-99) is taken only beyond the line's own extent and at its height (0.8-1.25x): over it, or
    taller, such a word is a second, looser reading of text (a CT's 29-px "MRN" read as "“ARN" at 19 in a box
    50 px high and wider than the label, into the texture beside it). Returns the grown box and the words taken
    in."""
    a0, a1, b0, b1 = _axes(vertical)
    box = list(line)
    size = max(1, box[b1] - box[b0])
    taken: list[FoundWord] = []
    first = (box[a0], box[a1])
    left = [x for x in words if x.vertical == vertical
            and (x.conf >= weak_below or ((x.box[a0] >= first[1] or x.box[a1] <= first[0])
                                          and 0.8 * size <= x.box[b1] - x.box[b0] <= 1.25 * size))]
    # at most the line's own length again and the space between (no chain along a row of texture): "NGUYEN" and
    # "VAN AN" (13 characters with the space) span 258 px from a 113-px "NGUYEN" with a 25-px gap
    most = 2 * (box[a1] - box[a0]) + join * size
    grown = True
    while grown:
        grown = False
        for x in left:
            xb = x.box
            xs = xb[b1] - xb[b0]
            over = min(box[b1], xb[b1]) - max(box[b0], xb[b0])
            if not (over >= 0.5 * min(size, xs) and 0.5 * size <= xs <= 2 * size):
                continue
            if (xb[a0] <= box[a1] + join * size and box[a0] <= xb[a1] + join * size
                    and max(box[a1], xb[a1]) - min(box[a0], xb[a0]) <= most):
                taken.append(x)
                box[a0], box[a1] = min(box[a0], xb[a0]), max(box[a1], xb[a1])
                grown = True
        left = [x for x in left if all(x is not t for t in taken)]
    pad = round(reach * size)
    box[a0], box[a1] = max(0, box[a0] - pad), min(w if not vertical else h, box[a1] + pad)
    return (box[0], box[1], box[2], box[3]), taken
