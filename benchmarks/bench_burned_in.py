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
* **readable with ink left**: the readable-after characters of the strings that keep >= ``INK_PRESENT`` of their
  glyph pixels (alpha > 0.5) unchanged in the written file; a string whose glyphs are all covered counts 0 here
  (what the reference reader matches there comes from the fill's edge and the background, not the text). Reported
  beside the plain figure, never instead of it;
* **false redaction**: redacted pixels outside the planted strings' boxes and outside what the same redaction
  removes from the unplanted base image (its own annotations), over the image area;
* **files/s**: ``redact_dataset`` per planted image, single process (median wall and CPU seconds per file), and
  the throughput of all planted files through 2 worker processes (``--workers``);
* **annotations kept** (real deid-data ultrasounds, OCR alone: region table off): of the hand-listed annotation
  words plain Tesseract reads on the input (whole frame, 2x, psm 11), the share it still reads after; and the
  characters of the banners' identifiers it still reads.

``medsight`` is the default method (find text, read only there, redact identifiers); ``medsight full-frame`` the
earlier one (whole frame read 8 ways, every word redacted), run in the same process on the first ``--old``
planted copies of the two ultrasound bases and on the real ultrasounds (~30 s of CPU per file; ``--old 0``: not
run). presidio-image-redactor runs on the same files in its own venv (``--presidio-python``, ``presidio_runner.py``).

    python benchmarks/bench_burned_in.py --variants 3 [--write-md docs/benchmarks.md]
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
from medsight.deid.words import phi_terms

BASES = ["US1_UNCR.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "RG1_UNCI.dcm", "693_UNCI.dcm"]
NAMES = ["DOE, JANE", "MUELLER^HANS", "O'BRIEN KATE", "NGUYEN VAN AN", "SMITH JOHN R"]
INK_PRESENT = 0.05  # share of a planted string's glyph pixels unchanged for its readable characters to count as
# "readable with ink left" (the fully covered leftovers of the 2026-12-07 record: 0.000; the real leaks 0.46-1.0)
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


CPU: list[float] = []


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the full-frame method runs tesseract processes)."""
    import resource

    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def run_medsight(ds: pydicom.Dataset, mode: str = "find", regions=None) -> tuple[np.ndarray, float, bool]:
    work = copy.deepcopy(ds)
    options = RedactOptions(mode=mode) if regions is None else RedactOptions(mode=mode, regions=regions)
    t, c = time.perf_counter(), _cpu()
    result = redact_dataset(work, options, lambda s: hashlib.sha256(s.encode()).hexdigest()[:16], phi_terms(ds))
    seconds = time.perf_counter() - t
    CPU.append(_cpu() - c)
    if not result.clean:  # held back: nothing is written, so nothing is readable in the output
        return None, seconds, False
    return work.pixel_array, seconds, True


def _redact_bytes(data: bytes) -> bool:
    import io

    ds = pydicom.dcmread(io.BytesIO(data))
    return redact_dataset(ds, RedactOptions(), lambda s: s[:0], phi_terms(ds)).clean


def throughput(datasets: list[pydicom.Dataset], workers: int) -> float:
    """Files per second (wall) of the default method over ``datasets`` in ``workers`` processes."""
    import io
    from concurrent.futures import ProcessPoolExecutor

    blobs = []
    for ds in datasets:
        buf = io.BytesIO()
        ds.save_as(buf)
        blobs.append(buf.getvalue())
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_redact_bytes, blobs[:workers]))  # start the workers and load Tesseract's model
        t = time.perf_counter()
        list(pool.map(_redact_bytes, blobs))
    return len(blobs) / (time.perf_counter() - t)


# The real deid-data ultrasounds: identifiers burned into the banners (as in tests/deid/test_burned_in.py) and
# the screens' own annotations, listed by hand.
REAL = {
    "GREYSCALE_IMAGE.dcm": (["00079241539", "08/29/1951", "CLEVELAN", "PATIENTFI", "03/02/2017"],
                            ["Adv", "Breast", "L12-5", "36Hz", "RS", "60%", "Dyn", "Med", "Res", "TAC1", "TIS0.0",
                             "0.6", "4.0cm"]),
    "RGB_IMAGE.dcm": (["ZZZDOWNTIME,MARY", "00047431395", "120907058", "4/14/2020", "CLEVELAND", "CLINIC"],
                      ["6C1", "HD", "General", "0.5", "1.4", "19fps", "THI", "MHz", "20dB/DR60", "ASC", "DTCE",
                       "MapE/ST2", "Sag", "Liver", "L-M", "16cm"]),
}


def _frame_words(frame: np.ndarray) -> list[str]:
    import pytesseract

    grey = frame.max(axis=2) if frame.ndim == 3 else frame
    img = Image.fromarray(255 - grey.astype(np.uint8)).resize((grey.shape[1] * 2, grey.shape[0] * 2),
                                                             Image.BICUBIC)
    d = pytesseract.image_to_data(img, config="--psm 11", output_type=pytesseract.Output.DICT)
    return [t.strip() for t, c in zip(d["text"], d["conf"]) if t.strip() and float(c) >= 50]


def _real_datasets() -> dict[str, pydicom.Dataset]:
    import importlib.util

    root = Path(importlib.util.find_spec("deid_data").origin).parent / "data" / "ultrasounds"
    return {name: pydicom.dcmread(root / name) for name in REAL}


def _real_row(name: str, ds: pydicom.Dataset, mode: str, after, seconds: float, cpu: float, written: bool) -> dict:
    identifiers, annotations = REAL[name]
    before = _frame_words(ds.pixel_array)
    words = _frame_words(after) if written else []
    text = " ".join(words)
    seen = [w for w in annotations if w in before]
    return {"file": name, "mode": mode, "seconds": seconds, "cpu": cpu, "written": written,
            "id_chars": sum(len(s) for s in identifiers),
            "id_left": sum(len(s) for s in identifiers if s in text),
            "seen": len(seen), "kept": sum(w in words for w in seen)}


def real_ultrasounds(modes: list[str]) -> list[dict]:
    out = []
    for name, ds in _real_datasets().items():
        for mode in modes:
            after, seconds, written = run_medsight(ds, mode, regions=())
            out.append(_real_row(name, ds, mode, after, seconds, CPU[-1], written))
    return out


def run_presidio(python: str, files: dict[str, pydicom.Dataset], tmp: Path) -> tuple[dict, dict, str]:
    """Redact ``files`` (name -> dataset) with presidio-image-redactor in its own venv (``presidio_runner.py``):
    (name -> pixel array or None when not written, its report, a note on how it ran)."""
    import json
    import subprocess

    src, out = tmp / "presidio-in", tmp / "presidio-out"
    src.mkdir(parents=True)
    for name, ds in files.items():
        ds.save_as(src / name)
    runner = Path(__file__).with_name("presidio_runner.py")
    proc = subprocess.run([python, str(runner), str(src), str(out)], capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_THREAD_LIMIT": "1"})
    if proc.returncode != 0:
        return {}, {}, f"did not run ({' '.join(proc.stderr.split()[-30:])})"
    report = json.loads((out / "presidio.json").read_text())
    arrays = {name: (pydicom.dcmread(out / name).pixel_array if report["files"][name]["written"] else None)
              for name in files}
    note = (f"presidio-image-redactor {report['version']} (spaCy {report['spacy']}, model {report['model']}: "
            "spaCy's own models are GitHub downloads, this is a PyPI re-upload of en_core_web_sm 3.8.0), "
            "DicomImageRedactorEngine.redact(fill='contrast', use_metadata=True), its own venv (its pins clash "
            f"with ours), one process, model loaded once ({report['startup_s']:.1f} s, not counted); its CPU "
            "seconds include the tesseract processes it starts")
    return arrays, report, note


def _account(r: dict, case: dict, after: np.ndarray | None, seconds: float, cpu: float | None, written: bool,
             own_base: bool) -> None:
    """Add one tool's result on one planted file to its row."""
    r["seconds"].append(seconds)
    if cpu is not None:
        r["cpu"].append(cpu)
    r["files"] += 1
    frame, mono1 = case["frame"], case["mono1"]
    for p, before_read in zip(case["planted"], case["before"]):
        n = sum(ch.isalnum() for ch in p.text)
        r["before"] += before_read
        r["chars"] += n
        r["ink"] += int(p.ink.sum())
        if not written:
            continue
        left = readable_chars(after, p, mono1)
        r["after"] += left
        mask = redacted_mask(frame, after)
        kept = int((p.ink & ~mask).sum())
        r["ink_left"] += kept
        share = kept / max(1, int(p.ink.sum()))
        r["after_ink"] += left if share >= INK_PRESENT else 0
        print(f"  {r['tool']} {case['base']} {p.text!r} {p.font} {p.size}px rot{p.rotation} contrast {p.contrast}: "
              f"read {before_read}/{n} before, {left} after, glyph ink unchanged {share:.3f}", file=sys.stderr)
        key = f"{'rot90' if p.rotation else 'rot0'} size {'8-15' if p.size < 16 else '16-40'}"
        by = r["by"].setdefault(key, [0, 0, 0])
        by[0] += n
        by[1] += left
        by[2] += left if share >= INK_PRESENT else 0
    if not written:
        r["held"] += 1
        return
    mask = redacted_mask(frame, after)
    # outside the planted strings, and (for medsight, whose redaction of the unplanted base is known) outside
    # what it removes from the base's own annotations
    extra = mask & ~case["planted_box"] & ~(case["base_mask"] if own_base and case["base_mask"] is not None
                                             else False)
    r["false"].append(float(extra.mean()))
    print(f"  {r['tool']} {case['base']}: false redaction {100 * r['false'][-1]:.2f} % of the image, CPU {cpu} s",
          file=sys.stderr)


def _row(rows: dict, tool: str) -> dict:
    return rows.setdefault(tool, {"tool": tool, "chars": 0, "before": 0, "after": 0, "after_ink": 0, "ink": 0,
                                  "ink_left": 0,
                                  "false": [], "seconds": [], "cpu": [], "held": 0, "files": 0, "by": {}})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", type=int, default=4, help="planted copies per base image")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-md", type=Path, default=None)
    ap.add_argument("--old", type=int, default=1, help="planted copies per base also run the full-frame way")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--presidio-python", default=None,
                    help="python of a venv with presidio-image-redactor and a spaCy English model")
    args = ap.parse_args(argv)
    import os

    load = [os.getloadavg()[0]]
    warnings.simplefilter("ignore")
    rng, fonts = random.Random(args.seed), _fonts()
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    rows: dict[str, dict] = {}
    planted_sets: list[pydicom.Dataset] = []
    cases: list[dict] = []
    for base_name in BASES:
        base = pydicom.dcmread(_base_path(base_name))
        mono1 = str(base.PhotometricInterpretation).upper() == "MONOCHROME1"
        base_after, _, _ = run_medsight(base)
        planted_sets.append(base)
        base_mask = redacted_mask(base.pixel_array, base_after) if base_after is not None else None
        for v in range(args.variants):
            ds, planted = plant(base, rng, fonts)
            planted_sets.append(ds)
            frame = ds.pixel_array
            planted_box = np.zeros(frame.shape[:2], bool)
            for p in planted:
                x0, y0, x1, y1 = p.box
                planted_box[max(0, y0 - 3):y1 + 3, max(0, x0 - 3):x1 + 3] = True
            case = {"base": base_name, "ds": ds, "planted": planted, "frame": frame, "mono1": mono1,
                    "before": [readable_chars(frame, p, mono1) for p in planted], "planted_box": planted_box,
                    "base_mask": base_mask}
            cases.append(case)
            tools = [("medsight", run_medsight)]
            if v < args.old and base_name in BASES[:2]:  # the ultrasounds: the old way costs ~30 s per file
                tools.append(("medsight full-frame (before)", lambda d: run_medsight(d, "full-frame")))
            for tool, fn in tools:
                after, seconds, written = fn(ds)
                _account(_row(rows, tool), case, after, seconds, CPU[-1], written, tool == "medsight")
            print(f"{base_name} #{v}: {[p.text for p in planted]}", file=sys.stderr)
    presidio_why, presidio_real = "not run (pass --presidio-python VENV/bin/python)", []
    if args.presidio_python:
        files = {f"planted_{i:03d}.dcm": c["ds"] for i, c in enumerate(cases)}
        files.update({f"real_{name}": ds for name, ds in _real_datasets().items()})
        arrays, report, presidio_why = run_presidio(args.presidio_python, files, tmp)
        for i, c in enumerate(cases):
            name = f"planted_{i:03d}.dcm"
            if name in arrays:
                f = report["files"][name]
                _account(_row(rows, "presidio"), c, arrays[name], f["seconds"], f["cpu"], f["written"], False)
        for name, ds in _real_datasets().items():
            key = f"real_{name}"
            if key in arrays:
                f = report["files"][key]
                presidio_real.append(_real_row(name, ds, "presidio", arrays[key], f["seconds"], f["cpu"],
                                               f["written"]))
    real = real_ultrasounds(["find", "full-frame"] if args.old else ["find"]) + presidio_real
    load.append(os.getloadavg()[0])
    rate = throughput(planted_sets, args.workers)
    load.append(os.getloadavg()[0])
    text = _markdown(rows, args, presidio_why, real, rate, load, len(planted_sets))
    print(text)
    if args.write_md:
        _write_section(args.write_md, text)
    return 0


