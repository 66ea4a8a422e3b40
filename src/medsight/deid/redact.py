"""Redact burned-in text in the pixels of one (header-de-identified) dataset, then prove OCR reads nothing left.

1. decode every frame (compressed syntaxes too; the output is written as Explicit VR Little Endian);
2. blank the known text regions of this manufacturer/model (``regions``), before any OCR;
3. OCR every distinct frame (``ocr``) and fill the padded box of every word it reads with confidence
   >= ``min_conf``, in *every* frame (static overlays move little; a box found in one frame is blanked in all);
4. OCR again: if a word of >= ``min_chars`` letters/digits is still read (layout analysis changes once text is
   gone, so it can happen), fill those too and check again, up to ``rounds`` times;
5. only if the last OCR pass reads no such word is the dataset changed: new Pixel Data, BurnedInAnnotation NO,
   the Clean Pixel Data Option (DCM 113101) in the de-identification method. Otherwise it is left untouched and
   the result says why, so the caller holds the file back.

Recognised text never leaves this module in clear: the result carries a keyed hash of each word.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from medsight.deid.ocr import OcrSettings, Word, display_grey, read_words
from medsight.deid.regions import DEFAULT_REGIONS, TextRegion, regions_for

OUTPUT_SYNTAX = ExplicitVRLittleEndian
CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
MAX_TEXT_HEIGHT = 0.1  # share of the frame's short side: taller "words" are layout analysis reading texture
STATIC_TOLERANCE = 8  # grey levels a "static" pixel may vary across frames (lossy compression noise)


@dataclass(frozen=True)
class RedactOptions:
    """What counts as text, how hard to look, and which regions are known; recorded in the report."""

    min_chars: int = 3  # verification: no word with this many letters/digits may still be read
    min_conf: float = 30.0  # detection: Tesseract confidence from which a read word is filled
    verify_conf: float = 60.0  # verification: confidence from which a word counts as readable (speckle reads
    # as short "words" at 30-59 once the real text is gone; the deid-data banners read at 62-96)
    rounds: int = 2  # redact-and-reread rounds before giving up
    pad: int = 3  # pixels around each word box, plus 20 % of its height
    use_ocr: bool = True  # False: blank only the region table (OCR still verifies)
    regions: tuple[TextRegion, ...] = DEFAULT_REGIONS
    ocr: OcrSettings = field(default_factory=OcrSettings)


@dataclass
class RedactResult:
    """What was found, what was filled, and whether the verification passed (no text in clear)."""

    clean: bool
    reason: str
    method: str
    transfer_syntax: str = ""
    frames: int = 0
    boxes: list[dict] = field(default_factory=list)
    residual: list[dict] = field(default_factory=list)
    ocr_passes: int = 0

    def to_json(self) -> str:
        return json.dumps({"clean": self.clean, "method": self.method, "transfer_syntax": self.transfer_syntax,
                           "frames": self.frames, "ocr_passes": self.ocr_passes, "boxes": self.boxes,
                           "residual": self.residual}, separators=(",", ":"))


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
    p = pad + round(0.2 * (y1 - y0))
    return max(0, x0 - p), max(0, y0 - p), min(w, x1 + p), min(h, y1 + p)


class _Redactor:
    def __init__(self, ds: Dataset, frames: np.ndarray, options: RedactOptions, text_hash: Callable[[str], str]):
        self.frames, self.o, self.hash = frames, options, text_hash
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
        self.static = None
        if len(frames) > 1:  # burned-in annotations stay put while the anatomy moves: speckle read as "words"
            spread = frames.max(axis=0).astype(np.int32) - frames.min(axis=0)  # in a cine loop is not static
            self.static = (spread.max(axis=-1) if spread.ndim == 3 else spread) <= STATIC_TOLERANCE

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
        key = (source, text and self.hash(text), x0 // 4, y0 // 4, x1 // 4, y1 // 4)
        entry = self.boxes.setdefault(key, {"box": [x0, y0, x1 - x0, y1 - y0], "source": source, "frames": []})
        if text:
            entry["text_hmac"] = self.hash(text)
        if frame is not None and frame not in entry["frames"]:
            entry["frames"].append(frame)

    def read(self) -> list[tuple[int, Word]]:
        """OCR each distinct frame once; (frame index, word) for every word read."""
        seen: dict[str, list[Word]] = {}
        out = []
        for i, frame in enumerate(self.frames):
            digest = hashlib.sha1(frame.tobytes()).hexdigest()
            if digest not in seen:
                shown = frame if self.lut is None else self.lut(frame)
                seen[digest] = read_words(display_grey(shown, self.photometric), self.o.ocr)
                self.passes += 1
            out.extend((i, w) for w in seen[digest])
        return out

    def hits(self, words: list[tuple[int, Word]]) -> list[tuple[int, Word]]:
        """Words to fill: read with some confidence, with a letter or digit, of a text-like height, static."""
        tallest = MAX_TEXT_HEIGHT * min(self.h, self.w)
        return [(i, w) for i, w in words if w.conf >= self.o.min_conf and w.n_alnum >= 1
                and w.text_height <= tallest and self.is_static(w.box)]

    def readable(self, words: list[tuple[int, Word]]) -> list[tuple[int, Word]]:
        """Words that fail the verification: >= min_chars letters/digits read with confidence >= verify_conf."""
        return [(i, w) for i, w in words
                if w.conf >= self.o.verify_conf and w.n_alnum >= self.o.min_chars and self.is_static(w.box)]


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


def _method(options: RedactOptions, n_regions: int) -> str:
    detect = "OCR" if options.use_ocr else "region table only"
    return (f"{detect}; {n_regions} known region box(es) blanked first; {options.ocr.describe()}; words with "
            f"confidence >= {options.min_conf:g} and letters <= {MAX_TEXT_HEIGHT:g} of the short side filled (padded {options.pad} px + 20% of height) in every frame; "
            f"verified: no word of >= {options.min_chars} letters/digits read at confidence >= "
            f"{options.verify_conf:g} after at most {options.rounds} round(s); multi-frame: only words over pixels "
            f"that are static across frames (+-{STATIC_TOLERANCE}) count as text")


def redact_dataset(ds: Dataset, options: RedactOptions, text_hash: Callable[[str], str]) -> RedactResult:
    """Find, fill and verify (module docstring); ``ds`` is changed only when the result is ``clean``."""
    frames = decode_frames(ds)
    r = _Redactor(ds, frames, options, text_hash)
    known = regions_for(ds, options.regions)
    method = _method(options, len(known))
    for name, box in known:
        r.fill(box, f"table:{name}", None)
    words = r.read()
    rounds = 0
    hits = r.hits(words) if options.use_ocr else []
    while hits and rounds < options.rounds:
        for i, w in hits:
            r.fill(_pad(w.box, options.pad, r.h, r.w), "ocr", i, w.text)
        rounds += 1
        words = r.read()
        hits = r.hits(words) if r.readable(words) else []
    residual = r.readable(words)
    boxes = list(r.boxes.values())
    for b in boxes:
        b["frames"] = "all" if b["source"].startswith("table:") else _ranges(b["frames"])
    result = RedactResult(clean=not residual, reason="", method=method, frames=len(frames), boxes=boxes,
                          ocr_passes=r.passes)
    if residual:
        frames_left = sorted({i for i, _ in residual})
        result.residual = [{"frame": i, "box": list(w.box), "chars": w.n_alnum, "text_hmac": text_hash(w.text)}
                           for i, w in residual]
        result.reason = (f"OCR still reads {len(residual)} word(s) of >= {options.min_chars} letters/digits after "
                         f"{rounds} redaction round(s) (frames {frames_left[:5]}{'...' if len(frames_left) > 5 else ''})")
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
