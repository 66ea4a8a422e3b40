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
    line_box: Box  # the candidate's extent along the line and the line's extent across it (frame pixels)

    @property
    def n_alnum(self) -> int:
        return sum(ch.isalnum() for ch in self.text)

    @property
    def identifier(self) -> bool:
        return self.kind == IDENTIFIER


def _crop_box(c: Candidate, h: int, w: int) -> Box:
    x0, y0, x1, y1 = c.box
    p = max(3, c.across // 3)
    return max(0, x0 - p), max(0, y0 - p), min(w, x1 + p), min(h, y1 + p)


class CropReader:
    """Reads candidates with one engine, caching each reading under the crop's pixels."""

    def __init__(self, eng: Engine, terms: frozenset[str] = frozenset(), psm: int = 7) -> None:
        self.eng, self.terms, self.psm = eng, terms, psm
        self.cache: dict[tuple, list[FoundWord]] = {}
        self.crops_read = 0

    def read(self, c: Candidate, page: np.ndarray) -> list[FoundWord]:
        """The words of candidate ``c``, read in its polarity's page (cached under the crop's pixels)."""
        h, w = page.shape
        box = _crop_box(c, h, w)
        cx0, cy0, cx1, cy1 = box
        crop = page[cy0:cy1, cx0:cx1]
        key = (c.polarity, c.vertical, box, hashlib.sha1(crop.tobytes()).digest())
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
        words = []
        ch = cy1 - cy0
        line_span: dict[int, list[float]] = {}
        mapped = []
        for r in reads:
            x0, y0, x1, y1 = ((v - BORDER) / s for v in r.box)
            if c.vertical:  # the crop was turned clockwise: (x', y') came from (x = y', y = ch - x')
                x0, y0, x1, y1 = y0, ch - x1, y1, ch - x0
            wbox = (int(np.floor(x0)) + cx0, int(np.floor(y0)) + cy0, int(np.ceil(x1)) + cx0, int(np.ceil(y1)) + cy0)
            wbox = (max(0, wbox[0]), max(0, wbox[1]), min(w, wbox[2]), min(h, wbox[3]))
            mapped.append((r, wbox))
            lo, hi = (wbox[0], wbox[2]) if c.vertical else (wbox[1], wbox[3])
            span = line_span.setdefault(r.line, [lo, hi])
            span[0], span[1] = min(span[0], lo), max(span[1], hi)
        for r, wbox in mapped:
            kind, rule = classify(r.text, self.terms)
            lo, hi = line_span[r.line]
            line_box = (int(lo), cy0, int(hi), cy1) if c.vertical else (cx0, int(lo), cx1, int(hi))
            words.append(FoundWord(r.text, r.conf, wbox, (c.box, c.polarity, c.vertical, r.line), c.vertical, kind,
                                   rule, line_box))
        return words


def _score(words: list[FoundWord]) -> float:
    return sum(w.conf * w.n_alnum for w in words if w.conf >= 30)


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


def along_line(line: Box, vertical: bool, words: list[FoundWord], h: int, w: int, reach: float = 1.0
               ) -> tuple[Box, list[FoundWord]]:
    """An identifier's printed line grown along its direction: by ``reach`` x its height on each side (a glyph
    at the end of the line that neither detector nor OCR put in the box: the leading "0" of a turned date over
    bone), then, repeatedly, to every word read on the same printed line (same direction, overlapping across by
    half the smaller height, height within 2x) that lies within that reach (the rest of a name after a space,
    found in another box: "NGUYEN" filled, "VAN AN" left), up to twice the line's own length (a chain of
    texture read as words along a radiograph must not run on). Returns the grown box and the words taken in."""
    a0, a1, b0, b1 = _axes(vertical)
    box = list(line)
    size = max(1, box[b1] - box[b0])
    taken: list[FoundWord] = []
    left = [x for x in words if x.vertical == vertical]
    most = 2 * (box[a1] - box[a0])  # at most the line's own length again: no chain along a row of texture
    grown = True
    while grown:
        grown = False
        for x in left:
            xb = x.box
            xs = xb[b1] - xb[b0]
            over = min(box[b1], xb[b1]) - max(box[b0], xb[b0])
            if not (over >= 0.5 * min(size, xs) and 0.5 * size <= xs <= 2 * size):
                continue
            if (xb[a0] <= box[a1] + reach * size and box[a0] <= xb[a1] + reach * size
                    and max(box[a1], xb[a1]) - min(box[a0], xb[a0]) <= most):
                taken.append(x)
                box[a0], box[a1] = min(box[a0], xb[a0]), max(box[a1], xb[a1])
                grown = True
        left = [x for x in left if all(x is not t for t in taken)]
    pad = round(reach * size)
    box[a0], box[a1] = max(0, box[a0] - pad), min(w if not vertical else h, box[a1] + pad)
    return (box[0], box[1], box[2], box[3]), taken
