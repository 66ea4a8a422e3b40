"""A model trained on images whose label is only a bright square learns it, and Grad-CAM points at the square;
multi-label outputs and thresholds survive save/load; predict-cls writes probabilities, decisions and heatmaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from medsight.classification import load_classifier
from medsight.package import PackageError
from medsight.classification.dataset import load_tensors
from medsight.classification.predict import predict_images
from medsight.classification.train import TrainConfig, train_classifier
from medsight.explain.faithfulness import pointing_game
from medsight.explain.gradcam import gradcam_maps

CFG = dict(backbone="resnet10-slim", input_size=(48, 48), epochs=6, batch_size=16, lr=3e-3, cam_layer="net.layer1",
           augment=False, target_sensitivity=0.9)


@pytest.fixture(scope="module")
def trained(square_data: tuple[Path, list[tuple[int, int]]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest, _ = square_data
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("model")
    train_classifier(manifest, out, TrainConfig(**CFG, labels=["square", "left_half"]), quiet=True)
    return out


def test_learns_square_and_gradcam_points_at_it(trained: Path, tmp_path: Path, make_squares) -> None:
    auc, pointing = _auc_and_pointing_on_new_squares(load_classifier(trained, unpackaged=True), tmp_path,
                                                     make_squares, seed=1)
    assert auc > 0.97 and pointing >= 0.9


def _auc_and_pointing_on_new_squares(bundle, tmp_path: Path, make_squares, seed: int) -> tuple[float, float]:  # noqa: ANN001
    """Square-presence AUC on 40 unseen images, and the pointing game of Grad-CAM against the squares."""
    manifest, corners = make_squares(tmp_path / "test", n=40, seed=seed)
    table = pd.read_csv(manifest)
    x = load_tensors([manifest.parent / p for p in table["image"]], (48, 48), quiet=True)
    prob = bundle.probabilities(bundle.predict_logits(x))
    pos = np.flatnonzero(table["square"].to_numpy() == 1)
    cams = gradcam_maps(bundle.model, x[pos], bundle.config["cam_layer"], class_index=0)
    masks = []
    for i in pos:
        m = np.zeros((48, 48), bool)
        ci, cj = corners[i]
        m[ci:ci + 10, cj:cj + 10] = True
        masks.append(m)
    return roc_auc_score(table["square"], prob[:, 0]), pointing_game(list(cams), masks)["score"]


def test_multilabel_outputs_and_thresholds_round_trip(trained: Path, square_data: tuple[Path, list]) -> None:
    bundle = load_classifier(trained, unpackaged=True)
    cfg = json.loads((trained / "config.json").read_text())
    assert bundle.labels == ["square", "left_half"] and cfg["activation"] == "sigmoid"
    th = cfg["thresholds"]
    # <= 1: on this easy task a confident model's float32 sigmoid reaches exactly 1.0 for some positives
    assert set(th) == {"square", "left_half"} and all(0.0 < v <= 1.0 for v in th.values())
    # the stored threshold is the one that gives the target sensitivity on the validation patients
    manifest, _ = square_data
    table = pd.read_csv(manifest)
    val = table[table["patient_id"].isin(cfg["data"]["val_patients"])]
    x = load_tensors([manifest.parent / p for p in val["image"]], (48, 48), quiet=True)
    prob = bundle.probabilities(bundle.predict_logits(x))
    for j, name in enumerate(bundle.labels):
        y = val[name].to_numpy()
        if y.min() == y.max():
            continue
        positives = np.sort(prob[y == 1, j])[::-1]
        k = int(np.ceil(0.9 * len(positives)))
        assert th[name] == pytest.approx(positives[k - 1], rel=1e-5)
    # a second load gives the same outputs bit for bit
    again = load_classifier(trained, unpackaged=True)
    with pytest.raises(PackageError, match="medsight models package"):  # a plain folder is not run by default
        load_classifier(trained)
    np.testing.assert_array_equal(bundle.predict_logits(x), again.predict_logits(x))


def test_predict_cls_writes_decisions_and_heatmaps(trained: Path, square_data: tuple[Path, list],
                                                   tmp_path: Path) -> None:
    from medsight.cli.main import main

    from medsight.package import save_package

    manifest, _ = square_data
    images = [str(manifest.parent / f"img{i:03d}.nii.gz") for i in range(4)]
    out = tmp_path / "pred.csv"
    package = save_package(trained, tmp_path / "package", task="classification", name="squares")  # predict-cls
    main(["-q", "predict-cls", str(package.path), *images, str(out)])  # loads packages only; returns on success
    table = pd.read_csv(out)
    assert len(table) == 4
    th = load_classifier(trained, unpackaged=True).thresholds
    np.testing.assert_array_equal(table["decision_square"], (table["p_square"] >= th["square"]).astype(int))
    heat = np.load(table["gradcam_array_square"][1])
    assert heat.shape == (48, 48) and heat.max() <= 1.0 + 1e-6
    assert Path(table["gradcam_png_left_half"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_focal_weighted_frozen_training_records_its_choices(square_data: tuple[Path, list], tmp_path: Path) -> None:
    manifest, _ = square_data
    cfg = TrainConfig(backbone="resnet10-slim", input_size=(32, 32), epochs=1, batch_size=16, loss="focal",
                      weighted_sampling=True, mode="frozen", labels=["square"])
    train_classifier(manifest, tmp_path / "m", cfg, quiet=True)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    bundle = load_classifier(tmp_path / "m", unpackaged=True)
    assert config["training"]["loss"] == "focal" and config["training"]["weighted_sampling"] is True
    assert config["trainable_parameters"] == sum(p.numel() for p in bundle.model.head.parameters())
    assert config["task"] == "binary" and list(config["thresholds"]) == ["square"]


def test_evidence_map_backbone_learns_square_and_points_at_it(square_data: tuple[Path, list], tmp_path: Path,
                                                              make_squares) -> None:
    """The demo's fully convolutional backbone: same check as above, and its pooling survives save/load."""
    manifest, _ = square_data
    torch.set_num_threads(2)
    cfg = TrainConfig(**{**CFG, "backbone": "resnet10-slim-evidence", "cam_layer": None}, labels=["square"])
    train_classifier(manifest, tmp_path / "m", cfg, quiet=True)
    bundle = load_classifier(tmp_path / "m", unpackaged=True)
    assert bundle.config["cam_layer"] == "net.layer2" and bundle.model.evidence_sharpness == 4.0
    auc, pointing = _auc_and_pointing_on_new_squares(bundle, tmp_path, make_squares, seed=2)
    assert auc > 0.97 and pointing >= 0.9
    # the pooling is read from config.json, not assumed: a model stored with a hard maximum loads as one
    cfg_path = tmp_path / "m" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "evidence_sharpness": 0.0}))
    assert load_classifier(tmp_path / "m", unpackaged=True).model.evidence_sharpness == 0.0


