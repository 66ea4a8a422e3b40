"""The demo's classification stage runs end to end (fast mode) and leaves a loadable model for the safety stage."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from medsight.classify import load_classifier
from medsight.demo import DemoContext


@pytest.mark.slow
def test_fast_stage_leaves_model_and_heatmaps(tmp_path: Path) -> None:
    from medsight.demo.classification import run

    ctx = DemoContext(out_dir=tmp_path, seed=0, quiet=True, fast=True)
    summary = run(ctx)
    bundle = load_classifier(ctx.paths["cls_model"])
    assert bundle.labels == ["lesion", "large_lesion"]
    assert set(bundle.thresholds) == {"lesion", "large_lesion"}
    auc, lo, hi = summary["held_out_lesion_auc"]  # NaN when the tiny fast split has one class only
    assert math.isnan(auc) or (0.0 <= auc <= 1.0 and (math.isnan(lo) or lo <= auc <= hi))
    assert summary["epochs"] == 3
    pngs = list(Path(ctx.paths["cls_heatmaps"]).glob("*.png"))
    assert pngs and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
