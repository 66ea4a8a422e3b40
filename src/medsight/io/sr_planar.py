"""Each SEG segment as a planar outline: the pixel-edge outline on the source image where the segment is largest.

Why: viewers that list SR measurements (OHIF's cornerstone-dicom-sr) list only groups with image coordinates
(SCOORD); a volumetric group that references a SEG segment has none. So ``build_sr`` adds, per lesion, a TID 1410
planar group with this outline as its Image Region. The outline is read back from the SEG itself (its frames and
the source image each frame derives from), so it is the segment the SEG carries, on the image it was made from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Outline:
    """A closed polyline (first point = last) in the source image's pixel coordinates (column, row; the top-left
    corner of the top-left pixel is 0,0, PS3.3 C.18.6.1.1), on the image with this SOP Instance UID."""

    sop_instance_uid: str
    points: np.ndarray  # (n, 2) float, column then row
    pixels: int  # segment pixels on that image


def _loops(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """The boundary of ``mask`` (rows, cols) as closed loops of pixel-corner points (x=col, y=row), each edge
    directed clockwise on screen (interior on its right)."""
    m = np.pad(np.asarray(mask, bool), 1)
    nxt: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, c in np.argwhere(m):
        x, y = int(c) - 1, int(r) - 1  # back to unpadded pixel coordinates
        if not m[r - 1, c]:
            nxt.setdefault((x, y), []).append((x + 1, y))  # top edge, left to right
        if not m[r, c + 1]:
            nxt.setdefault((x + 1, y), []).append((x + 1, y + 1))  # right edge, downwards
        if not m[r + 1, c]:
            nxt.setdefault((x + 1, y + 1), []).append((x, y + 1))  # bottom edge, right to left
        if not m[r, c - 1]:
            nxt.setdefault((x, y + 1), []).append((x, y))  # left edge, upwards
    loops = []
    while nxt:
        start = next(iter(nxt))
        loop, p = [start], start
        while True:
            q = nxt[p].pop()
            if not nxt[p]:
                del nxt[p]
            if q == start:
                break
            loop.append(q)
            p = q
        loops.append(loop)
    return loops


def _corners(loop: list[tuple[int, int]]) -> np.ndarray:
    """The loop without its collinear points, closed (first point repeated at the end)."""
    pts = np.asarray(loop, float)
    before, after = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    (ax, ay), (bx, by) = (pts - before).T, (after - pts).T
    turn = ax * by - ay * bx != 0
    kept = pts[turn]
    return np.vstack([kept, kept[:1]])


def _area(closed: np.ndarray) -> float:
    x, y = closed[:, 0], closed[:, 1]
    return 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))


def outline(mask: np.ndarray) -> np.ndarray:
    """The outer outline of the largest piece of a 2D mask (rows, cols) along pixel edges; holes are not drawn."""
    loops = [_corners(lp) for lp in _loops(mask)]
    return max(loops, key=_area)


def segment_outlines(seg: Dataset) -> dict[int, Outline]:
    """Per segment number of ``seg``: its outline on the source image where it has the most pixels; on a tie, the
    image first along the slice normal (row x column direction), whatever order the SEG's frames are in."""
    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        frames = frames[None]
    iop = np.asarray(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient,
                     float)
    normal = np.cross(iop[:3], iop[3:])
    best: dict[int, tuple[int, float, int]] = {}  # segment -> (pixels, -position along the normal, frame)
    for f, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        n = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        count = int(np.count_nonzero(frames[f]))
        along = float(np.dot(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float), normal))
        if count and (count, -along) > best.get(n, (0, 0.0, -1))[:2]:
            best[n] = (count, -along, f)
    out = {}
    for n, (count, _, f) in best.items():
        source = seg.PerFrameFunctionalGroupsSequence[f].DerivationImageSequence[0].SourceImageSequence[0]
        out[n] = Outline(str(source.ReferencedSOPInstanceUID), outline(frames[f] > 0), count)
    return out
