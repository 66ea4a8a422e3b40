"""3D lesion boxes with scores in predict's lesion table, and FROC over them with panoptica-style matching."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.image import Geometry
from medsight.metrics.lesions import case_lesions, froc
from medsight.segmentation.lesions import measure_lesions

IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _prob(labels: np.ndarray, lesion_p: list[tuple[tuple[slice, ...], float]]) -> np.ndarray:
    prob = np.zeros((4, *labels.shape), np.float32)
    prob[0] = 1.0
    for box, p in lesion_p:
        prob[(0, *box)], prob[(3, *box)], prob[(2, *box)] = 0.0, p, 1.0 - p
    return prob


def test_box_is_the_lesion_extent_in_world_mm_and_voxels() -> None:
    geom = Geometry((0.5, 2.0, 3.0), (10.0, -5.0, 3.0), IDENTITY)
    labels = np.zeros((12, 8, 6), np.uint8)
    box = (slice(2, 6), slice(3, 6), slice(1, 3))
    labels[box] = 3
    _, table = measure_lesions(labels, _prob(labels, [(box, 0.8)]), geom, {3: "lesion"})
    row = table.rows[0]
    # by hand: outer faces of voxels 2..5, 3..5, 1..2 -> index -0.5 / +0.5, times spacing, plus origin
    assert [row["box_min_l_mm"], row["box_min_p_mm"], row["box_min_s_mm"]] == pytest.approx([10.75, 0.0, 4.5])
    assert [row["box_max_l_mm"], row["box_max_p_mm"], row["box_max_s_mm"]] == pytest.approx([12.75, 6.0, 10.5])
    assert row["box_voxels"] == "2:6,3:6,1:3" and row["score"] == pytest.approx(0.8)


def test_one_voxel_lesion_box_spans_its_voxel() -> None:
    geom = Geometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0), IDENTITY)
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[2, 2, 2] = 3
    _, table = measure_lesions(labels, _prob(labels, [((slice(2, 3),) * 3, 0.7)]), geom, {3: "lesion"})
    row = table.rows[0]
    assert row["box_max_l_mm"] - row["box_min_l_mm"] == pytest.approx(2.0)
    assert row["longest_diameter_mm"] == pytest.approx(np.sqrt(3 * 2.0 ** 2), abs=1e-3)  # its voxel's diagonal, not 0 mm


def test_froc_from_scored_lesions_with_panoptica_matching() -> None:
    """Two cases: a found lesion (score 0.9), a false positive (0.6) and a missed lesion; matching at IoU > 0.5
    (panoptica's NaiveThresholdMatching(0.5)). FROC by hand: at t = 0.9 sensitivity 1/2 at 0 FP; at t = 0.6 1/2 at
    1/2 FP per case."""
    a, b = (slice(1, 4),) * 3, (slice(6, 9),) * 3
    ref1 = np.zeros((10, 10, 10), bool)
    ref1[a] = True
    pred1 = np.zeros_like(ref1)
    pred1[1:4, 1:4, 1:3] = True  # IoU 18/27 = 0.67 > 0.5
    pred2, ref2 = np.zeros_like(ref1), np.zeros_like(ref1)
    pred2[b], ref2[a] = True, True
    geom = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), IDENTITY)
    cases = []
    for pred, ref, p in ((pred1, ref1, 0.9), (pred2, ref2, 0.6)):
        labels = np.where(pred, 3, 0).astype(np.uint8)
        _, table = measure_lesions(labels, _prob(labels, [(tuple(slice(int(i.min()), int(i.max()) + 1)
                                                                for i in np.nonzero(pred)), p)]), geom, {3: "lesion"})
        scores = np.zeros(pred.shape)
        for row in table.rows:  # the scores predict writes, put back on the lesion's box
            box = tuple(slice(*map(int, r.split(":"))) for r in row["box_voxels"].split(","))
            scores[box] = np.where(pred[box], row["score"], 0.0)
        cases.append(case_lesions(pred, ref, (1.0,) * 3, scores=scores, iou_threshold=0.5))
    f = froc(cases)
    pts = [(p["threshold"], p["fp_per_case"], p["sensitivity"]) for p in f["points"]]
    assert pts[1:] == [pytest.approx((0.9, 0.0, 0.5)), pytest.approx((0.6, 0.5, 0.5))]
    assert f["sensitivity_at_1fp"] == 0.5
