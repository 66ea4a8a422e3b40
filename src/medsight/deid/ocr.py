"""Read burned-in text from one image frame with Tesseract, after the contrast handling medical images need.

Tesseract expects dark print on a light page at ~30 px per line; a medical frame is rarely like that: 12- or
16-bit grey values, MONOCHROME1 (inverted) grey, white or coloured text on black, 10-px annotation fonts, text
turned 90 degrees along an edge. So each frame is first brought to a displayable 8-bit grey image (percentile
scaling, MONOCHROME1 inverted, the brightest channel of colour images so that yellow or green text stays
bright), its background flattened by a morphological top-hat in both polarities (light-on-dark and
dark-on-light text), scaled so that its long side is about ``target_long_side`` pixels (small text grows; the
1x image is read too, for large text), and read at each requested rotation. Word boxes come back in the frame's
own pixel coordinates.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from medsight.errors import ConfigError


@dataclass(frozen=True)
class OcrSettings:
    """How frames are read. Recorded in the report (``describe``) so that a run can be reproduced."""

    psm: int = 11  # sparse text: annotations scattered over the frame, not a page of paragraphs
    target_long_side: int = 2048  # small frames are scaled up to this, large ones down (factor clipped below)
    min_scale: float = 0.5
    max_scale: float = 4.0
    rotations: tuple[int, ...] = (0, 90)  # 90: text running bottom-to-top (the usual vertical annotation)
    polarities: tuple[str, ...] = ("light-on-dark", "dark-on-light")
    tophat_fraction: float = 0.025  # structuring element of the top-hat, as a share of the long side (>= 15 px)
    lang: str = "eng"

    def describe(self) -> str:
        return (f"tesseract {tesseract_version()} psm {self.psm}, lang {self.lang}, long side ~{self.target_long_side}"
                f" px (and 1x when that is >= 1.5x), top-hat {self.tophat_fraction:g} of the long side, polarities {'+'.join(self.polarities)}, rotations {'/'.join(map(str, self.rotations))}")


@dataclass(frozen=True)
class Word:
    """One word Tesseract read: its text, confidence (0-100) and box (x0, y0, x1, y1) in frame pixels."""

    text: str
    conf: float
    box: tuple[int, int, int, int]
    rotation: int = 0  # the turn at which it was read (0: level, 90: running bottom to top)

    @property
    def n_alnum(self) -> int:
        return sum(ch.isalnum() for ch in self.text)

    @property
    def text_height(self) -> int:
        """Size across the reading direction, in frame pixels (the letters' height)."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) if self.rotation % 180 else (y1 - y0)


@lru_cache(maxsize=1)
def tesseract_version() -> str:
    """The installed Tesseract's version; a one-line ConfigError when it is missing."""
    import pytesseract

    if shutil.which(pytesseract.pytesseract.tesseract_cmd) is None:
        raise ConfigError("tesseract not found: install Debian's tesseract-ocr and tesseract-ocr-eng "
                          "(apt-get install tesseract-ocr tesseract-ocr-eng), or run without --redact-pixels")
    return str(pytesseract.get_tesseract_version())


def display_levels(frame: np.ndarray) -> tuple[float, float]:
    """The grey values ``display_grey`` shows as black and white: 0.5th percentile and maximum."""
    a = np.asarray(frame)
    if a.ndim == 3:
        a = a.max(axis=2)
    lo, hi = (float(v) for v in np.percentile(a, (0.5, 100.0)))
    if hi <= lo:
        lo, hi = float(a.min()), float(a.max())
    return lo, hi


def display_grey(frame: np.ndarray, photometric: str = "MONOCHROME2",
                 levels: tuple[float, float] | None = None) -> np.ndarray:
    """An 8-bit grey image of ``frame`` (H, W) or (H, W, 3) as a viewer would show it, text kept bright.
    ``levels``: (black, white) of an earlier look at the same frame, so untouched pixels keep their grey."""
    a = np.asarray(frame)
    lo, hi = display_levels(a) if levels is None else levels
    if a.ndim == 3:  # colour: the brightest channel keeps coloured text (yellow, green, cyan) bright
        a = a.max(axis=2)
    a = a.astype(np.float32, copy=False)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    # the top of the range is kept whole: burned-in text is usually drawn at the maximum value
    out = np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    if photometric.upper() == "MONOCHROME1":
        out = 255 - out
    return out


def _scale_for(shape: tuple[int, ...], settings: OcrSettings) -> float:
    return float(np.clip(settings.target_long_side / max(shape[:2]), settings.min_scale, settings.max_scale))


def _unrotate(box: tuple[float, float, float, float], k: int, h: int, w: int) -> tuple[float, float, float, float]:
    """Map a box read in ``np.rot90(img, k)`` back to ``img`` (h x w) coordinates."""
    x0, y0, x1, y1 = box
    if k % 4 == 0:
        return box
    if k % 4 == 3:  # rotated clockwise: new (x', y') came from (x = y', y = h - x')
        return y0, h - x1, y1, h - x0
    if k % 4 == 1:  # rotated anticlockwise: new (x', y') came from (x = w - y', y = x')
        return w - y1, x0, w - y0, x1
    return w - x1, h - y1, w - x0, h - y0  # 180 degrees


def _tesseract_words(img: np.ndarray, settings: OcrSettings) -> list[tuple[str, float, tuple[int, int, int, int]]]:
    import pytesseract
    from PIL import Image

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one thread per call: worker processes give the parallelism
    # tessedit_do_invert=0: we feed both polarities ourselves, and Tesseract's own per-line retry halves its speed
    data = pytesseract.image_to_data(Image.fromarray(img), lang=settings.lang,
                                     config=f"--psm {settings.psm} -c tessedit_do_invert=0",
                                     output_type=pytesseract.Output.DICT)
    out = []
    for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"], data["width"],
                                      data["height"]):
        text = str(text).strip()
        if text and float(conf) >= 0:
            out.append((text, float(conf), (int(x), int(y), int(x) + int(w), int(y) + int(h))))
    return out


