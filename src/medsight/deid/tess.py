"""One Tesseract per process: layout analysis (where are text lines?) and recognition of small crops.

Starting the ``tesseract`` program costs ~0.25 s of CPU per call (it loads its model every time), more than
reading a 200-px crop, so the in-process API of ``tesserocr`` is used when it is installed: the model is loaded
once per worker and each crop costs only its own recognition (~15-40 ms). Without tesserocr the same calls go
through ``pytesseract`` (one process per call: correct, several times slower).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from medsight.errors import ConfigError

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


@dataclass(frozen=True)
class Read:
    """One word as Tesseract read it in the image it was given: text, confidence 0-100, box, line number."""

    text: str
    conf: float
    box: Box
    line: int


def tessdata_dir() -> str | None:
    """The folder holding ``<lang>.traineddata`` (TESSDATA_PREFIX, else Debian's), None to let Tesseract decide."""
    env = os.environ.get("TESSDATA_PREFIX")
    if env:
        return env
    found = sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata/eng.traineddata"))
    return os.path.dirname(found[-1]) if found else None


class Engine:
    """Layout and word reading with one loaded model (tesserocr) or through the CLI (pytesseract)."""

    def __init__(self, lang: str = "eng") -> None:
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one thread per call: worker processes give the parallelism
        self.lang = lang
        try:
            import tesserocr
        except ImportError:
            self.api = None
            self.backend = "pytesseract"
            return
        try:
            self.api = tesserocr.PyTessBaseAPI(path=tessdata_dir() or "", lang=lang, psm=tesserocr.PSM.SPARSE_TEXT)
        except RuntimeError as err:
            raise ConfigError(f"Tesseract could not load language {lang!r} ({err}); install tesseract-ocr-{lang} "
                              "or set TESSDATA_PREFIX") from None
        # we hand it both polarities ourselves; its own inverted retry per line halves its speed
        self.api.SetVariable("tessedit_do_invert", "0")
        self.tesserocr = tesserocr
        self.backend = f"tesserocr {tesserocr.__version__} (libtesseract {tesserocr.tesseract_version().split()[1]})"

    def lines(self, img: np.ndarray) -> list[Box]:
        """Boxes of the text lines Tesseract's layout analysis finds in a dark-on-light image (no recognition)."""
        from PIL import Image

        if self.api is None:  # the CLI has no layout-only call: take the line boxes of a full read
            return _line_boxes(self.words(img, psm=11))
        t = self.tesserocr
        self.api.SetPageSegMode(t.PSM.SPARSE_TEXT)
        self.api.SetImage(Image.fromarray(img))
        comps = self.api.GetComponentImages(t.RIL.TEXTLINE, True)
        return [(c[1]["x"], c[1]["y"], c[1]["x"] + c[1]["w"], c[1]["y"] + c[1]["h"]) for c in comps]

    def words(self, img: np.ndarray, psm: int = 6) -> list[Read]:
        """Every word read in a dark-on-light image, with its line number (words of one line share it)."""
        from PIL import Image

        if self.api is None:
            return _cli_words(img, psm, self.lang)
        t = self.tesserocr
        self.api.SetPageSegMode(psm)
        self.api.SetImage(Image.fromarray(img))
        self.api.Recognize()
        out: list[Read] = []
        it = self.api.GetIterator()
        line = -1
        level = t.RIL.WORD
        while it is not None:
            if it.IsAtBeginningOf(t.RIL.TEXTLINE):
                line += 1
            try:
                text = (it.GetUTF8Text(level) or "").strip()
            except RuntimeError:  # an empty word ("No text returned")
                text = ""
            box = it.BoundingBox(level) if text else None
            if text and box is not None:
                out.append(Read(text, float(it.Confidence(level)), tuple(int(v) for v in box), max(line, 0)))
            if not it.Next(level):
                break
        return out


def _cli_words(img: np.ndarray, psm: int, lang: str) -> list[Read]:
    import pytesseract
    from PIL import Image

    d = pytesseract.image_to_data(Image.fromarray(img), lang=lang, config=f"--psm {psm} -c tessedit_do_invert=0",
                                  output_type=pytesseract.Output.DICT)
    lines: dict[tuple, int] = {}
    out = []
    for i, text in enumerate(d["text"]):
        text = str(text).strip()
        if not text or float(d["conf"][i]) < 0:
            continue
        line = lines.setdefault((d["block_num"][i], d["par_num"][i], d["line_num"][i]), len(lines))
        x, y, w, h = (int(d[k][i]) for k in ("left", "top", "width", "height"))
        out.append(Read(text, float(d["conf"][i]), (x, y, x + w, y + h), line))
    return out


def _line_boxes(words: list[Read]) -> list[Box]:
    boxes: dict[int, list[int]] = {}
    for w in words:
        b = boxes.setdefault(w.line, list(w.box))
        b[0], b[1], b[2], b[3] = min(b[0], w.box[0]), min(b[1], w.box[1]), max(b[2], w.box[2]), max(b[3], w.box[3])
    return [tuple(b) for b in boxes.values()]  # type: ignore[misc]


_ENGINES: dict[str, Engine] = {}


def engine(lang: str = "eng") -> Engine:
    """This process's engine for ``lang`` (created on first use; workers each load their own)."""
    if lang not in _ENGINES:
        _ENGINES[lang] = Engine(lang)
    return _ENGINES[lang]
