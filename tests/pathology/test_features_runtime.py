"""Tile features under ONNX Runtime equal PyTorch's (EfficientNet-Lite0 with its ImageNet weights, real SVS tiles).

``encode_batches(runtime="auto")`` exports the encoder once per input size and keeps ONNX Runtime only when its
features equal PyTorch's within 1e-4 (checked here on other tiles than the ones it was chosen on); the export is
not repeated for the next slide.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import medsight.segmentation.runtime as rt
from medsight.io.slide import open_slide
from medsight.nets.encoders import efficientnet_lite0
from medsight.pathology.features import encode_batches, iter_tile_batches
from medsight.pathology.tiling import TilingParams, tile_slide


def test_onnx_features_equal_torch_and_export_once(real_svs: Path, monkeypatch) -> None:
    enc = efficientnet_lite0(input_size=112)
    with open_slide(real_svs) as s:
        tiling, _ = tile_slide(s, TilingParams(mpp=2.0, size=112, min_tissue=0.5), sha="-")
        batches = list(iter_tile_batches(s, tiling, 4))
    assert len(batches) >= 2
    calls = []
    real_choose = rt.choose_runtime
    monkeypatch.setattr(rt, "choose_runtime", lambda *a, **k: calls.append(1) or real_choose(*a, **k))
    torch_feats = encode_batches(enc, iter(batches), runtime="torch")
    auto = encode_batches(enc, iter(batches), runtime="auto")
    again = encode_batches(enc, iter(batches), runtime="auto")  # the next slide: no second export
    assert len(calls) == 2  # one per runtime asked for, not per call
    record = enc.__dict__["_forwards"][("auto", (3, 112, 112))][1]
    assert record["runtime"] == "onnx" and record["max_abs_diff"] <= rt.TOLERANCE
    assert auto.shape == torch_feats.shape == (sum(len(b) for b in batches), 1280)
    assert np.abs(auto - torch_feats).max() <= 1e-4 and np.array_equal(auto, again)
