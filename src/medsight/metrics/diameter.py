"""The longest diameter of a voxelised lesion: its maximum Feret (caliper) diameter, in world mm.

A voxel is a box, not a point. Measured between voxel *centres*, a lesion one voxel thick would be 0 mm long and a
row of n voxels (n - 1) voxels long; a caliper laid on the image spans the boxes' outer faces. So the diameter
here is the largest distance between two corners of the lesion's voxels (direction and spacing applied): a row of
n voxels measures n voxels, a one-voxel lesion its voxel's own diagonal, a box its corner-to-corner diagonal.
Only corners of surface voxels can be extreme, and above ``HULL_FROM`` corners only the convex hull's vertices are
compared (same maximum, far fewer pairs).
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import pdist

from medsight.image import Geometry

HULL_FROM = 64


def longest_diameter_mm(mask: np.ndarray, geometry: Geometry) -> float:
    """Largest corner-to-corner distance over the voxels of ``mask`` (mm); 0.0 for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    surface = m & ~ndimage.binary_erosion(m, border_value=0)
    idx = np.argwhere(surface).astype(float)
    if len(idx) == 0:
        return 0.0
    offsets = np.array(list(itertools.product((-0.5, 0.5), repeat=m.ndim)))
    corners = np.unique((idx[:, None, :] + offsets[None]).reshape(-1, m.ndim), axis=0)
    pts = np.asarray(geometry.index_to_world(corners), dtype=float)
    if len(pts) > HULL_FROM:
        from scipy.spatial import ConvexHull, QhullError

        try:
            pts = pts[ConvexHull(pts).vertices]
        except (QhullError, ValueError):  # degenerate (e.g. 2D points in a 3D frame): compare them all
            pass
    return float(pdist(pts).max())
