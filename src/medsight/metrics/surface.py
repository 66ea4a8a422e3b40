"""Surface voxels and exact surface distances in millimetres, computed only inside the masks' bounding box.

Definitions (identical to MONAI 1.6's ``get_mask_edges`` / ``get_surface_distance`` with ``spacing``):
- a *surface voxel* of a mask is a foreground voxel with at least one of its 2*ndim face neighbours in the
  background; voxels outside the image count as background (SciPy binary erosion with the cross structuring
  element and ``border_value=0``, then XOR);
- the distance of a surface voxel of A to B is the Euclidean distance, in mm with the voxel spacing applied per
  axis, from its centre to the nearest surface-voxel centre of B.

Why it is fast: surface voxels are extracted once per pair (MONAI re-extracts them for every metric) and only
inside the bounding box of the masks' union (one padded crop). The nearest-surface distances are then computed
exactly by one of two methods, picked per pair by a cost model calibrated on this machine (docs/metrics.md):
- ``"edt"``: a Euclidean distance transform (``scipy.ndimage.distance_transform_edt``, ``sampling=spacing``) of
  the padded box; every surface voxel of either mask lies inside it, so the values equal those of a transform over
  the whole image. Cost grows with the box's voxel count.
- ``"kdtree"``: a k-d tree (``scipy.spatial.cKDTree``) over the millimetre coordinates of the other surface's
  voxels, queried on all cores (``workers=-1``) and only for voxels not on both surfaces (those are at 0). Cost
  grows with the number of surface voxels (n log n), which for compact organ-like shapes, bumpy surfaces, holes
  and scattered islands alike is far smaller than the box, so this is almost always the faster one.
- ``"grid"`` (the default where the k-d tree would be chosen): for each surface voxel, integer offsets are tried
  in order of their length in mm (the shortest ~128) with one vectorised look-up each on the other surface's
  map; the first hit is the nearest surface voxel, so the value is exact, and the few voxels with no hit that
  close go to the k-d tree. Compared segmentations lie mostly within a few voxels of each other, so this does
  1-2.5x less work than a tree query per voxel (docs/benchmarks.md, "Segmentation metrics").
All are exact (they agree to ~1e-14 mm); the tests check each against MONAI and brute force.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.spatial import cKDTree

from medsight.errors import MetricError


def check_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Spacing as a tuple of ``ndim`` positive finite floats (a scalar means isotropic, None means 1 mm)."""
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        sp: tuple[float, ...] = (float(spacing),) * ndim  # type: ignore[arg-type]
    else:
        sp = tuple(float(s) for s in spacing)  # type: ignore[union-attr]
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


METHODS = ("auto", "edt", "kdtree", "grid")
# Cost model (ns) measured on the CI-class machine (benchmarks/bench_metrics.py, docs/metrics.md): EDT ~80 ns per
# box voxel per direction; k-d tree build + query ~70 ns per surface voxel per log2(surface voxels). Only the
# choice depends on it, never the values.
_EDT_NS_PER_VOXEL = 80.0
_KD_NS_PER_POINT_LOG = 70.0
_LEAFSIZE = 32  # one batched query per tree: a larger leaf than SciPy's default 16 is faster (measured)


def choose_method(n_box_voxels: int, n_surface_a: int, n_surface_b: int) -> str:
    """The cheaper exact method for one pair under the cost model above."""
    n = n_surface_a + n_surface_b
    kd = _KD_NS_PER_POINT_LOG * n * math.log2(max(n, 2))
    edt = 2 * _EDT_NS_PER_VOXEL * n_box_voxels
    return "grid" if kd < edt else "edt"  # the grid search costs at most the k-d tree's (measured: 1-2.5x less)


