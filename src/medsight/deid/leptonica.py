"""Keep Leptonica's console messages out of a user's terminal.

Tesseract hands some crops to Leptonica (the image library under it) that Leptonica reports as errors on stderr,
e.g. "Error in pixScanForForeground: invalid box" for a crop with no foreground. They are harmless (Tesseract goes
on and returns no word), but a user of ``medsight deid`` sees a wall of C-level errors. Leptonica has a global
message severity (``setMsgSeverity``); it is set to "none" in the copy of Leptonica that this process loaded (the
one bundled in tesserocr's wheel or the system's), found in the process's own memory map, so the call cannot reach
a different copy than Tesseract uses.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

L_SEVERITY_NONE = 6  # leptonica/environ.h: L_SEVERITY_EXTERNAL 0 ... L_SEVERITY_NONE 6


def loaded_leptonica(maps: str = "/proc/self/maps") -> str | None:
    """Path of the Leptonica shared library mapped into this process (None when none is, or off Linux)."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return None
    found = re.findall(r"(/\S*liblept\S*\.so[\w.]*)$", text, flags=re.MULTILINE)
    return found[0] if found else None


def quiet_leptonica(severity: int = L_SEVERITY_NONE) -> int | None:
    """Set Leptonica's message severity in the loaded library; the previous severity, None when none was found."""
    path = loaded_leptonica()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)  # already loaded: dlopen hands back the same copy
        set_severity = lib.setMsgSeverity
    except (OSError, AttributeError):
        return None
    set_severity.argtypes, set_severity.restype = [ctypes.c_int], ctypes.c_int
    return int(set_severity(severity))


__all__ = ["L_SEVERITY_NONE", "loaded_leptonica", "quiet_leptonica"]
