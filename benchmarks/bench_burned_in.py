"""Burned-in text: plant names, dates and IDs into real images, redact, and measure what is left readable.

Base images (pydicom-data): two ultrasounds (GE RGB 480x640 ``US1_UNCR``, Philips grey 768x1024
``JPGLosslessP14SV1_1s_1f_8b``; both already carry their own annotations), a chest CR (MONOCHROME1, 15-bit,
1955x1841 ``RG1_UNCI``) and a head CT (14-bit 512x512 ``693_UNCI``). Into each, ``--variants`` copies get three
strings each (a name, a date, an ID) with a random font (PIL's default + TTFs under /usr/share/fonts), size
8-40 px, contrast (100/60/35 % of the image's range, bright or dark on the display), position and rotation
(0 or 90 degrees). Then:

* **left readable**: each planted string's area is cut out of the redacted image (rotated level, scaled to
  ~32 px text, both polarities) and read by plain Tesseract; the characters it reads that match the planted
  string (longest common subsequence) over all planted characters. The same measure on the planted image before
  redaction says how many were readable in the first place;
* **ink left**: share of the planted text's own pixels not covered by a redaction box (OCR-independent);
* **false redaction**: redacted pixels outside the planted strings' boxes and outside what the same redaction
  removes from the unplanted base image (its own annotations), over the image area;
* **files/s**: ``redact_dataset`` per planted image, single process (median seconds per file -> files/s).

presidio-image-redactor is run on the same files when it imports and its analyzer can start offline.

    nice -n 10 python benchmarks/bench_burned_in.py --variants 4 [--write-md docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import platform
import random
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont

from medsight.deid.ocr import tesseract_version
from medsight.deid.redact import RedactOptions, redact_dataset

BASES = ["US1_UNCR.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "RG1_UNCI.dcm", "693_UNCI.dcm"]
NAMES = ["DOE, JANE", "MUELLER^HANS", "O'BRIEN KATE", "NGUYEN VAN AN", "SMITH JOHN R"]
SECTION = "## Burned-in text: planted names, dates, IDs (recall, false redaction, files/s)"


@dataclass
class Planted:
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1
    ink: np.ndarray  # bool mask of the text's own pixels (full image size)
    rotation: int
    font: str
    size: int
    contrast: float


def _base_path(name: str) -> Path:
    import data_store

    return Path(data_store.__file__).parent / "data" / name


def _fonts() -> list[tuple[str, str | None]]:
    ttfs = sorted(Path("/usr/share/fonts").rglob("*.ttf"))
    picks = [p for p in ttfs if p.stem in ("DejaVuSans", "DejaVuSansMono", "DejaVuSerif-Bold", "DejaVuSansCondensed")]
    return [("PIL default", None)] + [(p.stem, str(p)) for p in (picks or ttfs[:3])]


def _render(text: str, font_path: str | None, size: int, rotation: int) -> np.ndarray:
    font = ImageFont.load_default(size=size) if font_path is None else ImageFont.truetype(font_path, size)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    img = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)
    ImageDraw.Draw(img).text((2 - x0, 2 - y0), text, fill=255, font=font)
    if rotation:
        img = img.rotate(rotation, expand=True)
    return np.asarray(img, np.float32) / 255.0


def plant(ds: pydicom.Dataset, rng: random.Random, fonts) -> tuple[pydicom.Dataset, list[Planted]]:
    """A copy of ``ds`` with three strings drawn into its (single) frame, stored uncompressed."""
    out = copy.deepcopy(ds)
    arr = ds.pixel_array.astype(np.float64)
    h, w = arr.shape[:2]
    lo, hi = np.percentile(arr, (1, 99.9))
    mono1 = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    texts = [rng.choice(NAMES), f"{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/{rng.randint(1930, 2020)}",
             f"MRN {rng.randint(10**7, 10**8 - 1)}"]
    planted: list[Planted] = []
    taken = np.zeros((h, w), bool)
    for text in texts:
        for _ in range(50):
            font_name, font_path = rng.choice(fonts)
            size, rotation = rng.randint(8, 40), rng.choice([0, 0, 90])
            alpha = _render(text, font_path, size, rotation)
            th, tw = alpha.shape
            if th >= h or tw >= w:
                continue
            y, x = rng.randint(0, h - th), rng.randint(0, w - tw)
            if taken[max(0, y - 4):y + th + 4, max(0, x - 4):x + tw + 4].any():
                continue
            break
        else:
            continue
        contrast, bright = rng.choice([1.0, 0.6, 0.35]), rng.random() < 0.8
        level = contrast if bright else 1.0 - contrast  # on the display, 0 = black, 1 = white
        if mono1:
            level = 1.0 - level
        ink_value = lo + level * (hi - lo)
        region = arr[y:y + th, x:x + tw]
        a = alpha[..., None] if region.ndim == 3 else alpha
        colour = np.array([ink_value, ink_value, ink_value * 0.3]) if region.ndim == 3 and rng.random() < 0.3 \
            else ink_value
        arr[y:y + th, x:x + tw] = region * (1 - a) + colour * a
        taken[y:y + th, x:x + tw] = True
        ink = np.zeros((h, w), bool)
        ink[y:y + th, x:x + tw] = alpha > 0.5
        planted.append(Planted(text, (x, y, x + tw, y + th), ink, rotation, font_name, size, contrast))
    info = np.iinfo(ds.pixel_array.dtype)
    new = np.clip(np.rint(arr), info.min, info.max).astype(ds.pixel_array.dtype)
    out.PixelData = new.tobytes()
    out.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    if new.ndim == 3:
        out.PhotometricInterpretation, out.PlanarConfiguration = "RGB", 0
    return out, planted


def _lcs(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def readable_chars(frame: np.ndarray, p: Planted, mono1: bool) -> int:
    """Planted characters plain Tesseract reads back in the string's own area (best of both polarities)."""
    import pytesseract

    from medsight.deid.ocr import display_grey

    x0, y0, x1, y1 = p.box
    crop = display_grey(frame, "MONOCHROME1" if mono1 else "MONOCHROME2")[max(0, y0 - 6):y1 + 6,
                                                                          max(0, x0 - 6):x1 + 6]
    if p.rotation:
        crop = np.rot90(crop, -1)
    scale = max(1.0, 32.0 / max(1, min(p.size, 40)))
    img = Image.fromarray(np.ascontiguousarray(crop)).resize((round(crop.shape[1] * scale),
                                                              round(crop.shape[0] * scale)), Image.BICUBIC)
    target = "".join(ch for ch in p.text.upper() if ch.isalnum())
    best = 0
    for invert in (True, False):
        im = Image.eval(img, lambda v: 255 - v) if invert else img
        text = pytesseract.image_to_string(im, config="--psm 7 -c tessedit_do_invert=0")
        best = max(best, _lcs(target, "".join(ch for ch in text.upper() if ch.isalnum())))
    return best