def _kdtree_pair(ep: np.ndarray, er: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Both directed distance sets with one k-d tree per surface, queried on all cores.

    Each surface map is scanned once (flat indices, C order); voxels on both surfaces are at distance exactly 0
    and are not queried; the trees hold millimetre coordinates (index times spacing), as MONAI's do.
    """
    flat_p, flat_r = np.flatnonzero(ep), np.flatnonzero(er)
    scale = np.asarray(spacing, dtype=float)
    xyz_p = np.stack(np.unravel_index(flat_p, ep.shape), axis=1) * scale
    xyz_r = np.stack(np.unravel_index(flat_r, er.shape), axis=1) * scale
    out = []
    for flat_a, xyz_a, xyz_b, other in ((flat_p, xyz_p, xyz_r, er), (flat_r, xyz_r, xyz_p, ep)):
        d = np.zeros(flat_a.size)
        if xyz_b.shape[0] == 0:
            d[:] = np.inf
        else:
            away = ~other.ravel()[flat_a]  # not on the other surface
            if away.any():
                tree = cKDTree(xyz_b, leafsize=_LEAFSIZE, balanced_tree=False, compact_nodes=False)
                d[away] = tree.query(xyz_a[away], k=1, workers=-1)[0]
        out.append(d)
    return out[0], out[1]


GRID_OFFSETS = 128  # nearest offsets (in mm) the grid search tries before handing a voxel to the k-d tree


def _offsets(spacing: Sequence[float], count: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer voxel offsets sorted by their length in mm, every offset up to the ``count``-th one's length
    (ties included, so that no offset shorter than the last one is missing), with their lengths."""
    sp = np.asarray(spacing, dtype=float)
    reach = math.ceil((count * np.prod(sp) * 3 / (4 * math.pi)) ** (1 / 3) / sp.min()) + 1
    grids = np.meshgrid(*[np.arange(-math.ceil(reach * sp.min() / v), math.ceil(reach * sp.min() / v) + 1)
                          for v in sp], indexing="ij")
    offs = np.stack([g.ravel() for g in grids], axis=1)
    offs = offs[np.any(offs != 0, axis=1)]
    length = np.sqrt(((offs * sp) ** 2).sum(axis=1))
    order = np.argsort(length, kind="stable")
    offs, length = offs[order], length[order]
    cut = min(count, len(length)) - 1
    keep = length <= length[cut] * (1 + 1e-12)
    # every offset kept must be shorter than any offset outside the generated box (its half-width in mm)
    limit = min((g.max()) * v for g, v in zip(grids, sp))
    keep &= length < limit
    return offs[keep], length[keep]


def _grid_directed(from_map: np.ndarray, to_map: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Exact nearest-surface distances by trying offsets in order of length on the voxel grid.

    The first offset (shortest in mm) at which ``to_map`` is set is the nearest surface voxel, so the value is
    exact; voxels with no hit within the tried offsets go to the k-d tree. Most surface voxels of compared
    segmentations lie within a few voxels of the other surface, so a few dozen vectorised look-ups replace a
    tree search per voxel.
    """
    flat_a = np.flatnonzero(from_map)
    d = np.zeros(flat_a.size)
    if flat_a.size == 0:
        return d
    if not to_map.any():
        d[:] = np.inf
        return d
    offs, length = _offsets(spacing, GRID_OFFSETS)
    pad = np.abs(offs).max(axis=0)
    padded = np.pad(to_map, [(int(p), int(p)) for p in pad])
    coords = np.stack(np.unravel_index(flat_a, from_map.shape), axis=1)
    strides = np.array(padded.strides) // padded.itemsize
    pos = (coords + pad) @ strides
    todo = np.flatnonzero(~to_map.ravel()[flat_a])  # on both surfaces: 0
    cur = pos[todo]
    flat = padded.ravel()
    for off, dist in zip(offs @ strides, length):
        hit = flat[cur + off]
        if hit.any():
            d[todo[hit]] = dist
            keep = ~hit
            todo, cur = todo[keep], cur[keep]
            if todo.size == 0:
                break
    if todo.size:  # farther than every offset tried: exact nearest neighbour by k-d tree
        scale = np.asarray(spacing, dtype=float)
        xyz_b = np.stack(np.unravel_index(np.flatnonzero(to_map), to_map.shape), axis=1) * scale
        tree = cKDTree(xyz_b, leafsize=_LEAFSIZE, balanced_tree=False, compact_nodes=False)
        d[todo] = tree.query(coords[todo] * scale, k=1, workers=-1)[0]
    return d


def directed_distances(edges_from: np.ndarray, edges_to: np.ndarray, spacing: Sequence[float],
                       method: str = "edt") -> np.ndarray:
    """Distance (mm) from every surface voxel in ``edges_from`` to the nearest one in ``edges_to``.

    Order follows C-order positions of ``edges_from``. Infinite when ``edges_to`` is empty.
    """
    n_from = int(np.count_nonzero(edges_from))
    if n_from == 0:
        return np.empty(0)
    if not edges_to.any():
        return np.full(n_from, np.inf)
    if method == "kdtree":
        return _kdtree_pair(edges_from, edges_to, spacing)[0]
    if method == "grid":
        return _grid_directed(edges_from, edges_to, spacing)
    if method != "edt":
        raise MetricError(f"distance method must be one of {METHODS}, got {method!r}")
    dt = distance_transform_edt(~edges_to, sampling=spacing)
    return dt[edges_from]


def pair_distances(ep: np.ndarray, er: np.ndarray, spacing: Sequence[float], method: str = "auto"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Both directed distance sets for padded surface maps, with ``method`` resolved by ``choose_method``."""
    if method not in METHODS:
        raise MetricError(f"distance method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        method = choose_method(ep.size, int(np.count_nonzero(ep)), int(np.count_nonzero(er)))
    if method == "kdtree" and ep.any() and er.any():
        return _kdtree_pair(ep, er, spacing)
    return directed_distances(ep, er, spacing, method), directed_distances(er, ep, spacing, method)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None,
                      method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
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
    return pair_distances(ep, er, sp, method)
