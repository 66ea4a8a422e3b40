"""Slices the way a radiologist expects to see them: radiological orientation, true pixel aspect, a window.

Every view is chosen from the image's direction cosines (``Geometry.direction``, LPS), not from the array order:

* axial: patient's right on the viewer's left, anterior at the top;
* coronal: patient's right on the viewer's left, superior at the top;
* sagittal: anterior on the viewer's left, superior at the top.

The index axis whose direction is closest to the wanted screen direction is used (and flipped when it points the
other way), so a flipped or permuted volume still shows in the same orientation, and the edge labels are computed
from the direction vectors actually shown (an oblique scan gets two letters, e.g. "LA"). A 2D geometry has no
slice plane in the patient: it is shown as stored (columns = i, rows = j) without labels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medsight.image import Geometry, Image

# world axis (LPS: 0 = x -> L, 1 = y -> P, 2 = z -> S) and the sign its screen direction should have
# view -> (normal axis, (horizontal axis, +1: rightward is +axis), (vertical axis, +1: downward is +axis))
VIEWS: dict[str, tuple[int, tuple[int, int], tuple[int, int]]] = {
    "axial": (2, (0, 1), (1, 1)),
    "coronal": (1, (0, 1), (2, -1)),
    "sagittal": (0, (1, 1), (2, -1)),
}
_LETTERS = (("L", "R"), ("P", "A"), ("S", "I"))
OBLIQUE_COMPONENT = 0.25  # a world component this large (|cos| >= 0.25, i.e. > ~15 degrees) earns a letter

# CT windows (width, level in HU) by DICOM BodyPartExamined; "default" for anything else
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "HEAD": (80.0, 40.0), "BRAIN": (80.0, 40.0), "NECK": (350.0, 40.0), "CHEST": (1500.0, -600.0),
    "LUNG": (1500.0, -600.0), "ABDOMEN": (400.0, 50.0), "PELVIS": (400.0, 40.0), "LIVER": (150.0, 30.0),
    "SPINE": (1800.0, 400.0), "BONE": (1800.0, 400.0), "default": (400.0, 40.0),
}
MR_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class View:
    """One 2D view of an image: which index axis runs across (h) and down (v), flips, and the fixed slice."""

    name: str
    h_axis: int
    v_axis: int
    flip_h: bool
    flip_v: bool
    fixed_axis: int | None = None
    index: int = 0
    labels: dict[str, str] | None = None  # edge -> letters: "left", "right", "top", "bottom"

    def take(self, a: np.ndarray) -> np.ndarray:
        """[i, j(, k)] array -> rows x columns on screen (rows = v_axis downwards, columns = h_axis rightwards)."""
        a = np.asarray(a)
        if self.fixed_axis is not None:
            a = np.take(a, self.index, axis=self.fixed_axis)
            h = self.h_axis - (self.h_axis > self.fixed_axis)
            v = self.v_axis - (self.v_axis > self.fixed_axis)
        else:
            h, v = self.h_axis, self.v_axis
        s = np.transpose(a, (v, h))
        if self.flip_v:
            s = s[::-1, :]
        if self.flip_h:
            s = s[:, ::-1]
        return np.ascontiguousarray(s)

    def extent_mm(self, shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[float, float]:
        """(width, height) of the view in millimetres."""
        return shape[self.h_axis] * spacing[self.h_axis], shape[self.v_axis] * spacing[self.v_axis]


def _assignment(direction: np.ndarray) -> tuple[int, ...]:
    """world axis of each index axis: the permutation that keeps the direction cosines' largest share."""
    n = direction.shape[0]
    best = max(itertools.permutations(range(n)), key=lambda p: sum(abs(direction[p[a], a]) for a in range(n)))
    return tuple(best)


def direction_letters(vector: np.ndarray) -> str:
    """Patient direction(s) an LPS vector points to, largest first: (1, 0, 0) -> "L", (0.7, -0.7, 0) -> "LA"."""
    v = np.asarray(vector, dtype=float)
    order = np.argsort(-np.abs(v), kind="stable")
    return "".join(_LETTERS[w][0 if v[w] > 0 else 1] for w in order if abs(v[w]) >= OBLIQUE_COMPONENT) or "?"


