"""One Tesseract per process: layout analysis (where are text lines?) and recognition of small crops.

Starting the ``tesseract`` program costs ~0.25 s of CPU per call (it loads its model every time), more than
reading a 200-px crop, so the in-process API of ``tesserocr`` is used: the model is loaded once per worker and
each crop costs only its own recognition (~15-40 ms). Its layout analysis (text lines without recognition) has
no command-line equivalent; a pytesseract fallback was measured 15x slower and kept fewer annotations, so
tesserocr is required (a declared dependency; its wheel bundles libtesseract and reads Debian's tessdata).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from medsight.deid.leptonica import quiet_leptonica
from medsight.errors import ConfigError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


@dataclass(frozen=True)
class Read:
    """One word as Tesseract read it in the image it was given: text, confidence 0-100, box, line number, and the
    confidence of its least confident character (-1: not known)."""

    text: str
    conf: float
    box: Box
    line: int
    chars: float = -1.0


def tessdata_dir() -> str | None:
    """The folder holding ``<lang>.traineddata`` (TESSDATA_PREFIX, else Debian's), None to let Tesseract decide."""
    env = os.environ.get("TESSDATA_PREFIX")
    if env:
        return env
    found = sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata/eng.traineddata"))
    return os.path.dirname(found[-1]) if found else None


class Engine:
    """Layout and word reading with one loaded Tesseract model (tesserocr)."""

    def __init__(self, lang: str = "eng") -> None:
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one thread per call: worker processes give the parallelism
        self.lang = lang
        try:
            import tesserocr
        except ImportError:
            raise ConfigError("burned-in text redaction needs tesserocr (pip install tesserocr, a declared "
                              "dependency of medsight)") from None
        try:
            self.api = tesserocr.PyTessBaseAPI(path=tessdata_dir() or "", lang=lang, psm=tesserocr.PSM.SPARSE_TEXT)
        except RuntimeError as err:
            raise ConfigError(f"Tesseract could not load language {lang!r} ({err}); install tesseract-ocr-{lang} "
                              "or set TESSDATA_PREFIX") from None
        # we hand it both polarities ourselves; its own inverted retry per line halves its speed
        self.api.SetVariable("tessedit_do_invert", "0")
        quiet_leptonica()  # harmless "Error in pixScanForForeground" lines for empty crops: not a user's concern
        self.tesserocr = tesserocr
        self.backend = f"tesserocr {tesserocr.__version__} (libtesseract {tesserocr.tesseract_version().split()[1]})"

    def _set(self, img: np.ndarray) -> None:
        """Hand an 8-bit grey image over as raw bytes (SetImage with a PIL image encodes a BMP first)."""
        buf = np.ascontiguousarray(img, np.uint8)
        self._buf = buf.tobytes()  # Tesseract does not copy the buffer: keep it alive until the next image
        self.api.SetImageBytes(self._buf, buf.shape[1], buf.shape[0], 1, buf.shape[1])

    def lines(self, img: np.ndarray) -> list[Box]:
        """Boxes of the text lines Tesseract's layout analysis finds in a dark-on-light image (no recognition)."""
        t = self.tesserocr
        self.api.SetPageSegMode(t.PSM.SPARSE_TEXT)
        self._set(img)
        # the layout iterator gives the boxes only (GetComponentImages also cuts each line out as a PIL image)
        it = self.api.AnalyseLayout()
        out: list[Box] = []
        while it is not None:
            if it.BlockType() in _TEXT_BLOCKS:
                box = it.BoundingBox(t.RIL.TEXTLINE)
                if box is not None:
                    out.append(tuple(int(v) for v in box))  # type: ignore[arg-type]
            if not it.Next(t.RIL.TEXTLINE):
                break
        return out

    def words(self, img: np.ndarray, psm: int = 6) -> list[Read]:
        """Every word read in a dark-on-light image, with its line number (words of one line share it).

        Each word also carries its least confident character's confidence (``Read.chars``): Tesseract 5 may give
        a word 0 while reading each of its characters at >= 80 (tesseract-ocr/tesseract#3983; "VAN-AN" of a
        planted name beside an ultrasound's Doppler box, a turned date "04/08/19<" cut by a fill). The word's
        own figure is kept: it also marks made-up words read in speckle ("mete!", "Sere": 0-20 as words,
        80-99 by their characters), which ``reading.FoundWord.sure`` relies on."""
        t = self.tesserocr
        self.api.SetPageSegMode(psm)
        self._set(img)
        self.api.Recognize()
        out: list[Read] = []
        it = self.api.GetIterator()
        line = -1
        word: list = []  # text, confidence, box of the word being walked; then its characters' confidences
        while it is not None:
            if it.IsAtBeginningOf(t.RIL.TEXTLINE):
                line += 1
            if it.IsAtBeginningOf(t.RIL.WORD):
                _finish(word, out)
                word = _start(it, t, max(line, 0))
            if word:
                word[4].append(float(it.Confidence(t.RIL.SYMBOL)))
            if not it.Next(t.RIL.SYMBOL):
                break
        _finish(word, out)
        return out


def _start(it, t, line: int) -> list:
    """[text, confidence, box, line, character confidences] of the word at the iterator, [] when empty."""
    try:
        text = (it.GetUTF8Text(t.RIL.WORD) or "").strip()
    except RuntimeError:  # an empty word ("No text returned")
        return []
    box = it.BoundingBox(t.RIL.WORD) if text else None
    if not text or box is None:
        return []
    return [text, float(it.Confidence(t.RIL.WORD)), tuple(int(v) for v in box), line, []]


def _finish(word: list, out: list[Read]) -> None:
    if word:
        text, conf, box, line, chars = word
        out.append(Read(text, conf, box, line, min(chars) if chars else -1.0))


_ENGINES: dict[str, Engine] = {}
# PolyBlockType values Tesseract counts as text (PTIsTextType: flowing, heading, pullout text, inline equation,
# table, vertical text, caption), the blocks GetComponentImages(text_only=True) keeps
_TEXT_BLOCKS = frozenset((1, 2, 3, 5, 6, 7, 8))


def engine(lang: str = "eng") -> Engine:
    """This process's engine for ``lang`` (created on first use; workers each load their own)."""
    if lang not in _ENGINES:
        _ENGINES[lang] = Engine(lang)
    return _ENGINES[lang]