def test_report_worst_cases_show_image_with_gradcam(trained: Path, square_data: tuple[Path, list],
                                                   tmp_path: Path) -> None:
    """The validation report's classifier worst cases carry a thumbnail (image + Grad-CAM), from an image column
    relative to the predictions table; without a classifier the note says so and a missing file is named."""
    from medsight.report.assemble import classification_results

    manifest, _ = square_data
    table = pd.read_csv(manifest).head(12)
    ds = tmp_path / "ds"
    ds.mkdir()
    pd.DataFrame({"case_id": [f"c{i}" for i in range(12)], "site": ["s1"] * 12}).to_csv(ds / "manifest.csv",
                                                                                       index=False)
    pred = pd.DataFrame({"case_id": [f"c{i}" for i in range(12)], "y_true": table["square"],
                         "prob": np.linspace(0.05, 0.95, 12), "image": table["image"]})
    pred.loc[1, "image"] = "missing.nii.gz"  # c1: label 1 at probability 0.13, among the worst
    model = {"name": "squares", "task": "classification", "hashes": {}, "versions": {}}
    from medsight.package import save_package

    pkg = save_package(trained, tmp_path / "pkg", task="classification", name="squares", register=False)
    res = classification_results(pred, ds, model, [], n_boot=50, classifier_dir=pkg.path, base=manifest.parent)
    worst = {w["case_id"]: w for w in res.worst_cases}
    assert len(worst) == 5
    shown = [w for w in worst.values() if w["thumbnail"]]
    assert shown and all(w["thumbnail"].startswith("data:image/png;base64,") for w in shown)
    assert all("Grad-CAM of 'square'" in w["note"] for w in shown)
    assert worst["c1"]["thumbnail"] is None and "missing.nii.gz not found" in worst["c1"]["note"]
    plain = classification_results(pred, ds, model, [], n_boot=50, base=manifest.parent)
    assert all("image only" in w["note"] for w in plain.worst_cases if w["thumbnail"])
