"""Surface voxels and exact surface distances in millimetres, computed only inside the masks' bounding box.

Definitions (identical to MONAI 1.6's ``get_mask_edges`` / ``get_surface_distance`` with ``spacing``):
- a *surface voxel* of a mask is a foreground voxel with at least one of its 2*ndim face neighbours in the
  background; voxels outside the image count as background (SciPy binary erosion with the cross structuring
  element and ``border_value=0``, then XOR);
- the distance of a surface voxel of A to B is the Euclidean distance, in mm with the voxel spacing applied per
  axis, from its centre to the nearest surface-voxel centre of B.

Why it is fast: every surface voxel of either mask lies inside the bounding box of their union, so an exact
Euclidean distance transform (``scipy.ndimage.distance_transform_edt`` with ``sampling=spacing``) of that box
padded by one voxel gives exactly the same distances as one over the whole image, at a fraction of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt

from medsight.errors import MetricError


def check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Spacing as a tuple of ``ndim`` positive finite floats (a scalar means isotropic, None means 1 mm)."""
    if spacing is None:
        return (1.0,) * ndim
    sp = (float(spacing),) * ndim if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if len(sp) != ndim:
        raise MetricError(f"spacing {sp} has {len(sp)} values but the masks have {ndim} axes")
    if any(not math.isfinite(s) or s <= 0 for s in sp):
        raise MetricError(f"voxel spacing must be positive and finite, got {sp}")
    return sp


def check_pair(pred: np.ndarray, ref: np.ndarray) -> None:
    if pred.shape != ref.shape:
        raise MetricError(
            f"prediction shape {pred.shape} differs from reference shape {ref.shape}; resample the prediction onto "
            "the reference grid first"
        )
    if pred.ndim not in (2, 3):
        raise MetricError(f"masks must be 2D or 3D, got {pred.ndim} axes")


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """Per-axis (first, last + 1) indices of the foreground, or None for an empty mask.

    One pass over the volume (an ``any`` along the last axis), then cheap work on the (ndim - 1)-D projection.
    """
    proj = mask.any(axis=-1)
    if not proj.any():
        return None
    box = []
    for ax in range(mask.ndim - 1):
        other = tuple(a for a in range(mask.ndim - 1) if a != ax)
        nz = np.flatnonzero(proj.any(axis=other) if other else proj)
        box.append((int(nz[0]), int(nz[-1]) + 1))
    other_axes = tuple(range(mask.ndim - 1))
    sub = mask[tuple(slice(a, b) for a, b in box)]
    nz = np.flatnonzero(sub.any(axis=other_axes))
    box.append((int(nz[0]), int(nz[-1]) + 1))
    return tuple(box)


def union_box(a: tuple[tuple[int, int], ...] | None, b: tuple[tuple[int, int], ...] | None
              ) -> tuple[slice, ...] | None:
    if a is None and b is None:
        return None
    if a is None or b is None:
        box = a if a is not None else b
        return tuple(slice(lo, hi) for lo, hi in box)  # type: ignore[union-attr]
    return tuple(slice(min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(a, b))


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boolean map of surface voxels of a mask that is already padded by one background voxel on every side."""
    inner = mask.copy()
    nd = mask.ndim
    for ax in range(nd):
        mid = tuple(slice(1, -1) if a == ax else slice(None) for a in range(nd))
        lo = tuple(slice(0, -2) if a == ax else slice(None) for a in range(nd))
        hi = tuple(slice(2, None) if a == ax else slice(None) for a in range(nd))
        inner[mid] &= mask[lo]
        inner[mid] &= mask[hi]
    return mask & ~inner


def padded_surfaces(pred: np.ndarray, ref: np.ndarray, box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Surface-voxel maps of both masks inside ``box``, padded by one background voxel."""
    p = np.pad(pred[box], 1)
    r = np.pad(ref[box], 1)
    return surface_voxels(p), surface_voxels(r)


def directed_distances(edges_from: np.ndarray, edges_to: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance (mm) from every surface voxel in ``edges_from`` to the nearest one in ``edges_to``.

    Order follows C-order positions of ``edges_from``. Infinite when ``edges_to`` is empty.
    """
    n_from = int(np.count_nonzero(edges_from))
    if n_from == 0:
        return np.empty(0)
    if not edges_to.any():
        return np.full(n_from, np.inf)
    dt = distance_transform_edt(~edges_to, sampling=spacing)
    return dt[edges_from]


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(pred -> ref distances per prediction surface voxel, ref -> pred distances per reference surface voxel).

    Both empty gives two empty arrays; one empty gives infinite distances from the other's surface voxels.
    """
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    check_pair(pred, ref)
    sp = check_spacing(spacing, pred.ndim)
    box = union_box(bounding_box(pred), bounding_box(ref))
    if box is None:
        return np.empty(0), np.empty(0)
    ep, er = padded_surfaces(pred, ref, box)
    return directed_distances(ep, er, sp), directed_distances(er, ep, sp)
