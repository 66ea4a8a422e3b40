"""Models Genesis corruptions (Zhou et al., MedIA 2021): the network learns to restore the original patch.

Each transform takes one normalised (C, *S) float32 patch and the epoch's NumPy generator, so a resumed run
corrupts exactly as an uninterrupted one. Probabilities are the paper's defaults: non-linear intensity 0.9,
local shuffling 0.5, painting 0.9 (of which in-painting 0.2, out-painting 0.8). Intensities are mapped to [0, 1]
with the patch's own range first (the paper works on [0, 1] images; ours are z-scored) and back afterwards.
"""

from __future__ import annotations

import numpy as np

P_NONLINEAR, P_SHUFFLE, P_PAINT, P_INPAINT = 0.9, 0.5, 0.9, 0.2
SHUFFLE_BLOCKS = 200


def bezier_curve(points: np.ndarray, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """A cubic Bezier through four control points (x, y): a smooth monotone-ish intensity mapping."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    b = ((1 - t) ** 3) * points[0] + 3 * ((1 - t) ** 2) * t * points[1] + 3 * (1 - t) * t ** 2 * points[2] \
        + t ** 3 * points[3]
    return b[:, 0], b[:, 1]


def nonlinear_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map intensities through a random Bezier curve (inverted half the time): appearance must be relearned."""
    pts = np.array([[0, 0], [rng.random(), rng.random()], [rng.random(), rng.random()], [1, 1]], dtype=float)
    xs, ys = bezier_curve(pts)
    if rng.random() < 0.5:
        ys = ys[::-1]
    order = np.argsort(xs)
    return np.interp(x, xs[order], ys[order]).astype(np.float32)


def local_shuffle(x: np.ndarray, rng: np.random.Generator, blocks: int = SHUFFLE_BLOCKS) -> np.ndarray:
    """Shuffle the voxels inside many small windows: texture changes, global shape stays."""
    out = x.copy()
    shape = np.asarray(x.shape[1:])
    top = np.maximum(1, shape // 10)
    for _ in range(blocks):
        size = np.array([int(rng.integers(1, t + 1)) for t in top])
        lo = np.array([int(rng.integers(0, s - w + 1)) for s, w in zip(shape, size)])
        sl = (slice(None),) + tuple(slice(a, a + w) for a, w in zip(lo, size))
        win = out[sl]
        flat = win.reshape(win.shape[0], -1)
        out[sl] = flat[:, rng.permutation(flat.shape[1])].reshape(win.shape)
    return out


def _box(shape: np.ndarray, rng: np.random.Generator, lo_frac: float, hi_frac: float) -> tuple[slice, ...]:
    size = [int(rng.integers(max(1, int(s * lo_frac)), max(2, int(s * hi_frac)) + 1)) for s in shape]
    size = [min(w, int(s)) for w, s in zip(size, shape)]
    start = [int(rng.integers(0, int(s) - w + 1)) for s, w in zip(shape, size)]
    return (slice(None),) + tuple(slice(a, a + w) for a, w in zip(start, size))


def inpaint(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to five boxes (1/6 to 1/3 of each side) replaced by uniform noise: fill in from the context."""
    out = x.copy()
    shape = np.asarray(x.shape[1:])
    for _ in range(int(rng.integers(1, 6))):
        sl = _box(shape, rng, 1 / 6, 1 / 3)
        out[sl] = rng.random(out[sl].shape, dtype=np.float32)
    return out


def outpaint(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Everything outside up to five boxes (3/7 to 4/7 of each side) replaced by noise: extrapolate outwards."""
    out = rng.random(x.shape, dtype=np.float32)
    shape = np.asarray(x.shape[1:])
    for _ in range(int(rng.integers(1, 6))):
        sl = _box(shape, rng, 3 / 7, 4 / 7)
        out[sl] = x[sl]
    return out


def corrupt(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(corrupted input, restoration target), both in the patch's original intensity units."""
    lo, hi = float(x.min()), float(x.max())
    span = max(hi - lo, 1e-6)
    y = (x - lo) / span
    z = y
    if rng.random() < P_NONLINEAR:
        z = nonlinear_intensity(z, rng)
    if rng.random() < P_SHUFFLE:
        z = local_shuffle(z, rng)
    if rng.random() < P_PAINT:
        z = inpaint(z, rng) if rng.random() < P_INPAINT else outpaint(z, rng)
    return (z * span + lo).astype(np.float32), x.astype(np.float32)
