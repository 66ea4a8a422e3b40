"""Stored values -> output values: MONOCHROME1 inversion, modality rescale, gantry-tilt resampling."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

def invert_monochrome1(stack: np.ndarray, ds: Dataset) -> None:
    """Stored values -> ``(2**BitsStored - 1) - v`` (``-1 - v`` when signed), in place, so brighter is higher."""
    bits = int(ds.get("BitsStored", 8 * stack.dtype.itemsize) or 8 * stack.dtype.itemsize)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        np.invert(stack, out=stack)  # -1 - v (two's complement, also modulo 2**n for an unsigned array)
    else:  # (2**bits - 1) - v modulo 2**n, exactly what the int64 computation cast back to the stored type gives
        np.subtract(np.array((1 << bits) - 1, dtype=np.int64).astype(stack.dtype), stack, out=stack)


def rescaled(stack: np.ndarray, slopes: np.ndarray, inters: np.ndarray) -> np.ndarray:
    """Apply each plane's slope/intercept to a (k, rows, cols[, c]) stack of stored values, in place if possible.

    Identity rescale keeps the stored dtype; integer-only rescale (CT: slope 1, intercept -1024) gives the
    smallest signed integer type that holds the result (in place when it has the stored width); anything else
    float32.
    """
    per_plane = (-1,) + (1,) * (stack.ndim - 1)
    if np.all(slopes == 1.0) and np.all(inters == 0.0):
        return stack
    if np.all(slopes == 1.0) and np.all(inters == np.round(inters)) and stack.dtype.kind in "iu":
        lo, hi = int(stack.min()) + int(inters.min()), int(stack.max()) + int(inters.max())
        dtype = next((t for t in (np.int16, np.int32) if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max), np.int64)
        add = inters.astype(np.int64).astype(dtype).reshape(per_plane)
        if np.dtype(dtype).itemsize == stack.dtype.itemsize:
            out = stack.view(dtype)  # modular addition: exact because every result fits ``dtype``
        else:
            out = stack.astype(dtype)
        np.add(out, add, out=out)
        return out
    out = stack.astype(np.float32)
    out *= slopes.astype(np.float32).reshape(per_plane)
    out += inters.astype(np.float32).reshape(per_plane)
    return out


def correct_tilt(volume: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """Move slice k by ``shifts_px[k]`` in-plane so every voxel sits on the grid orthogonal to the slices.

    Slice k's origin lies ``shifts_px[k]`` pixels from the grid's, so its pixel ``p`` belongs at grid ``p + shift``.
    """
    from scipy import ndimage

    fill = float(volume.min())
    out = np.empty(volume.shape, dtype=np.float32)
    for k in range(volume.shape[2]):
        plane = volume[:, :, k].astype(np.float32)
        shift = np.where(np.abs(shifts_px[k] - np.round(shifts_px[k])) < 1e-6, np.round(shifts_px[k]), shifts_px[k])
        # grid-constant: samples a hair outside the slice still interpolate against the edge (no lost rows)
        out[:, :, k] = ndimage.shift(plane, shift, order=1, mode="grid-constant", cval=fill)
    return out