def _edge_labels(direction: np.ndarray, h: int, v: int, flip_h: bool, flip_v: bool) -> dict[str, str]:
    right = direction[:, h] * (-1 if flip_h else 1)
    down = direction[:, v] * (-1 if flip_v else 1)
    return {"right": direction_letters(right), "left": direction_letters(-right),
            "bottom": direction_letters(down), "top": direction_letters(-down)}


def patient_views(geometry: Geometry, shape: tuple[int, ...]) -> dict[str, View]:
    """The views an image offers: all three for a volume, one for a single slice (the plane it lies in), and
    one unlabelled "image" view for a 2D geometry. Slices are at the middle until ``through`` moves them."""
    if geometry.ndim == 2:
        return {"image": View("image", 0, 1, False, False)}
    d = geometry.direction_matrix
    world = _assignment(d)
    axis_of = {w: a for a, w in enumerate(world)}
    singles = [a for a in range(3) if shape[a] == 1]
    views = {}
    for name, (normal, (hw, hs), (vw, vs)) in VIEWS.items():
        fixed = axis_of[normal]
        if singles and fixed not in singles:
            continue
        h, v = axis_of[hw], axis_of[vw]
        flip_h = bool(np.sign(d[hw, h]) != hs)
        flip_v = bool(np.sign(d[vw, v]) != vs)
        views[name] = View(name, h, v, flip_h, flip_v, fixed, shape[fixed] // 2, _edge_labels(d, h, v, flip_h, flip_v))
    return views


def through(views: dict[str, View], index: tuple[int, ...]) -> dict[str, View]:
    """The same views, each cutting through voxel ``index`` (the evidence peak or a lesion's centre)."""
    out = {}
    for name, v in views.items():
        out[name] = v if v.fixed_axis is None else View(v.name, v.h_axis, v.v_axis, v.flip_h, v.flip_v,
                                                           v.fixed_axis, int(index[v.fixed_axis]), v.labels)
    return out


def window_for(image: Image, array: np.ndarray | None = None) -> tuple[float, float, str]:
    """(low, high, description) of the grey window: CT by body part (HU), anything else by percentiles."""
    a = np.asarray(image.array if array is None else array, dtype=np.float32)
    prov = image.provenance
    if prov.modality.upper() == "CT":
        part = prov.body_part.upper() or "default"
        width, level = CT_WINDOWS.get(part, CT_WINDOWS["default"])
        name = part.lower() if part in CT_WINDOWS else "soft tissue"
        return level - width / 2, level + width / 2, f"CT {name} window W{width:g}/L{level:g} HU"
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return 0.0, 1.0, "empty image"
    body = finite[finite > finite.min()]  # air / padding at the minimum would take the whole low end
    if body.size < 0.05 * finite.size:
        body = finite
    lo, hi = np.percentile(body, MR_PERCENTILES)
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    kind = f"{prov.modality.upper()} window" if prov.modality else "window"
    return float(lo), float(hi), f"{kind}: percentiles {MR_PERCENTILES[0]:g}-{MR_PERCENTILES[1]:g} of the body"


def display_shape(width_mm: float, height_mm: float, long_side: int) -> tuple[int, int]:
    """(rows, columns) on screen with ``long_side`` pixels on the longer side and the true aspect ratio."""
    scale = long_side / max(width_mm, height_mm)
    return max(1, int(round(height_mm * scale))), max(1, int(round(width_mm * scale)))


def resample(s: np.ndarray, out_shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """A view (rows x columns of voxels) onto ``out_shape`` display pixels, voxel edges on pixel edges: display
    pixel p covers voxel coordinate (p + 0.5) * n / N - 0.5 (linear by default; order 0 = nearest)."""
    s = np.asarray(s, dtype=np.float32)
    rows = (np.arange(out_shape[0]) + 0.5) * s.shape[0] / out_shape[0] - 0.5
    cols = (np.arange(out_shape[1]) + 0.5) * s.shape[1] / out_shape[1] - 0.5
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(s, [rr, cc], order=order, mode="nearest")


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The inner rim (``width`` pixels) of a display-resolution mask."""
    m = np.asarray(mask, bool)
    if not m.any():
        return m
    inner = ndimage.binary_erosion(m, iterations=width, border_value=0)
    return m & ~inner
