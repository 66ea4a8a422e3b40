"""Test-time mirroring only where it pays: the study's arithmetic against hand-worked values, the package's
choice from its folds, predict's default and overrides, batched flips, and the ONNX Runtime choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medsight.segmentation.runtime import TOLERANCE, choose_runtime
from medsight.segmentation.tta import choose_axes, combine_studies, hard_dice, mirrored_softmax


def test_batched_flips_equal_one_pass_per_flip():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1)
    x = torch.randn(2, 1, 8, 6, 4)
    combos = [(), (0,), (2,), (0, 1, 2)]
    with torch.no_grad():
        manual = sum(torch.flip(torch.softmax(net(torch.flip(x, [a + 2 for a in c])), 1), [a + 2 for a in c])
                     for c in combos) / len(combos)
        out = mirrored_softmax(net, x, combos=combos)
        single = mirrored_softmax(net, x, combos=[(1,)])
    assert torch.allclose(out, manual, atol=1e-6)
    assert torch.allclose(single, torch.flip(torch.softmax(net(torch.flip(x, [3])), 1), [3]), atol=1e-6)


def test_hard_dice_by_hand():
    ref = np.array([0, 1, 1, 2, 2, 0])
    pred = np.array([0, 1, 0, 2, 2, 2])  # class 1: 2*1/(1+2) = 2/3; class 2: 2*2/(3+2) = 4/5
    prob = np.eye(3)[pred].T
    assert hard_dice(prob, ref, 3) == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_package_choice_weights_folds_by_cases_and_needs_the_minimum_gain():
    a = {"n_cases": 3, "gain_by_axis": {"0": 0.004, "1": -0.01, "2": 0.0}}
    b = {"n_cases": 1, "gain_by_axis": {"0": -0.004, "1": 0.05, "2": 0.002}}
    c = combine_studies([a, b, {"n_cases": 0, "gain_by_axis": {"0": 9.0}}])
    assert c["gain_by_axis"]["0"] == pytest.approx((3 * 0.004 - 0.004) / 4)  # 0.002 -> kept
    assert c["gain_by_axis"]["1"] == pytest.approx((3 * -0.01 + 0.05) / 4)  # 0.005 -> kept
    assert c["gain_by_axis"]["2"] == pytest.approx(0.002 / 4)  # 0.0005 < 0.001 -> dropped
    assert c["mirror_axes"] == [0, 1] and c["n_cases"] == 4 and c["folds"] == 2
    assert combine_studies([]) is None
    assert choose_axes({"0": float("nan"), "1": 0.001}) == [1]


def test_runtime_choice_onnx_equals_torch_within_tolerance_or_falls_back():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1)).eval()
    x = torch.randn(2, 1, 8, 8, 8)
    fn, rec = choose_runtime(net, x, "onnx")
    with torch.no_grad():
        ref = net(x)
    assert rec["runtime"] == "onnx" and rec["max_abs_diff"] <= TOLERANCE
    assert torch.allclose(fn(x), ref, atol=TOLERANCE)
    fn, rec = choose_runtime(net, x, "auto")
    assert rec["runtime"] in ("onnx", "torch") and rec["max_abs_diff"] <= TOLERANCE
    assert rec["runtime"] == "onnx"  # equal within tolerance: chosen, the same engine on every run (no timing)
    assert choose_runtime(net, x, "auto")[1]["runtime"] == rec["runtime"]
    fn, rec = choose_runtime(net, x, "torch")
    assert rec["runtime"] == "torch" and torch.equal(fn(x), ref)


def test_runtime_falls_back_to_torch_when_onnx_differs(monkeypatch):
    import medsight.segmentation.runtime as rt

    net = torch.nn.Conv3d(1, 2, 1).eval()
    x = torch.randn(1, 1, 4, 4, 4)
    monkeypatch.setattr(rt, "onnx_forward", lambda n, e: (lambda t: rt.torch_forward(n)(t) + 2 * TOLERANCE))
    fn, rec = choose_runtime(net, x, "auto")
    assert rec["runtime"] == "torch" and rec["max_abs_diff"] == pytest.approx(2 * TOLERANCE, rel=1e-3)


def test_recorded_axes_come_from_the_package_file(tmp_path):
    from medsight.segmentation.predict import recorded_mirror_axes

    assert recorded_mirror_axes(tmp_path) == ([], "none recorded in the package")
    (tmp_path / "inference.json").write_text(json.dumps({"mirror_axes": [0, 2]}))
    assert recorded_mirror_axes(tmp_path) == ([0, 2], "measured at training")


def test_validation_predicts_with_the_packages_recorded_axes(tmp_path, monkeypatch):
    """report.run_model used to force mirror axis 0 whatever the package measured; now it takes the recorded
    axes (Predictor's mirror_axes=None), like `medsight predict`."""
    import medsight.segmentation.predict as predict
    from medsight.report.run_model import fold_predictor

    made = []

    class Recorder:
        def __init__(self, model_dir, folds=None, mirror=True, mirror_axes=None, **kw):
            made.append((folds, mirror, mirror_axes))

    monkeypatch.setattr(predict, "Predictor", Recorder)
    fold_predictor(tmp_path, "1")
    fold_predictor(tmp_path, None)
    assert made == [(["1"], True, None), (None, True, None)]