def _markdown(rows: dict, args, presidio_why: str | None, real: list[dict], rate: float, load: list[float],
              n_rate: int) -> str:
    from medsight.deid.tess import engine

    lines = [SECTION, "",
             f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on a shared 2-core machine loaded by "
             f"other work (1-min load average {', '.join(f'{x:.1f}' for x in load)} at start / after the "
             f"single-process runs / after the worker run: the CPU seconds are the steadier figure), "
             f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, Tesseract "
             f"{tesseract_version()}, OCR engine {engine().backend}; command: `python "
             f"benchmarks/bench_burned_in.py --variants {args.variants} --seed {args.seed} --old {args.old}"
             f"{' --presidio-python VENV/bin/python' if args.presidio_python else ''}`. "
             f"Base images from pydicom-data: {', '.join(BASES)}; each gets {args.variants} planted copies with a "
             f"name, a date and an ID (fonts: {', '.join(n for n, _ in _fonts())}; 8-40 px; contrast 100/60/35 %; "
             "rotation 0 or 90). Both medsight methods ran in the same process, file by file; presidio in one process "
             "of its own venv right after, on the same files, under the same load.", "",
             "| tool | files | planted chars (n) | readable before (share) | readable after (share) | readable after "
             f"with ink left (>= {INK_PRESENT:.0%} of the string's glyph pixels unchanged; share) | ink left | "
             "false redaction (median % of image) | held back | s/file wall (median) | s/file CPU (median) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool, r in rows.items():
        med = statistics.median(r["seconds"])
        cpu = f"{statistics.median(r['cpu']):.2f}" if r["cpu"] else "-"
        false = f"{100 * statistics.median(r['false']):.2f}" if r["false"] else "-"
        lines.append(f"| {tool} | {r['files']} | {r['chars']} | {r['before'] / r['chars']:.3f} | "
                     f"{r['after'] / r['chars']:.3f} | {r['after_ink']} ({r['after_ink'] / r['chars']:.3f}) | "
                     f"{r['ink_left'] / max(1, r['ink']):.3f} | {false} | "
                     f"{r['held']} | {med:.2f} | {cpu} |")
    lines.append("")
    lines.append(f"Throughput of the default method, {n_rate} files (the {len(BASES)} bases and their planted "
                 f"copies) through {args.workers} worker processes, model loaded: **{rate:.2f} files/s** (wall, "
                 "under the load above).")
    if rows.get("medsight", {}).get("cpu"):
        cpu = rows["medsight"]["cpu"]
        lines.append(f"CPU seconds per planted file (medsight, single process): mean {statistics.mean(cpu):.2f}, "
                     f"median {statistics.median(cpu):.2f}, max {max(cpu):.2f} (n = {len(cpu)}); on {args.workers} "
                     f"idle cores that is ~{args.workers / statistics.mean(cpu):.2f} files/s (CPU-bound estimate, "
                     "not measured idle).")
    lines.append("")
    for tool, r in rows.items():
        parts = [f"{k}: {v[1]}/{v[0]} ({v[2]} with ink left)" for k, v in sorted(r["by"].items())]
        n, left = sum(v[0] for v in r["by"].values()), sum(v[1] for v in r["by"].values())
        lines.append(f"{tool}, in the files it wrote, planted characters still readable: {left}/{n} "
                     f"({left / max(1, n):.3f}), of them in strings with glyph ink left: {r['after_ink']}; by kind: "
                     f"{'; '.join(parts)}.")
    lines += ["", "Real deid-data ultrasounds, OCR alone (region table off), same process:", "",
              "| file | method | written | banner identifier chars readable after (of n) | annotation words "
              "kept (of those read before) | s wall | s CPU |", "|---|---|---|---|---|---|---|"]
    for r in real:
        lines.append(f"| {r['file']} | {r['mode']} | {'yes' if r['written'] else 'held back'} | {r['id_left']} "
                     f"of {r['id_chars']} | {r['kept']} of {r['seen']} | {r['seconds']:.2f} | {r['cpu']:.2f} |")
    lines.append("")
    lines.append("'Readable' = characters of the planted string that plain Tesseract reads back from the string's "
                 "own area, cut out, turned level and scaled (psm 7, both polarities); held-back files count as "
                 "nothing readable (they are not written). The default method redacts only identifiers and "
                 "verifies that none is read again on the written pixels with its own detector: text its "
                 "detector does not find (faint text over ultrasound speckle, some turned strings) is neither "
                 "redacted nor caught by that verification, which is what the 'readable after' share measures. "
                 f"'With ink left' counts only the readable characters of strings that keep >= {INK_PRESENT:.0%} "
                 "of their glyph pixels (rendered alpha > 0.5) unchanged in the written file: of a string whose "
                 "glyphs the fill covers whole, the reference reader can only match characters in the fill's "
                 "edges and the background (no information about the text).")
    if "presidio" not in rows:
        lines.append(f"presidio-image-redactor: not compared: {presidio_why}.")
    else:
        r = rows["presidio"]
        mean = statistics.mean(r["seconds"])
        lines.append(f"presidio: {presidio_why}. Its false-redaction column also counts what it removes of the "
                     "bases' own annotations (medsight's excludes its redaction of the unplanted base). Presidio "
                     f"single process: {1 / mean:.2f} files/s over the {r['files']} planted files (mean "
                     f"{mean:.2f} s wall, median {statistics.median(r['cpu']):.2f} CPU-s per file).")
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
