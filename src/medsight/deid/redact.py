"""Redact burned-in identifiers in the pixels of one (header-de-identified) dataset; prove none is left readable.

1. decode every frame (compressed syntaxes too; the output is written as Explicit VR Little Endian);
2. blank the known text regions of this manufacturer/model (``regions``), before any OCR;
3. find text cheaply (``textfind``: top-hat morphology + Tesseract's layout analysis, both polarities, level and
   turned 90 degrees; plus the flat-colour "ink" page where it is sparse) on a static composite of the frames (their minimum for light text, maximum for dark text:
   burned-in text stays put while a cine loop's anatomy moves), and read only those boxes (``reading``); a weak
   level reading is tried again on the crop's own text colour (``ink.colour_page``);
4. classify every word (``words``): identifiers (the header's own PHI values, dates, times, ID numbers, unknown
   words that may be names) are filled, with the rest of their printed line, in *every* frame; annotations
   (units, scales, device parameters, view labels) are kept;
5. find and read again on the changed pixels (crops whose pixels did not change keep their reading); repeat up
   to ``rounds`` times while identifiers are read;
6. only if the last reading finds no identifier of >= ``min_chars`` letters/digits at confidence >=
   ``verify_conf`` is the dataset changed: new Pixel Data, BurnedInAnnotation NO, the Clean Pixel Data Option
   (DCM 113101) in the de-identification method. Otherwise it is left untouched and the result says why, so
   the caller holds the file back.

``mode="full-frame"`` is the earlier method, kept for comparison: the whole frame read at ~2048 px in both
polarities and two rotations, and every word filled, whatever it says.
Recognised text never leaves this module in clear: the result carries a keyed hash of each word.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage
from pydicom.uid import ExplicitVRLittleEndian

from medsight.deid.ocr import OcrSettings, display_grey, display_levels, read_words
from medsight.deid.reading import CropReader, FoundWord, along_line, better, crop_box, resolve, weak
from medsight.deid.regions import DEFAULT_REGIONS, TextRegion, regions_for
from medsight.deid.tess import engine
from medsight.deid.ink import colour_page, drop_specks, flat_ink, ink_colours
from medsight.deid.textfind import INK, POLARITIES, FindSettings, find_text, page, page_contrast, tophat
from medsight.deid.words import IDENTIFIER, classify

OUTPUT_SYNTAX = ExplicitVRLittleEndian
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
MAX_TEXT_HEIGHT = 0.1  # share of the frame's short side: taller "words" are layout analysis reading texture
WINDOW_PAD = 80  # px around a filled box that a later reading searches again (> top-hat 15 + 64-px line)
STATIC_TOLERANCE = 8  # grey levels a "static" pixel may vary across frames (lossy compression noise)
MODES = ("find", "full-frame")
_CROSS = ndimage.generate_binary_structure(2, 1)  # closing the ink page: antialiased stroke gaps of 1 px


@dataclass(frozen=True)
class RedactOptions:
    """What counts as text, how hard to look, and which regions are known; recorded in the report."""

    min_chars: int = 3  # verification: no identifier with this many letters/digits may still be read
    min_conf: float = 30.0  # detection: Tesseract confidence from which an identifier is filled
    unknown_conf: float = 60.0  # ... for an identifier only because it is an unknown word (speckle and
    # half-seen strokes read as short made-up words at 30-59; names and the deid-data banners read at 60-97)
    ink_strict: bool = True  # flat-ink crops too need ``unknown_conf`` for an unknown word (False: ``min_conf``)
    verify_conf: float = 60.0  # verification: confidence from which an identifier counts as readable
    rounds: int = 3  # redact-and-reread rounds before giving up (later rounds re-read only around what changed)
    pad: int = 3  # pixels around each word box, plus 20 % of its height
    along: float = 0.6  # an identifier's line is filled this many line heights further along at each end, and
    # on to the words read on the same printed line within that reach (``reading.along_line``)
    use_ocr: bool = True  # False: blank only the region table (OCR still verifies)
    regions: tuple[TextRegion, ...] = DEFAULT_REGIONS
    mode: str = "find"  # "find": detect text, read only there, redact identifiers; "full-frame": the old way
    ocr: OcrSettings = field(default_factory=OcrSettings)
    find: FindSettings = field(default_factory=FindSettings)


@dataclass
class RedactResult:
    """What was found, what was filled, and whether the verification passed (no identifier in clear)."""

    clean: bool
    reason: str
    method: str
    transfer_syntax: str = ""
    frames: int = 0
    boxes: list[dict] = field(default_factory=list)
    residual: list[dict] = field(default_factory=list)
    ocr_passes: int = 0
    kept: int = 0  # annotation words read and left in place (last reading)

    def to_json(self) -> str:
        return json.dumps({"clean": self.clean, "method": self.method, "transfer_syntax": self.transfer_syntax,
                           "frames": self.frames, "ocr_passes": self.ocr_passes, "kept_words": self.kept,
                           "boxes": self.boxes, "residual": self.residual}, separators=(",", ":"))


def decode_frames(ds: Dataset) -> np.ndarray:
    """All frames as a writable (F, H, W) or (F, H, W, 3) array; compressed data is decompressed in ``ds``."""
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)  # keeps our pseudonymous SOP Instance UID
    arr = np.array(ds.pixel_array)  # a copy: pydicom may hand out a read-only view of the bytes
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    single = int(ds.get("NumberOfFrames", 1) or 1) == 1
    if single:
        arr = arr[None]
    if arr.ndim != (4 if samples == 3 else 3):
        raise ValueError(f"unexpected pixel array shape {arr.shape} for {samples} samples per pixel")
    return arr


def _pad(box: tuple[int, int, int, int], pad: int, h: int, w: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    p = pad + round(0.2 * min(y1 - y0, x1 - x0))
    return max(0, x0 - p), max(0, y0 - p), min(w, x1 + p), min(h, y1 + p)


class _Redactor:
    def __init__(self, ds: Dataset, frames: np.ndarray, options: RedactOptions, text_hash: Callable[[str], str],
                 terms: frozenset[str]):
        self.frames, self.o, self.hash, self.terms = frames, options, text_hash, terms
        self.photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        self.h, self.w = frames.shape[1:3]
        self.lut = None
        if self.photometric == "PALETTE COLOR":  # read the colours a viewer shows, fill with the darkest entry
            from pydicom.pixels import apply_color_lut

            self.lut = lambda a: apply_color_lut(a, ds)
            levels = np.arange(int(frames.min()), int(frames.max()) + 1)
            self.fill_value = levels[int(np.argmin(self.lut(levels).astype(np.float64).sum(axis=-1)))]
        elif frames.ndim == 4:
            self.fill_value = 0
        elif self.photometric == "MONOCHROME1":
            self.fill_value = frames.max()  # black on a MONOCHROME1 display
        else:
            self.fill_value = frames.min()
        self.boxes: dict[tuple, dict] = {}
        self.passes = 0
        self.changed: list[tuple[int, int, int, int]] = []  # boxes filled since the last reading
        self.filled = np.zeros((self.h, self.w), bool)  # every pixel a fill covers: flat colour, but not ink
        self.candidates: list | None = None  # the last reading's text boxes
        self.page_hi: dict[str, float] = {}
        self.levels: dict[str, tuple[float, float]] = {}  # display levels of the first reading
        self.hats: dict[str, np.ndarray] = {}  # the last reading's top-hats  # page contrast of the first reading, kept so unchanged crops match
        self.static = None
        if len(frames) > 1:  # burned-in annotations stay put while the anatomy moves: speckle read as "words"
            spread = frames.max(axis=0).astype(np.int32) - frames.min(axis=0)  # in a cine loop is not static
            self.static = (spread.max(axis=-1) if spread.ndim == 3 else spread) <= STATIC_TOLERANCE
        self.reader = CropReader(engine(options.ocr.lang), terms) if options.mode == "find" else None
        self.use_ink: bool | None = None if options.find.flat_ink else False  # the flat-ink page (``read``)

    def is_static(self, box: tuple[int, int, int, int]) -> bool:
        """Multi-frame: at least half of the box is the same in every frame (single frames: always true)."""
        if self.static is None:
            return True
        x0, y0, x1, y1 = box
        patch = self.static[y0:y1, x0:x1]
        return patch.size > 0 and float(patch.mean()) >= 0.5

    def fill(self, box: tuple[int, int, int, int], source: str, frame: int | None, text: str = "") -> None:
        x0, y0, x1, y1 = box
        self.frames[:, y0:y1, x0:x1] = self.fill_value
        self.filled[y0:y1, x0:x1] = True
        self.changed.append(box)
        key = (source, text and self.hash(text), x0 // 4, y0 // 4, x1 // 4, y1 // 4)
        entry = self.boxes.setdefault(key, {"box": [x0, y0, x1 - x0, y1 - y0], "source": source, "frames": []})
        if text:
            entry["text_hmac"] = self.hash(text)
        if frame is not None and frame not in entry["frames"]:
            entry["frames"].append(frame)

    def _grey(self, frame: np.ndarray) -> np.ndarray:
        shown = frame if self.lut is None else self.lut(frame)
        return shown.max(axis=-1) if shown.ndim == 3 else shown

    def read(self) -> list[tuple[int, FoundWord]]:
        """(frame index, word) for every word read; "find" reads a static composite once (frame index 0)."""
        self.passes += 1
        if self.reader is None:
            return self._read_full_frames()
        if len(self.frames) == 1:
            light = dark = self._display(self._grey(self.frames[0]), "single")
        else:  # light text survives the minimum over frames, dark text the maximum; moving anatomy fades
            greys = np.stack([self._grey(f) for f in self.frames])
            raw_min = greys.min(axis=0)
            light, dark = self._display(greys.min(axis=0), "min"), self._display(greys.max(axis=0), "max")
            if self.photometric == "MONOCHROME1":
                light, dark = dark, light
        windows = self._windows() if self.candidates is not None else None
        hats = {p: self._tophat(light if p == "light-on-dark" else dark, p, windows) for p in POLARITIES}
        for p, h in hats.items():
            self.page_hi.setdefault(p, page_contrast(h))
        pages = {p: page(h, self.page_hi[p]) for p, h in hats.items()}
        greys = {"light-on-dark": light, "dark-on-light": dark}
        if self.use_ink is not False:  # decided on the first reading, kept for the later ones
            ink = flat_ink(self.frames[0] if len(self.frames) == 1 else raw_min, hats)
            if self.use_ink is None:
                self.use_ink = float(ink.mean()) <= self.o.find.ink_max
        clean = None
        if self.use_ink:
            ink &= ~self.filled  # a fill is one flat colour too: its edges would become "lines" of ink
            hats[INK] = ink_colours(self.frames[0] if len(self.frames) == 1 else raw_min, ink)
            pages[INK] = np.where(ndimage.binary_closing(ink, _CROSS), np.uint8(0), np.uint8(255))
            greys[INK] = pages[INK]
            clean = np.where(ndimage.binary_closing(drop_specks(ink), _CROSS), np.uint8(0), np.uint8(255))
        self.candidates = find_text(greys, hats, pages, self.reader.eng, self.o.find, windows, self.candidates)
        self.changed = []
        # a turned line of ink is read without isolated specks of its colour: around a turned name over speckle
        # they spoil the reading (``drop_specks``); a level line keeps them (faint level text over speckle breaks
        # into such fragments itself, and reads better with them: measured on both)
        readings = [(c, self.reader.read(c, clean, "clean") if c.polarity == INK and c.vertical and clean is not None
                     else self.reader.read(c, pages[c.polarity])) for c in self.candidates]
        raw = self.frames[0] if len(self.frames) == 1 else raw_min
        readings = [(c, self._colour_retry(c, words, raw)) for c, words in readings]
        return [(0, w) for w in resolve(readings)]

    def _colour_retry(self, c, words: list[FoundWord], raw: np.ndarray) -> list[FoundWord]:
        """A weak reading of a top-hat candidate read again on its text colour alone (``colour_page``): a faint
        name in one flat grey beside brighter speckle is lost in the stretched top-hat crop, and found when only
        the pixels of its own colour are drawn. The better of the two readings is kept."""
        if c.polarity == INK or c.vertical or not weak(words) or not any(w.n_alnum >= 3 for w in words):
            return words  # read well already, or nothing word-like in it (most speckle and anatomy boxes); turned
            # boxes: on the planted benchmark 4 of their colour readings won, none with an identifier, at the
            # cost of as many reads again as the level ones
        page = colour_page(raw, crop_box(c, self.h, self.w))
        return words if page is None else better(words, self.reader.read(c, page, "colour"))

    def _display(self, grey: np.ndarray, which: str) -> np.ndarray:
        """The display grey with the first reading's levels: a fill must not restretch the untouched pixels."""
        if which not in self.levels:
            self.levels[which] = display_levels(grey)
        return display_grey(grey, self.photometric, self.levels[which])

    def _tophat(self, grey: np.ndarray, polarity: str, windows: list | None) -> np.ndarray:
        """The top-hat of ``grey``; in a later reading only around the windows (every changed pixel lies in one).
        A top-hat pixel depends on the pixels within ``size`` (an erosion then a dilation): a change reaches
        ``size`` px out of its window, and that band is computed from another ``size`` px around it."""
        size = self.o.find.tophat
        if windows is None or polarity not in self.hats:
            self.hats[polarity] = tophat(grey, polarity, size)
            return self.hats[polarity]
        hat = self.hats[polarity]
        for x0, y0, x1, y1 in windows:
            p0, q0, p1, q1 = max(0, x0 - size), max(0, y0 - size), min(self.w, x1 + size), min(self.h, y1 + size)
            a0, b0, a1, b1 = max(0, p0 - size), max(0, q0 - size), min(self.w, p1 + size), min(self.h, q1 + size)
            part = tophat(grey[b0:b1, a0:a1], polarity, size)
            hat[q0:q1, p0:p1] = part[q0 - b0:q1 - b0, p0 - a0:p1 - a0]
        return hat

    def _windows(self) -> list[tuple[int, int, int, int]]:
        """Where a later reading must look again: each filled box grown to every earlier text box it overlaps,
        and by ``WINDOW_PAD`` (more than the top-hat and a line's height), overlapping windows united.
        Everywhere else the pixels, and so the text boxes and their readings, are those of the last reading."""
        pad = WINDOW_PAD
        out = [[max(0, x0 - pad), max(0, y0 - pad), min(self.w, x1 + pad), min(self.h, y1 + pad)]
               for x0, y0, x1, y1 in self.changed]
        for c in self.candidates or []:
            for (f0, g0, f1, g1), wdw in zip(self.changed, out):
                b = c.box  # a text box the fill touched: it may now read differently anywhere along its length
                if min(b[2], f1) > max(b[0], f0) and min(b[3], g1) > max(b[1], g0):
                    wdw[:] = [max(0, min(wdw[0], b[0] - pad)), max(0, min(wdw[1], b[1] - pad)),
                              min(self.w, max(wdw[2], b[2] + pad)), min(self.h, max(wdw[3], b[3] + pad))]
        merged = True
        while merged:
            merged = False
            for i in range(len(out)):
                for j in range(i + 1, len(out)):
                    a, b = out[i], out[j]
                    if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]):
                        out[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                        del out[j]
                        merged = True
                        break
                if merged:
                    break
        return [tuple(w) for w in out]  # type: ignore[misc]

    def _read_full_frames(self) -> list[tuple[int, FoundWord]]:
        seen: dict[str, list[FoundWord]] = {}
        out = []
        for i, frame in enumerate(self.frames):
            digest = hashlib.sha1(frame.tobytes()).hexdigest()
            if digest not in seen:
                words = read_words(display_grey(self._grey(frame) if self.lut is not None else frame,
                                                self.photometric), self.o.ocr)
                seen[digest] = [FoundWord(w.text, w.conf, w.box, (id(w),), bool(w.rotation % 180),
                                          *classify(w.text, self.terms), w.box) for w in words]
            out.extend((i, w) for w in seen[digest])
        return out

    def _text_like(self, w: FoundWord) -> bool:
        return w.n_alnum >= 1 and self.is_static(w.box) and (
            min(w.box[2] - w.box[0], w.box[3] - w.box[1]) <= MAX_TEXT_HEIGHT * min(self.h, self.w))

    def _counts(self, w: FoundWord) -> bool:
        """An identifier read with enough confidence to be filled."""
        # flat-ink crops hold no speckle to misread as made-up words: any identifier read there counts
        need = self.o.unknown_conf if w.rule.startswith("unknown") and (w.line[1] != INK or self.o.ink_strict) else self.o.min_conf
        return w.identifier and w.sure >= need and self._text_like(w)

    def hits(self, words: list[tuple[int, FoundWord]]) -> list[tuple[int, tuple, str]]:
        """(frame, box, text) to fill. "find": identifiers, each with its whole printed line; "full-frame": every
        word read with some confidence."""
        if self.reader is None:
            return [(i, w.box, w.text) for i, w in words if w.conf >= self.o.min_conf and self._text_like(w)]
        lines = {w.line for _i, w in words if self._counts(w)}
        out = []
        for i, w in words:
            if w.line in lines:
                out.append((i, w.box, w.text))
                if self._counts(w):  # the line's extent, grown along it: letters OCR did not put in a word,
                    box, taken = along_line(w.line_box, w.vertical, [x for _j, x in words if x.line not in lines
                                                                and max(x.conf, x.chars) >= self.o.min_conf
                                                                and self._text_like(x)],
                                            self.h, self.w, self.o.along, weak_below=self.o.min_conf)
                    # and the rest of the printed line: a word is taken when its characters are read at >=
                    # min_conf, though Tesseract scores the word lower (``tess.Engine.words``), beyond the line
                    out.append((i, box, ""))
                    out += [(i, x.box, x.text) for x in taken]
        return out

    def readable(self, words: list[tuple[int, FoundWord]]) -> list[tuple[int, FoundWord]]:
        """Words that fail the verification: identifiers ("full-frame": any word) of >= min_chars letters/digits
        read with confidence >= verify_conf."""
        return [(i, w) for i, w in words
                if (w.identifier or self.reader is None)
                and w.sure >= (self.o.verify_conf if w.line[1] != INK or self.o.ink_strict else self.o.min_conf)
                and w.n_alnum >= self.o.min_chars and self.is_static(w.box)]


def _ranges(frames: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5": the frames a word was read in, short enough for a report cell."""
    out, run = [], []
    for f in sorted(frames):
        if run and f == run[-1] + 1:
            run.append(f)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [f]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def _method(options: RedactOptions, n_regions: int, backend: str) -> str:
    detect = "OCR" if options.use_ocr else "region table only"
    if options.mode == "full-frame":
        how = (f"{options.ocr.describe()}; every word with confidence >= {options.min_conf:g} filled; verified: no "
               f"word of >= {options.min_chars} letters/digits read at confidence >= {options.verify_conf:g}")
    else:
        f = options.find
        ink = (f", plus a flat-colour ink page where it covers <= {f.ink_max:.0%} of the frame" if f.flat_ink else "")
        how = (f"text found by top-hat morphology ({f.tophat} px, contrast >= {' or '.join(map(str, f.contrasts))}) and Tesseract layout "
               f"analysis (on a 2x smaller page from {f.layout_halve / 1e6:g} MP){ink}, read only there ({backend}); "
               f"identifiers (header values, dates, times, IDs, unknown words) filled with their line, grown "
               f"{options.along:g} line heights along it and on to the words read on it, annotations kept; verified: "
               f"no identifier of >= {options.min_chars} letters/digits read at confidence >= {options.verify_conf:g}")
    return (f"{detect}; {n_regions} known region box(es) blanked first; {how}; at most {options.rounds} round(s); "
            f"multi-frame: only words over pixels that are static across frames (+-{STATIC_TOLERANCE}) count")


def redact_dataset(ds: Dataset, options: RedactOptions, text_hash: Callable[[str], str],
                   phi: frozenset[str] = frozenset()) -> RedactResult:
    """Find, fill and verify (module docstring); ``ds`` is changed only when the result is ``clean``.

    ``phi``: normalised identifying values of the original header (``words.phi_terms``), read before the
    header was de-identified; words matching them are identifiers whatever they look like.
    """
    if options.mode not in MODES:
        raise ValueError(f"redaction mode must be one of {MODES}, got {options.mode!r}")
    frames = decode_frames(ds)
    r = _Redactor(ds, frames, options, text_hash, phi)
    known = regions_for(ds, options.regions)
    method = _method(options, len(known), r.reader.eng.backend if r.reader else "pytesseract")
    for name, box in known:
        r.fill(box, f"table:{name}", None)
    words = r.read()
    rounds = 0
    hits = r.hits(words) if options.use_ocr else []
    while hits and rounds < options.rounds:
        for i, box, text in hits:
            r.fill(_pad(box, options.pad, r.h, r.w) if text else box, "ocr", i if len(frames) == 1 or
                   r.reader is None else None, text)
        rounds += 1
        words = r.read()
        hits = r.hits(words) if r.readable(words) or options.mode == "find" else []
    residual = r.readable(words)
    boxes = list(r.boxes.values())
    for b in boxes:
        b["frames"] = _ranges(b["frames"]) if b["frames"] else "all"
    result = RedactResult(clean=not residual, reason="", method=method, frames=len(frames), boxes=boxes,
                          ocr_passes=r.passes, kept=sum(1 for _i, w in words if not w.identifier))
    if residual:
        frames_left = sorted({i for i, _ in residual})
        result.residual = [{"frame": i, "box": list(w.box), "chars": w.n_alnum, "text_hmac": text_hash(w.text)}
                           for i, w in residual]
        result.reason = (f"OCR still reads {len(residual)} identifier(s) of >= {options.min_chars} letters/digits "
                         f"after {rounds} redaction round(s) (frames {frames_left[:5]}"
                         f"{'...' if len(frames_left) > 5 else ''})")
        return result
    _store(ds, frames)
    result.transfer_syntax = str(OUTPUT_SYNTAX)
    return result


def _store(ds: Dataset, frames: np.ndarray) -> None:
    """Write the redacted frames back as native Explicit VR Little Endian and record the Clean Pixel Data option."""
    arr = frames[0] if int(ds.get("NumberOfFrames", 1) or 1) == 1 else frames
    data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds.PixelData = data + b"\x00" if len(data) % 2 else data
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) <= 8 else "OW"
    if int(ds.get("SamplesPerPixel", 1) or 1) == 3:
        ds.PhotometricInterpretation = "RGB"  # YBR data came out of the decoder as RGB
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = OUTPUT_SYNTAX
    ds.BurnedInAnnotation = "NO"
    methods = list(ds.get("DeidentificationMethod", []) or [])
    if isinstance(ds.get("DeidentificationMethod"), str):
        methods = [ds.DeidentificationMethod]
    ds.DeidentificationMethod = methods + ["burned-in text redacted (OCR verified)"]
    codes = ds.get("DeidentificationMethodCodeSequence")
    if codes is not None:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CLEAN_PIXEL_CODE[0], "DCM", CLEAN_PIXEL_CODE[1]
        codes.append(item)