def redacted_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    diff = before != after
    return diff.any(axis=-1) if diff.ndim == 3 else diff


def run_medsight(ds: pydicom.Dataset) -> tuple[np.ndarray, float, bool]:
    work = copy.deepcopy(ds)
    t = time.perf_counter()
    result = redact_dataset(work, RedactOptions(), lambda s: hashlib.sha256(s.encode()).hexdigest()[:16])
    seconds = time.perf_counter() - t
    if not result.clean:  # held back: nothing is written, so nothing is readable in the output
        return None, seconds, False
    return work.pixel_array, seconds, True


def presidio_engine(tmp: Path):
    """(engine, note) for presidio-image-redactor as far as it runs offline here, or (None, why not).

    Its default analyzer loads spaCy's en_core_web_lg, which is a download (it fails here). What does run
    offline: a blank spaCy English pipeline (no NER, so no PERSON entities), leaving presidio's pattern
    recognisers (dates, phone numbers, IDs...).
    """
    try:
        from presidio_image_redactor import DicomImageRedactorEngine
    except Exception as err:  # noqa: BLE001 - report whatever stops it
        return None, f"does not import ({type(err).__name__}: {str(err)[:120]})"
    try:
        DicomImageRedactorEngine()
        return DicomImageRedactorEngine(), "default analyzer (spaCy en_core_web_lg)"
    except Exception as err:  # noqa: BLE001
        why = f"{type(err).__name__}: {' '.join(str(err).split())[:100]}"
    try:
        import spacy
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_image_redactor import ImageAnalyzerEngine

        spacy.blank("en").to_disk(tmp / "blank_en")
        provider = NlpEngineProvider(nlp_configuration={
            "nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": str(tmp / "blank_en")}]})
        analyzer = AnalyzerEngine(nlp_engine=provider.create_engine())
        engine = DicomImageRedactorEngine(image_analyzer_engine=ImageAnalyzerEngine(analyzer_engine=analyzer))
    except Exception as err:  # noqa: BLE001
        return None, f"its analyzer does not start offline ({why}); a blank spaCy pipeline failed too ({err})"
    return engine, (f"its default analyzer needs spaCy's en_core_web_lg, a download that fails offline ({why}); "
                    "run with a blank spaCy English pipeline instead: pattern recognisers only, no PERSON names")


