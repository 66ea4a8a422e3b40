"""Patch augmentation drawn from one NumPy Generator, so a (seed, epoch) pair fixes every random choice and a
resumed run sees exactly the batches an uninterrupted one would.

Spatial: mirroring on every axis, small rotation/scaling (p=0.2). Intensity: brightness, contrast, gamma, noise
(nnU-Net's defaults in spirit, fewer of them: CPU budgets are small).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, p_spatial: float = 0.2
            ) -> tuple[np.ndarray, np.ndarray]:
    """Augment one (C, *S) patch and its (*S) label; returns new arrays."""
    dims = label.ndim
    if rng.random() < p_spatial:
        image, label = _rotate_scale(image, label, rng)
    for axis in range(dims):
        if rng.random() < 0.5:
            image = np.flip(image, axis + 1)
            label = np.flip(label, axis)
    image = np.ascontiguousarray(image, dtype=np.float32)
    label = np.ascontiguousarray(label)
    if rng.random() < 0.15:
        image = image * rng.uniform(0.75, 1.25)
    if rng.random() < 0.15:
        mean = image.mean()
        image = (image - mean) * rng.uniform(0.75, 1.25) + mean
    if rng.random() < 0.3:
        lo, hi = image.min(), image.max()
        rngv = max(float(hi - lo), 1e-6)
        image = np.power((image - lo) / rngv, rng.uniform(0.7, 1.5)) * rngv + lo
    if rng.random() < 0.1:
        image = image + rng.normal(0, rng.uniform(0, 0.1), image.shape).astype(np.float32)
    return image.astype(np.float32, copy=False), label


def _rotate_scale(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    dims = label.ndim
    angle = np.deg2rad(rng.uniform(-15, 15))
    scale = rng.uniform(0.85, 1.15)
    a, b = (0, 1) if dims == 2 else tuple(rng.choice(3, 2, replace=False))
    m = np.eye(dims)
    m[a, a], m[a, b], m[b, a], m[b, b] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
    m = m / scale
    center = (np.asarray(label.shape) - 1) / 2
    offset = center - m @ center
    img = np.stack([ndimage.affine_transform(c, m, offset, order=1, mode="nearest") for c in image])
    lab = ndimage.affine_transform(label, m, offset, order=0, mode="constant", cval=0)
    return img, lab
