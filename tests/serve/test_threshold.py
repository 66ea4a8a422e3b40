"""A classifier package without a decision threshold for its label is refused when it runs (no silent 0.5)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from medsight.serve import runner
from medsight.serve.runner import ModelRef, RunError


def _bundle(thresholds):  # noqa: ANN001, ANN202
    return types.SimpleNamespace(
        labels=["normal", "abnormal"], thresholds=thresholds, config={"activation": "softmax"},
        preprocess=lambda image: torch.zeros(1, 8, 8),
        predict_logits=lambda x: torch.tensor([[0.0, 1.0]]),
        probabilities=lambda z: torch.softmax(z, 1).numpy())


@pytest.mark.parametrize("thresholds", [{}, {"abnormal": 0.8}])
def test_the_threshold_is_the_package_s_or_none(tmp_path, ct_series, monkeypatch, thresholds):
    import medsight.classification.model_io as model_io
    import medsight.package as package

    pkg = types.SimpleNamespace(has=lambda name: False)
    monkeypatch.setattr(package, "load_package", lambda path: pkg)
    monkeypatch.setattr(model_io, "load_classifier", lambda p: _bundle(thresholds))
    model = ModelRef("cls", "1", "c" * 64, "classification", tmp_path)
    if not thresholds:
        with pytest.raises(RunError, match="no decision threshold for 'abnormal'"):
            runner.run_classification(model, ct_series, tmp_path, "seed")
        return
    out = runner.run_classification(model, ct_series, tmp_path, "seed")
    p = float(np.exp(1) / (1 + np.exp(1)))  # softmax of (0, 1), worked by hand
    assert out["probability"] == pytest.approx(p, abs=1e-6) and out["threshold"] == 0.8
    assert out["positive"] is False and out["finding"] == "no abnormal"  # 0.731 < 0.8; at 0.5 it would be positive
