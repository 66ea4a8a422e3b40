"""ONNX export: onnxruntime reproduces PyTorch within 1e-4 on real inputs (the square images, a toy MRI-like
volume), the metadata JSON carries the preprocessing and package id, and a non-model package is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medsight.classification.model_io import load_classifier
from medsight.package.export import max_difference, onnx_session

from .conftest import run_cli


def test_classifier_export_matches_torch_on_real_images(cls_package: Path, square_manifest: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "squares.onnx"
    assert run_cli("export", "squares", out, "--int8") == 0
    meta = json.loads((tmp_path / "squares.json").read_text())
    manifest = json.loads((cls_package / "manifest.json").read_text())
    assert meta["package_id"] == manifest["id"] and meta["input_size"] == [32, 32]
    assert meta["thresholds"] == json.loads((cls_package / "config.json").read_text())["thresholds"]
    bundle = load_classifier(cls_package)
    table = pd.read_csv(square_manifest)
    from medsight.io import read_image

    x = torch.stack([bundle.preprocess(read_image(square_manifest.parent / p)) for p in table["image"][:12]])
    assert max_difference(bundle.model, out, [x]) < 1e-4
    # the exported graph with the metadata's recipe gives predict-cls's probabilities
    logits = onnx_session(out).run(None, {"input": x.numpy()})[0]
    prob = 1 / (1 + np.exp(-logits))
    ref = bundle.probabilities(bundle.predict_logits(x))
    np.testing.assert_allclose(prob, ref, atol=1e-5)
    q = onnx_session(tmp_path / "squares.int8.onnx").run(None, {"input": x.numpy()})[0]
    assert q.shape == logits.shape and np.isfinite(q).all()


@pytest.mark.slow
def test_segmentation_export_matches_torch_on_a_real_volume(tmp_path: Path) -> None:
    from medsight.data.preprocess import preprocess_image
    from medsight.io import read_image
    from medsight.segmentation.ensemble import load_models
    from medsight.synthetic.toy import make_toy_dataset

    root = make_toy_dataset(tmp_path / "Dataset001_Toy", n_cases=10, shape=(24, 20, 16))
    assert run_cli("-q", "plan", root, "--memory-gb", "0.05", "--filters", "4", "--epochs", "1",
                   "--iterations", "2") == 0
    assert run_cli("-q", "train", root, "--fold", "0", "--model-dir", tmp_path / "seg", "--name", "toyseg") == 0
    from medsight.audit.log import AuditLog

    pkg_id = json.loads((tmp_path / "seg" / "manifest.json").read_text())["id"]
    train = [r for r in AuditLog().records() if r.event == "train"][-1].details
    assert train["package_id"] == pkg_id and train["exit_status"] == 0 and train["inputs"][0]["files"] > 10
    assert train["outputs"][0]["path"] == str(tmp_path / "seg") and train["energy"]["kwh"] > 0
    assert run_cli("export", "toyseg", tmp_path / "seg.onnx") == 0
    meta = json.loads((tmp_path / "seg.json").read_text())
    plan, cfg, nets = load_models(tmp_path / "seg")
    images = [read_image(root / "imagesTr" / f"toy_000_{c:04d}.nii.gz") for c in range(len(plan.channels))]
    pre = preprocess_image(images if len(images) > 1 else images[0], plan, cfg)
    img = torch.from_numpy(pre.image)[None].float()
    patch = [min(p, s) for p, s in zip(meta["patch_size"], img.shape[2:])]
    x = torch.zeros(1, img.shape[1], *meta["patch_size"])
    x[(slice(None), slice(None), *[slice(0, p) for p in patch])] = img[(slice(None), slice(None),
                                                                         *[slice(0, p) for p in patch])]
    assert max_difference(nets[0], tmp_path / "seg.onnx", [x]) < 1e-4


def test_export_refuses_a_changed_package(cls_package: Path, tmp_path: Path, capsys) -> None:
    (cls_package / "model.pt").write_bytes((cls_package / "model.pt").read_bytes()[:-1] + b"\x02")
    assert run_cli("export", cls_package, tmp_path / "x.onnx") == 2
    assert "model.pt" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
