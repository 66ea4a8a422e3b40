"""How the batch run schedules its files over worker processes: the costliest first, workers forked.

With ``--redact-pixels`` a file costs roughly its decoded pixel count (0.3-3.5 CPU-s each on the 16-file
benchmark), so the order decides how long the last worker runs alone at the end; and the workers' start-up
(imports, the Tesseract model) is paid once in the parent when they are forked from it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import re
import sys
from pathlib import Path

import pydicom
from pydicom.uid import UID


def largest_first(paths: list[Path]) -> list[Path]:
    """Most pixels first (ties by path): pixel redaction costs roughly with the decoded pixel count, and a pool
    that takes the large images last leaves one worker straggling with them while the others idle."""
    return sorted(paths, key=lambda p: (-pixel_bytes(p), str(p)))


_SIZE_TAGS = ["Rows", "Columns", "SamplesPerPixel", "NumberOfFrames", "BitsAllocated"]
_TRANSFER_SYNTAX = re.compile(rb"1\.2\.840\.10008\.1\.2(?:\.[0-9]+)*")


def pixel_bytes(path: Path) -> int:
    """How much pixel work a file holds: its size, or for a compressed file its decoded pixel bytes (header).

    The file size understates compressed files: a JPEG Lossless radiograph of 215 KB decodes to 786 KB and costs
    as much to redact as its 789 KB uncompressed copies; ordered by size it went last and ran alone at the end
    (~0.6 s of 14 on the 16-file benchmark). Only files whose first KB names a compressed transfer syntax have
    their header read (~1.3 ms): the others cost a 1 KB read, so a folder of uncompressed files that need no
    redaction (a few ms each) is not slowed down by this ordering.
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
        if not any(UID(m.decode()).is_compressed or UID(m.decode()).is_deflated
                   for m in _TRANSFER_SYNTAX.findall(head)):
            return size
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_SIZE_TAGS)
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        return n * int(ds.get("NumberOfFrames", 1) or 1) * max(1, (int(ds.get("BitsAllocated", 8) or 8) + 7) // 8)
    except Exception:  # no image, a broken header: its size still orders it
        return size


def pool_context() -> multiprocessing.context.BaseContext | None:
    """Fork on Linux: the workers start with the parent's imports (~1 s: pydicom, SciPy) and its loaded Tesseract
    model instead of each loading its own (Python 3.14 makes forkserver the default there); elsewhere the default."""
    return multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