def run_presidio(engine, ds: pydicom.Dataset) -> tuple[np.ndarray | None, float, bool]:
    t = time.perf_counter()
    try:
        out = engine.redact(copy.deepcopy(ds), fill="contrast", use_metadata=True)
        return out.pixel_array, time.perf_counter() - t, True
    except Exception as err:  # noqa: BLE001 - an image it cannot process counts as not written
        print(f"  presidio failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None, time.perf_counter() - t, False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", type=int, default=4, help="planted copies per base image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-md", type=Path, default=None)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    rng, fonts = random.Random(args.seed), _fonts()
    import tempfile

    engine, presidio_why = presidio_engine(Path(tempfile.mkdtemp()))
    rows: dict[str, dict] = {}
    for base_name in BASES:
        base = pydicom.dcmread(_base_path(base_name))
        mono1 = str(base.PhotometricInterpretation).upper() == "MONOCHROME1"
        base_after, _, _ = run_medsight(base)
        base_mask = redacted_mask(base.pixel_array, base_after) if base_after is not None else None
        for v in range(args.variants):
            ds, planted = plant(base, rng, fonts)
            frame = ds.pixel_array
            planted_box = np.zeros(frame.shape[:2], bool)
            for p in planted:
                x0, y0, x1, y1 = p.box
                planted_box[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = True
            tools = [("medsight", run_medsight)]
            if engine is not None:
                tools.append(("presidio", lambda d: run_presidio(engine, d)))
            for tool, fn in tools:
                r = rows.setdefault(tool, {"chars": 0, "before": 0, "after": 0, "ink": 0, "ink_left": 0,
                                           "false": [], "seconds": [], "held": 0, "files": 0, "by": {}})
                after, seconds, written = fn(ds)
                r["seconds"].append(seconds)
                r["files"] += 1
                for p in planted:
                    n = sum(ch.isalnum() for ch in p.text)
                    before_read = readable_chars(frame, p, mono1) if tool == "medsight" else None
                    if before_read is not None:
                        r["before"] += before_read
                    r["chars"] += n
                    r["ink"] += int(p.ink.sum())
                    if not written:
                        continue
                    left = readable_chars(after, p, mono1)
                    r["after"] += left
                    print(f"  {tool} {base_name} {p.font} {p.size}px rot{p.rotation} contrast {p.contrast}: "
                          f"read {before_read}/{n} before, {left} after", file=sys.stderr)
                    mask = redacted_mask(frame, after)
                    r["ink_left"] += int((p.ink & ~mask).sum())
                    key = f"{'rot90' if p.rotation else 'rot0'} size {'8-15' if p.size < 16 else '16-40'}"
                    by = r["by"].setdefault(key, [0, 0])
                    by[0] += n
                    by[1] += left
                if not written:
                    r["held"] += 1
                    continue
                mask = redacted_mask(frame, after)
                extra = mask & ~planted_box & ~(base_mask if base_mask is not None else False)
                r["false"].append(float(extra.mean()))
            print(f"{base_name} #{v}: {[p.text for p in planted]}", file=sys.stderr)
    if "presidio" in rows:  # presidio's "before" is the same planted images
        rows["presidio"]["before"] = rows["medsight"]["before"]
    text = _markdown(rows, args, presidio_why)
    print(text)
    if args.write_md:
        _write_section(args.write_md, text)
    return 0


def _markdown(rows: dict, args, presidio_why: str | None) -> str:
    lines = [SECTION, "",
             f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a shared, loaded 2-core machine "
             f"({platform.processor() or platform.machine()}, Python {platform.python_version()}, Tesseract "
             f"{tesseract_version()}); command: `nice -n 10 python benchmarks/bench_burned_in.py --variants "
             f"{args.variants} --seed {args.seed}`. Base images from pydicom-data: {', '.join(BASES)}; each gets "
             f"{args.variants} planted copies with a name, a date and an ID (fonts: "
             f"{', '.join(n for n, _ in _fonts())}; 8-40 px; contrast 100/60/35 %; rotation 0 or 90).", "",
             "| tool | files | planted chars (n) | readable before (share) | readable after (share) | ink left | "
             "false redaction (median % of image) | held back | s/file (median) | files/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for tool, r in rows.items():
        med = statistics.median(r["seconds"])
        false = f"{100 * statistics.median(r['false']):.2f}" if r["false"] else "-"
        lines.append(f"| {tool} | {r['files']} | {r['chars']} | {r['before'] / r['chars']:.3f} | "
                     f"{r['after'] / r['chars']:.3f} | {r['ink_left'] / max(1, r['ink']):.3f} | {false} | "
                     f"{r['held']} | {med:.2f} | {1 / med:.2f} |")
    lines.append("")
    for tool, r in rows.items():
        parts = [f"{k}: {v[1]}/{v[0]}" for k, v in sorted(r["by"].items())]
        n, left = sum(v[0] for v in r["by"].values()), sum(v[1] for v in r["by"].values())
        lines.append(f"{tool}, in the files it wrote, planted characters still readable: {left}/{n} "
                     f"({left / max(1, n):.3f}); by kind: {'; '.join(parts)}.")
    lines.append("")
    lines.append("medsight holds back a file whose verification still reads a word (>= 3 letters/digits, "
                 "confidence >= 60): safe, but the file is lost to the export; its false redaction is mostly "
                 "texture of the CR/CT anatomy read as words by the top-hat passes. presidio redacts only "
                 "what its recognisers call PII, so without the NER model names stay. Held-back files count as "
                 "nothing readable (they are not written). 'Readable' = characters of "
                 "the planted string that plain Tesseract reads back from the string's own area, cut out, turned "
                 "level and scaled (psm 7, both polarities).")
    if presidio_why and "presidio" not in rows:
        lines.append(f"presidio-image-redactor 0.0.62: not compared: {presidio_why}.")
    elif presidio_why:
        lines.append(f"presidio-image-redactor 0.0.62 (DicomImageRedactorEngine, fill=contrast, use_metadata): "
                     f"{presidio_why}. A failed file counts as held back.")
    return "\n".join(lines) + "\n"


def _write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else ""
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + (old[end + 1:] if end >= 0 else "")
    path.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
