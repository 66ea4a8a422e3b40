"""Entropy and mutual information against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medsight.errors import MetricError
from medsight.safety.uncertainty import (classification_summary, expected_entropy, mutual_information,
                                         predictive_entropy, segmentation_case_summary)


def test_disagreeing_confident_members_are_all_epistemic() -> None:
    s = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # (S=2, N=1, C=2)
    assert predictive_entropy(s)[0] == pytest.approx(math.log(2))
    assert expected_entropy(s)[0] == pytest.approx(0.0, abs=1e-9)
    assert mutual_information(s)[0] == pytest.approx(math.log(2))


def test_agreeing_uncertain_members_have_no_mutual_information() -> None:
    s = np.array([[[0.7, 0.2, 0.1]], [[0.7, 0.2, 0.1]]])
    h = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1))
    assert predictive_entropy(s)[0] == pytest.approx(h)
    assert mutual_information(s)[0] == pytest.approx(0.0, abs=1e-12)
    summ = classification_summary(s)
    assert summ["pred"][0] == 0 and summ["confidence"][0] == pytest.approx(0.7)


def test_segmentation_summary_volume_cv_and_inside_entropy() -> None:
    # 3 members, 2 classes, 1x10 image, spacing 2x5 mm -> 10 mm^3 = 0.01 ml per voxel
    fg = np.zeros((3, 1, 10))
    fg[0, 0, :4] = 0.9
    fg[1, 0, :5] = 0.9
    fg[2, 0, :6] = 0.9
    s = np.stack([1 - fg, fg], axis=1)  # (S, C, 1, 10)
    (row,) = segmentation_case_summary(s, spacing=(2.0, 5.0), labels={1: "lesion"})
    vols = np.array([4, 5, 6]) * 0.01
    assert row["name"] == "lesion"
    assert row["volume_ml_members_mean"] == pytest.approx(0.05)
    assert row["volume_cv"] == pytest.approx(vols.std() / vols.mean())
    # mean prediction: voxels 0-3 p=.9, voxel 4 p=.6, voxel 5 p=.3 -> structure = voxels 0..4
    assert row["volume_ml"] == pytest.approx(0.05)
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    assert row["mean_entropy_inside"] == pytest.approx((4 * h(0.9) + h(0.6)) / 5)


def test_logits_are_rejected() -> None:
    with pytest.raises(MetricError, match="softmax"):
        predictive_entropy(np.array([[[3.0, -2.0]]]))
