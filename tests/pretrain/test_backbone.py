"""``pretrain --backbone`` -> ``train-cls --init``: the classifier starts from the pretrained backbone, the package
id is recorded, and a backbone the package does not fit is refused on one line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from medsight.cli.main import main
from medsight.nets.backbones import build_classifier
from medsight.package.encoder import apply_encoder, load_encoder_package
from medsight.package.package import load_package

_CLS = Path(__file__).resolve().parents[1] / "classification" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_medsight_cls_squares_pre", _CLS)
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("squares")
    manifest, _ = _mod.write_square_dataset(root, n=24, size=32, side=8)
    enc = root.parent / "enc"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSIGHT_HOME", str(root.parent / "home"))
        main(["-q", "pretrain", str(root), "-o", str(enc), "--backbone", "resnet10", "--input-size", "32,32",
              "--method", "contrastive", "--epochs", "1", "--iterations", "2", "--batch-size", "8"])
    return manifest, enc


def test_backbone_package_and_init(squares):
    _, enc = squares
    pkg, state, desc = load_encoder_package(enc)
    assert desc["network"] == "resnet10" and desc["parts"] == "backbone" and desc["data"]["volumes"] == 24
    assert state and all(k.startswith("net.") for k in state)
    torch.manual_seed(0)
    model, _ = build_classifier("resnet10", 2, 1, 1, (32, 32), 0.2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = apply_encoder(model, pkg, state, desc, network="resnet10")
    after = model.state_dict()
    assert record["package_id"] == pkg.id and record["tensors"] == len(state)
    changed = [k for k in state if not torch.equal(before[k], after[k])]
    assert len(changed) > len(state) // 2  # the weights (not only running stats) now come from the package
    for k in state:
        assert torch.equal(after[k], state[k]), k
    head = [k for k in after if k.startswith("head.")]
    assert head and all(torch.equal(before[k], after[k]) for k in head)


def test_train_cls_init_records_the_package_and_refuses_a_misfit(squares, tmp_path, monkeypatch, capsys):
    manifest, enc = squares
    monkeypatch.setenv("MEDSIGHT_HOME", str(tmp_path / "home"))
    out = tmp_path / "cls"
    common = [str(manifest), "--label", "square", "--input-size", "32,32", "--epochs", "1", "--batch-size", "8",
              "--init", str(enc)]
    main(["-q", "train-cls", *common, "--out", str(out), "--backbone", "resnet10"])
    capsys.readouterr()
    pkg = load_package(out)
    enc_id = load_package(enc).id
    assert pkg.extra["init"][0]["package_id"] == enc_id
    assert json.loads((out / "config.json").read_text())["initial_encoder"]["package_id"] == enc_id
    with pytest.raises(SystemExit) as bad:
        main(["-q", "train-cls", *common, "--out", str(tmp_path / "cls2"), "--backbone", "resnet18"])
    err = capsys.readouterr().err
    assert bad.value.code == 2 and err.count("\n") == 1
    assert "pretrained for network 'resnet10'" in err
