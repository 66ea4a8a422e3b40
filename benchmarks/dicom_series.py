"""Generated CT series for the io benchmark and the reader's tests, built from pydicom-data's ``693_UNCI.dcm``.

Slice ``k`` is the template's 512 x 512 CT image rolled down by ``k`` rows plus a little deterministic noise
(so that compressed slices are neither identical nor trivially small), placed 1.25 mm apart along the normal of
an axial orientation; file names are shuffled so neither names nor write order match the position order. The
pixel data is stored uncompressed (explicit VR little endian), as JPEG 2000 lossless or as RLE lossless;
compressed slices are encoded once per ``variants`` and reused, which keeps generation to seconds.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid

SYNTAXES = {"uncompressed": None, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}
STEP_MM = 1.25


def template_path() -> Path | None:
    """693_UNCI.dcm inside the installed pydicom-data wheel (never downloaded)."""
    import importlib.util

    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "693_UNCI.dcm"
    return path if path.exists() else None


def slice_values(base: np.ndarray, k: int, noise_seed: int = 0) -> np.ndarray:
    """Stored values of the k-th slice along the normal."""
    rng = np.random.default_rng(noise_seed * 100_003 + k)
    return (np.roll(base, k, axis=0) + rng.integers(-6, 7, size=base.shape)).astype(base.dtype)


def write_series(folder: Path, n: int, syntax: str = "uncompressed", variants: int | None = None, seed: int = 0,
                 template: Path | None = None) -> list[Path]:
    """Write ``n`` slices to ``folder`` (shuffled names); returns the paths in position order.

    ``variants`` limits how many distinct pixel planes are encoded (slice k uses plane ``k % variants``); None
    makes every slice distinct.
    """
    src = template or template_path()
    if src is None:
        raise FileNotFoundError("pydicom-data's 693_UNCI.dcm is not installed (pip install pydicom-data)")
    tpl = pydicom.dcmread(src)
    base = tpl.pixel_array
    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    names = np.random.default_rng(seed).permutation(n)
    x, y, z0 = (float(v) for v in tpl.ImagePositionPatient)
    encoded: dict[int, pydicom.Dataset] = {}
    paths = []
    for k in range(n):
        v = k if variants is None else k % variants
        if v not in encoded:
            ds = copy.deepcopy(tpl)
            pixels = slice_values(base, v, seed)
            if SYNTAXES[syntax] is None:
                ds.PixelData = pixels.tobytes()
            else:
                ds.compress(SYNTAXES[syntax], pixels)
            encoded[v] = ds
        ds = encoded[v]
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{x:.3f}", f"{y:.3f}", f"{z0 + STEP_MM * k:.3f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceThickness = f"{STEP_MM:g}"
        path = folder / f"IM{int(names[k]):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
