"""Leptonica's C-level error lines stay out of the terminal once the Tesseract engine is loaded.

The check runs in a child process (the messages go to the C stderr, not Python's): a Leptonica call that fails on
purpose prints "Error in pixScanForForeground" before the engine is made and nothing after. The first half is the
control: without it, a silent library (a build with console output compiled out) would pass the second half."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import ctypes, sys
    import tesserocr  # loads the Leptonica that Tesseract uses
    from medsight.deid.leptonica import loaded_leptonica
    lib = ctypes.CDLL(loaded_leptonica())
    scan = lib.pixScanForForeground  # (pix, box, scanflag, &loc): a NULL pix is an error
    scan.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    scan(None, None, 0, None)
    sys.stderr.flush()
    print("MARK", file=sys.stderr, flush=True)
    from medsight.deid.tess import Engine
    Engine()
    scan(None, None, 0, None)
""")


def test_leptonica_errors_silenced_after_engine_start() -> None:
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before, _, after = done.stderr.partition("MARK")
    assert "Error in pixScanForForeground" in before  # the library does print (control)
    assert "Error in" not in after, after


def test_loaded_leptonica_reads_the_memory_map(tmp_path) -> None:
    from medsight.deid.leptonica import loaded_leptonica

    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
                    "7f02-7f03 r-xp 00000000 08:01 2 /venv/site-packages/tesserocr.libs/libleptonica-bc35498f.so.6.0.0\n")
    assert loaded_leptonica(str(maps)) == "/venv/site-packages/tesserocr.libs/libleptonica-bc35498f.so.6.0.0"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert loaded_leptonica(str(maps)) is None
    assert loaded_leptonica(str(tmp_path / "missing")) is None
