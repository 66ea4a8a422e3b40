"""Check that two `medsight deid` output folders hold the same files, byte for byte.

Used to show that a change to the run path (start-up, worker pool, scheduling) leaves every written file as it
was: run the same inputs with the same key through both versions, then

    python benchmarks/deid_outputs_equal.py OUT_A OUT_B

Every file is compared byte for byte except ``deid_report.csv``, compared as a set of rows: its row order is
the processing order, which scheduling changes. Inputs that share a SOP Instance UID are written to the same
output path (the last one wins), so give every input its own UID to compare all of them. Exit status 1 on any
difference.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def differences(a: Path, b: Path) -> tuple[int, list[str]]:
    """(files compared equal, paths that differ or exist on one side only)."""
    fa = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    bad, same = sorted(fa ^ fb), 0
    for rel in sorted(fa & fb):
        if rel == "deid_report.csv":
            with open(a / rel, newline="") as f, open(b / rel, newline="") as g:
                ok = sorted(map(tuple, csv.reader(f))) == sorted(map(tuple, csv.reader(g)))
        else:
            ok = (a / rel).read_bytes() == (b / rel).read_bytes()
        same += ok
        if not ok:
            bad.append(rel)
    return same, bad


def main() -> int:
    a, b = Path(sys.argv[1]), Path(sys.argv[2])
    same, bad = differences(a, b)
    print(f"{same} file(s) identical; differing or on one side only: {bad or 'none'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
