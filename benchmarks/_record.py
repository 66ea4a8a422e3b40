"""Write one benchmark's section of docs/benchmarks.md without touching the others.

Each benchmark owns the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``; a file lock keeps two
benchmarks finishing at once from losing each other's section.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import statistics
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADER = "# Benchmarks\n\nEvery figure medsight claims, with the machine, date and command that produced it.\n"


def machine_line() -> str:
    """One line naming the machine, date and interpreter, for the head of every section."""
    import torch

    cpu = platform.processor() or platform.machine()
    return (
        f"Machine: {os.cpu_count()} CPU cores ({cpu}), Python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"date {dt.date.today().isoformat()}."
    )


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def runs_not_done(results: list[dict], seeds: list[int], threads: list[int]) -> list[str]:
    """'seed S x T thread(s)' for each planned (seed, thread count) without a result: what a table says did not run."""
    return [f"seed {s} x {t} thread(s)" for s in seeds for t in threads
            if not any(r["seed"] == s and r["threads"] == t for r in results)]


def merged_results(work: Path, pattern: str, key: str) -> dict:
    """The result files of a benchmark's processes (``work/pattern``, each process writes its own) as one: their
    ``key`` dicts merged, the other entries taken from the first file that has them for ``pretrain`` (one
    process records the pretraining) and from the last one otherwise; a rerun skips what any of them holds."""
    import json

    res: dict = {key: {}}
    for path in sorted(work.glob(pattern)):
        part = json.loads(path.read_text())
        res[key].update(part.pop(key))
        res.update({k: v for k, v in part.items() if k != "pretrain" or "pretrain" not in res})
    return res


def record_section(name: str, markdown: str) -> Path:
    """Replace (or append) section ``name`` of docs/benchmarks.md with ``markdown``."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    with open(DOC.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = DOC.read_text() if DOC.exists() else HEADER
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        tmp = DOC.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, DOC)
    return DOC
