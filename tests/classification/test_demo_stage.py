"""The demo's classification stage runs end to end (fast mode) and leaves a loadable model for the safety stage."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.classification import load_classifier
from medsight.demo import DemoContext
from medsight.io import read_image


@pytest.fixture(scope="module")
def fast_stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoContext, dict]:
    """One run of the fast classification stage for both tests (it was run twice, identically, ~16 s each idle):
    the first test reads its outputs, the second runs the safety stage on them."""
    from medsight.demo.classification import run

    before = torch.get_num_threads()
    ctx = DemoContext(out_dir=tmp_path_factory.mktemp("demo_cls_stage"), seed=0, quiet=True, fast=True)
    summary = run(ctx)
    torch.set_num_threads(before)
    return ctx, summary


@pytest.mark.slow
def test_fast_stage_leaves_model_and_heatmaps(fast_stage: tuple[DemoContext, dict]) -> None:
    ctx, summary = fast_stage
    bundle = load_classifier(ctx.paths["cls_model"])
    assert bundle.labels == ["lesion", "large_lesion"]
    assert set(bundle.thresholds) == {"lesion", "large_lesion"}
    auc, lo, hi = summary["held_out_lesion_auc"]  # NaN when the tiny fast split has one class only
    assert math.isnan(auc) or (0.0 <= auc <= 1.0 and (math.isnan(lo) or lo <= auc <= hi))
    assert summary["epochs"] == "3 of 3"  # fast mode has no time budget
    pngs = list(Path(ctx.paths["cls_heatmaps"]).glob("*.png"))
    assert pngs and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    from PIL import Image

    for png in pngs:  # display size (issue 33): the raw overlays of ~90-px slices are enlarged, maps stay .npy
        with Image.open(png) as im:
            assert max(im.size) >= 512, (png.name, im.size)
    assert list(Path(ctx.paths["cls_heatmaps"]).glob("*.npy"))
    # where the stage's time went, phase by phase (data build, training, evaluation, figures)
    assert set(summary["timings_s"]) == {"data_s", "train_s", "evaluate_s", "heatmaps_s"}
    assert all(v >= 0 for v in summary["timings_s"].values()) and summary["torch_threads"] in (1, 2)


@pytest.mark.slow
def test_safety_stage_uses_the_project_classifier_and_feeds_report_and_predict_cls(
        fast_stage: tuple[DemoContext, dict], tmp_path: Path) -> None:
    import pandas as pd

    from medsight.classification.predict import predict_images
    from medsight.demo import safety

    ctx, _ = fast_stage
    per_scan = pd.read_csv(ctx.paths["cls_predictions"])
    assert list(per_scan.columns) == ["case_id", "y_true", "prob", "image", "mask"]
    # the evidence slice of a scan with a lesion is one of its lesion slices
    slices_of = pd.read_csv(ctx.paths["cls_manifest"])
    root = Path(ctx.paths["cls_manifest"]).parent
    table_dir = Path(ctx.paths["cls_predictions"]).parent  # evidence-slice paths are relative to the table
    for row in per_scan.itertuples():
        mine = slices_of[slices_of["case_id"] == row.case_id]
        shown = mine[[(root / p).resolve() == (table_dir / row.image).resolve() for p in mine["image"]]]
        assert len(shown) == 1 and (row.y_true == 0 or shown["lesion"].iloc[0] == 1)
    summary = safety.run(ctx)
    assert summary["classifier"].startswith("project classifier")
    # safety calibrates its own copy of the classifier and writes its own scan table: the classification stage's
    # outputs are left as that stage wrote them
    model = Path(ctx.paths["safety_classifier"])
    assert model != Path(ctx.paths["cls_model"]) and not (Path(ctx.paths["cls_model"]) / "calibration.json").exists()
    assert (model / "calibration.json").is_file() and (model / "referral.json").is_file()
    from medsight.package import load_package as _load

    parent, derived = _load(ctx.paths["cls_model"]), _load(model)  # ONE derived version, parent recorded; the
    assert derived.parent_id == parent.id and derived.has("scan_level.json")  # registered @N still loads by name
    if parent.extra.get("below_target"):  # the --fast model misses its validation target: no serving candidate
        assert parent.version is None and derived.version is None and derived.extra.get("below_target")
    else:
        assert _load(f"{parent.name}@{parent.version}").id == parent.id
    assert list(pd.read_csv(ctx.paths["cls_predictions"]).columns) == ["case_id", "y_true", "prob", "image", "mask"]
    per_scan = pd.read_csv(ctx.paths["safety_scan_predictions"])
    assert {"prob", "prob_uncalibrated", "referred", "image", "mask", "split", "patient_id"} <= set(per_scan.columns)
    assert (model / "scan_level.json").is_file() and summary["scan_level"]["unit"] == "scan"
    assert per_scan["case_id"].is_unique and per_scan["referred"].isin([0, 1]).all()
    # the uncalibrated scan probability is the highest slice probability of the plain model
    table = pd.read_csv(ctx.paths["cls_manifest"])
    scan = per_scan.iloc[0]
    slices = table[table["case_id"] == scan["case_id"]]
    from medsight.package import load_package
    from medsight.safety.assess import SafetyAssessor

    assessor = SafetyAssessor.from_model_dir(load_package(model))  # the package's referral rule, as predict-cls does
    out = predict_images(model, [Path(ctx.paths["cls_manifest"]).parent / p for p in slices["image"]],
                         tmp_path / "p.csv", gradcam=False, quiet=True, assessor=assessor)
    assert set(out["referral"]) <= {"accept", "refer"}
    bundle = load_classifier(model)
    x = torch.stack([bundle.preprocess(read_image(Path(ctx.paths["cls_manifest"]).parent / p))
                     for p in slices["image"]])
    raw = 1 / (1 + np.exp(-bundle.predict_logits(x, calibrated=False)[:, 0]))
    assert abs(raw.max() - scan["prob_uncalibrated"]) < 1e-5
