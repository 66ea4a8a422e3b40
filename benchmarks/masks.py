"""Mask pairs (prediction, reference) for the metrics benchmark, in four families that stress different things.

- ``organ``: a lobulated, smoothly deformed ellipsoid (liver/spleen/kidney-sized) as the reference; the prediction
  is shifted, dilated or eroded, has a differently wobbly border and 0-3 false-positive islands next to it.
- ``bumpy``: the same with a rough, fine-grained surface (many small bumps): far more surface voxels per volume.
- ``islands``: an organ pair plus 20-40 small false-positive islands scattered over the whole volume (and a few
  in the reference): the union's bounding box becomes most of the image while the surfaces stay small.
- ``holes``: an organ pair with 10-30 internal cavities in the reference, most reproduced (moved by a voxel) in
  the prediction: inner surfaces and many nearly coincident surface voxels.

A pair is stored compactly (the organ crop, its place, the islands) and expanded with ``full_pair``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FAMILIES = ("organ", "bumpy", "islands", "holes")


@dataclass
class Pair:
    shape: tuple[int, ...]
    box: tuple[slice, ...]
    ref: np.ndarray  # crop
    pred: np.ndarray  # crop
    ref_islands: list[tuple[slice, ...]]
    pred_islands: list[tuple[slice, ...]]


def _blob(rng: np.random.Generator, shape: tuple[int, ...], radii_vox: np.ndarray, roughness: float,
          sigma: tuple[float, ...]) -> np.ndarray:
    """A lobulated ellipsoid: smoothed noise modulates the radius so the surface bulges like an organ's."""
    grids = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij", sparse=True)
    r = np.sqrt(sum((g / rad) ** 2 for g, rad in zip(grids, radii_vox)))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma)
    noise /= noise.std() + 1e-12
    return r < 1.0 + roughness * noise


def _cube(c: list[int], half: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(x - h, x + h + 1) for x, h in zip(c, half))


def make_pair(family: str, seed: int, shape: tuple[int, ...], spacing: tuple[float, ...]) -> Pair:
    rng = np.random.default_rng(seed)
    radii = rng.uniform([35, 30, 45], [65, 55, 110]) / np.asarray(spacing)  # mm -> voxels
    crop = tuple(min(int(2 * r * 1.35) + 12, n - 2) for r, n in zip(radii, shape))
    bumpy = family == "bumpy"
    rough, sigma = (0.22, (2.0, 2.0, 1.0)) if bumpy else (0.08, (6.0, 6.0, 2.5))
    ref = _blob(rng, crop, radii, rough, sigma)
    pred = np.roll(ref, tuple(int(v) for v in rng.integers(-3, 4, size=3) * np.array([1, 1, 0])), axis=(0, 1, 2))
    step = int(rng.integers(-2, 3))
    if step > 0:
        pred = ndimage.binary_dilation(pred, iterations=step)
    elif step < 0:
        pred = ndimage.binary_erosion(pred, iterations=-step)
    pred &= _blob(rng, crop, radii * 1.05, rough * 1.5, sigma)  # a differently wobbly border
    for _ in range(int(rng.integers(0, 4))):  # false-positive islands next to the organ
        c = [int(rng.integers(3, n - 3)) for n in crop]
        pred[_cube(c, (2, 2, 1))] = True
    if family == "holes":
        for _ in range(int(rng.integers(10, 31))):
            c = np.array([int(rng.integers(n // 4, 3 * n // 4)) for n in crop])
            rad = int(rng.integers(3, 9))
            ball = _cube(list(c), (rad, rad, max(1, rad // 2)))
            ref[ball] = False
            if rng.random() < 0.8:
                pred[_cube(list(c + rng.integers(-1, 2, size=3)), (rad, rad, max(1, rad // 2)))] = False
    start = [int(rng.integers(1, n - c)) for n, c in zip(shape, crop)]
    box = tuple(slice(s, s + c) for s, c in zip(start, crop))
    ref_isl: list[tuple[slice, ...]] = []
    pred_isl: list[tuple[slice, ...]] = []
    if family == "islands":
        for k in range(int(rng.integers(20, 41))):
            c = [int(rng.integers(3, n - 3)) for n in shape]
            (ref_isl if k % 8 == 0 else pred_isl).append(_cube(c, (1, 1, 1)))
    return Pair(shape, box, ref, pred, ref_isl, pred_isl)


def full_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) as full-size boolean volumes."""
    out = []
    for crop, islands in ((pair.pred, pair.pred_islands), (pair.ref, pair.ref_islands)):
        vol = np.zeros(pair.shape, dtype=bool)
        vol[pair.box] = crop
        for isl in islands:
            vol[isl] = True
        out.append(vol)
    return out[0], out[1]