def _variants(grey: np.ndarray, settings: OcrSettings) -> list[np.ndarray]:
    """Dark-print-on-white images Tesseract reads best, one per polarity.

    A morphological top-hat (the frame minus its opening, or its closing minus the frame) keeps strokes thinner
    than the structuring element and drops the smooth anatomy behind them, so text stays readable on a grey or
    uneven background (Tesseract's global threshold would merge it into the anatomy); then it is stretched and
    negated.
    """
    from scipy import ndimage

    size = max(15, round(settings.tophat_fraction * max(grey.shape)))
    out = []
    for polarity in settings.polarities:
        if polarity == "light-on-dark":
            hat = ndimage.white_tophat(grey, size=size)
        elif polarity == "dark-on-light":
            hat = ndimage.black_tophat(grey, size=size)
        else:
            raise ValueError(f"unknown polarity {polarity!r}")
        out.append(255 - display_grey(hat))
    return out


def read_words(grey: np.ndarray, settings: OcrSettings | None = None) -> list[Word]:
    """Every word Tesseract reads in an 8-bit grey frame, over all polarities and rotations, in frame pixels."""
    from PIL import Image

    settings = settings or OcrSettings()
    tesseract_version()
    h, w = grey.shape
    scale = _scale_for(grey.shape, settings)
    words: list[Word] = []
    for variant in _variants(grey, settings):
        # Tesseract misses text much taller than ~100 px: an upscaled frame is read at its own size too
        for s in (scale, 1.0) if scale >= 1.5 else (scale,):
            big = variant if s == 1.0 else np.asarray(
                Image.fromarray(variant).resize((round(w * s), round(h * s)), Image.BICUBIC))
            for rotation in settings.rotations:
                k = (-(rotation // 90)) % 4  # text turned anticlockwise reads level after a clockwise turn
                turned = np.ascontiguousarray(np.rot90(big, k)) if k else big
                for text, conf, box in _tesseract_words(turned, settings):
                    x0, y0, x1, y1 = _unrotate(box, k, big.shape[0], big.shape[1])
                    frame_box = (int(np.floor(x0 / s)), int(np.floor(y0 / s)),
                                 int(np.ceil(x1 / s)), int(np.ceil(y1 / s)))
                    words.append(Word(text, conf, frame_box, rotation))
    return words
