"""No silent failure: a classifier that misses its own validation target (labels shuffled, so nothing can be
learnt) is marked 'below target' in its package, card, report and the demo table, and is not registered as a
serving candidate unless forced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medsight.classification.package import package_classifier
from medsight.classification.train import TrainConfig, train_classifier, validation_target
from medsight.package.registry import Registry

CFG = dict(backbone="resnet10-slim", input_size=(32, 32), epochs=2, batch_size=16, lr=3e-3, augment=False)


@pytest.fixture(scope="module")
def broken_model(square_data: tuple[Path, list], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the square images with their labels shuffled by patient: chance level by design."""
    manifest, _ = square_data
    table = pd.read_csv(manifest)
    rng = np.random.default_rng(3)
    table["square"] = rng.permutation(table["square"].to_numpy())
    table["image"] = [str(manifest.parent / p) for p in table["image"]]
    shuffled = tmp_path_factory.mktemp("shuffled") / "manifest.csv"
    table[["image", "patient_id", "site", "square"]].to_csv(shuffled, index=False)
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("broken") / "model.training"
    train_classifier(shuffled, out, TrainConfig(**CFG, labels=["square"], validation_target=0.9), quiet=True)
    return out


def test_validation_target_text_and_flag() -> None:
    assert validation_target(0.95, None, "AUC") is None
    ok, low = validation_target(0.95, 0.9, "AUC"), validation_target(0.481, 0.9, "AUC")
    assert ok["met"] and ok["text"] == "meets target: AUC 0.950 >= target 0.900"
    assert not low["met"] and low["text"] == "below target: AUC 0.481 < target 0.900"
    assert not validation_target(float("nan"), 0.9, "AUC")["met"]


def test_shuffled_labels_are_below_target_and_not_registered(broken_model: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDSIGHT_REGISTRY_URL", raising=False)
    target = json.loads((broken_model / "config.json").read_text())["validation"]["target"]
    assert target["minimum"] == 0.9 and not target["met"] and target["value"] < 0.9
    pkg = package_classifier(broken_model, tmp_path / "pkg", name="broken")
    assert pkg.extra["below_target"].startswith("below target: mean validation AUC")
    assert pkg.version is None and Registry().list() == []  # written, but no serving candidate
    forced = package_classifier(broken_model, tmp_path / "pkg2", name="broken", force=True)
    assert forced.version == 1 and [r.status for r in Registry().list()] == ["candidate"]
    assert forced.extra["below_target"] == pkg.extra["below_target"]  # forced, still marked


def test_card_report_and_demo_table_show_it(broken_model: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from markupsafe import escape

    from medsight.demo.summary import is_below_target, rows
    from medsight.package.model_card import build_model_card
    from medsight.report.cards import package_info
    from medsight.report.html import render_html
    from medsight.report.results import ValidationResults

    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    pkg = package_classifier(broken_model, tmp_path / "pkg", name="broken")
    card = build_model_card({}, "classification", name="broken", package=package_info(pkg.path))
    assert card.extra["below_target"] == pkg.extra["below_target"]
    assert card.to_markdown().splitlines()[2].startswith("> **BELOW TARGET**")
    html = render_html(ValidationResults(title="t", created="now", min_cases=5, model={"hashes": {}, "versions": {}},
                                         model_cards=[card.to_dict()]))
    assert 'class="below-target"' in html and str(escape(pkg.extra["below_target"])) in html
    good = build_model_card({}, "classification", name="fine", package={"id": "x", "version": "1"})
    assert 'class="below-target"' not in render_html(ValidationResults(
        title="t", created="now", min_cases=5, model={"hashes": {}, "versions": {}}, model_cards=[good.to_dict()]))
    flagged = [r for r in rows({"classification": {"validation_target": pkg.extra["below_target"]}})
               if is_below_target(r[2])]
    assert len(flagged) == 1 and not is_below_target("meets target: mean validation AUC 0.95 >= target 0.900")
