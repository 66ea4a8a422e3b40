"""The real head CT of Debian's invesalius-examples (Cranium.inv3: a gzipped tar of a raw int16 HU volume).

Shared by the benchmarks that need a real CT (registration, predict); None when the package is not installed."""

from __future__ import annotations

import plistlib
import tarfile
import tempfile
from pathlib import Path

import numpy as np

CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def read_cranium() -> tuple[np.ndarray, np.ndarray] | None:
    """The volume in HU as float32 (x, y, z) = 256 x 256 x 108 and its spacing (mm, x y z), or None."""
    if not CRANIUM.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(CRANIUM) as tar:
            tar.extractall(tmp, filter="data")
        folder = next(Path(tmp).rglob("main.plist")).parent
        meta = plistlib.loads((folder / "main.plist").read_bytes())
        shape = tuple(meta["matrix"]["shape"])  # (z, y, x)
        vol = np.fromfile(folder / meta["matrix"]["filename"], dtype=meta["matrix"]["dtype"]).reshape(shape)
    return vol.transpose(2, 1, 0).astype(np.float32), np.asarray(meta["spacing"], float)
