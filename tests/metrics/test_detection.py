"""FROC and LUNA16 CPM worked by hand; candidate matching by the LUNA16 radius criterion."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.errors import MetricError
from medsight.metrics.detection import cpm, froc_curve, match_candidates, sensitivity_at_fp_rates


def test_match_candidates_radius_and_image() -> None:
    lesions = np.array([[10.0, 10, 10], [50, 50, 50], [10, 10, 10]])
    hit = match_candidates(["a", "a", "a", "b", "c"], np.array([[12.0, 10, 10], [50, 50, 58], [90, 90, 90],
                                                                  [11, 10, 10], [10, 10, 10]]),
                           ["a", "a", "b"], lesions, [3.0, 5.0, 2.0])
    assert hit.tolist() == [0, -1, -1, 2, -1]


def test_froc_by_hand() -> None:
    # 2 images, 3 lesions. Scores high->low: hit L0, FP, hit L1, FP, second hit on L0 (neither TP nor FP)
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    hits = [0, -1, 1, -1, 0]
    c = froc_curve(scores, hits, n_lesions=3, n_images=2)
    np.testing.assert_allclose(c["fp_per_image"], [0, 0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(c["sensitivity"], [0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])
    s = sensitivity_at_fp_rates(c)  # 1/8 and 1/4 on the flat 1/3 step; 0.5 -> 2/3 (top of the step); >=1 -> 2/3
    np.testing.assert_allclose(s, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])
    assert cpm(scores, hits, 3, 2) == pytest.approx(np.mean([1 / 3, 1 / 3] + [2 / 3] * 5))


def test_linear_interpolation_between_operating_points() -> None:
    # 8 images; FP rates 0.25 then 1.0 -> sensitivity at 0.5 FP/image interpolates between 0.5 and 1.0
    scores = [0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3]
    hits = [0, -1, -1, 1, -1, -1, -1, -1]
    c = froc_curve(scores, hits, n_lesions=2, n_images=8)
    s = sensitivity_at_fp_rates(c, [0.5])
    # points: (0,0) (0,.5) (.125,.5) (.25,.5) (.25,1) (.375,1)...; at 0.5 FP/image all lesions are found
    assert s[0] == pytest.approx(1.0)
    assert sensitivity_at_fp_rates(c, [0.2])[0] == pytest.approx(0.5)


def test_perfect_detector_scores_one_and_errors() -> None:
    assert cpm([0.9, 0.8, 0.1], [0, 1, -1], 2, 1) == pytest.approx(1.0)
    with pytest.raises(MetricError, match="hits lesion 5"):
        froc_curve([0.5], [5], n_lesions=2, n_images=1)
    with pytest.raises(MetricError, match="finite"):
        froc_curve([np.nan], [0], n_lesions=1, n_images=1)
