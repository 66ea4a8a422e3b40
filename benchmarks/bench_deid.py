"""Benchmark: `medsight deid` vs dicognito (and optionally pydicom/deid) on the same 2,000 planted files.

Run with the bench venv, which has the peers installed:

    nice -n 10 .venv-bench/bin/python benchmarks/bench_deid.py [--files 2000] [--repeats 3] [--with-deid]

Every tool reads the same input files and writes de-identified copies; we time the whole batch (read, transform,
write), take the median over repeats, and then grep every output byte for each planted identifier and original
UID (regex over the planted patterns, so the check is linear in the output size). medsight is timed with one
worker (like for like with the single-process peers) and with all cores (its default).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pydicom  # noqa: E402

from medsight.synthetic.phi_corpus import PLANT_ROOT, build_corpus  # noqa: E402
from medsight.deid.pseudonym import Pseudonymizer  # noqa: E402
from medsight.deid.run import deidentify_folder  # noqa: E402

PLANTED_RE = re.compile(rb"ZQ[A-Z]+\d{5}X")
UID_RE = re.compile(re.escape(PLANT_ROOT.encode()) + rb"[0-9.]*")


def leaks(out_dir: Path, planted: set[bytes], uids: set[bytes]) -> int:
    """How many distinct planted strings or original UIDs occur anywhere in the output bytes."""
    found: set[bytes] = set()
    for p in out_dir.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            found.update(m for m in PLANTED_RE.findall(data) if m in planted)
            found.update(m.rstrip(b".") for m in UID_RE.findall(data) if m.rstrip(b".") in uids)
    return len(found)


def run_medsight(files_root: Path, out: Path, workers: int) -> None:
    deidentify_folder(files_root, out, Pseudonymizer(b"benchmark key, 32 bytes long...."), workers=workers,
                      quiet=True)


def run_dicognito(files: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer

    anonymizer = Anonymizer()
    out.mkdir(parents=True)
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        anonymizer.anonymize(ds)
        ds.save_as(out / f"{i:05d}.dcm")


def run_deid(files: list[Path], out: Path) -> None:
    from deid.dicom import replace_identifiers

    out.mkdir(parents=True)
    replace_identifiers([str(p) for p in files], save=True, output_folder=str(out), remove_private=True,
                        strip_sequences=False)


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--with-deid", action="store_true", help="also time pydicom/deid (slow: one repeat)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not write docs/benchmarks.md")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("pydicom").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="medsight-bench-deid-"))
    try:
        corpus = build_corpus(work / "in", n_files=args.files, include_flagged=False)
        planted = {s.encode() for s in corpus.planted_strings}
        uids = {u.encode() for u in corpus.original_uids}
        n_cores = os.cpu_count() or 1
        tools: dict[str, tuple] = {
            "medsight (1 worker)": (run_medsight, corpus.root, None, 1),
            f"medsight ({n_cores} workers)": (run_medsight, corpus.root, None, n_cores),
            "dicognito": (run_dicognito, corpus.files, None),
        }
        if args.with_deid:
            tools["deid (pydicom/deid)"] = (run_deid, corpus.files, None)
        times: dict[str, list[float]] = {k: [] for k in tools}
        leaked: dict[str, int] = {}
        for rep in range(args.repeats):
            for name, (fn, src, _, *extra) in tools.items():
                if name.startswith("deid") and rep > 0:
                    continue
                out = work / f"out-{re.sub(r'[^a-z0-9]+', '_', name)}-{rep}"
                times[name].append(timed(fn, src, out, *extra))
                if rep == 0:
                    leaked[name] = leaks(out, planted, uids)
                shutil.rmtree(out, ignore_errors=True)
                print(f"{name}: {times[name][-1]:.2f} s", flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        rate = {k: args.files / v for k, v in med.items()}
        lines = [f"| {k} | {med[k]:.2f} | {rate[k]:.0f} | {rate[k] / rate['dicognito']:.2f}x | {leaked[k]} |"
                 for k in tools]
        md_table = "\n".join(["| tool | median s | files/s | vs dicognito | planted identifiers left |",
                              "|---|---|---|---|---|", *lines])
        print(md_table)
        if not args.no_record:
            from _record import machine_line, record_section

            cmd = "nice -n 10 .venv-bench/bin/python benchmarks/bench_deid.py " + " ".join(sys.argv[1:])
            md = (f"## De-identification: {args.files} DICOM files\n\n{machine_line()}\n\n"
                  f"Command: `{cmd.strip()}`; median of {args.repeats} runs "
                  f"({'deid: 1 run; ' if args.with_deid else ''}whole batch: read, transform, write). Corpus: "
                  f"pydicom/pydicom-data test images (CT, MR, RT dose, RLE/JPEG 2000) with "
                  f"{len(planted)} planted identifiers in standard, nested, private and free-text attributes and "
                  f"{len(uids)} original UIDs; 'left' counts those found anywhere in the output bytes.\n\n"
                  f"{md_table}\n")
            record_section("deid", md)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
