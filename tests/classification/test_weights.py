"""--weights: checkpoints made for the backbone load (incl. EfficientNet-PyTorch key style with an RGB stem);
anything else is a clear ConfigError naming the layers, also through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.networks import nets

from medsight.nets.backbones import LITE0_BLOCKS, build_classifier
from medsight.nets.weights import load_backbone_weights, set_trainable
from medsight.errors import ConfigError


def test_mismatched_backbone_is_a_clear_error(tmp_path: Path) -> None:
    other, _ = build_classifier("resnet18-slim", 2, 1, 1, (32, 32))
    ckpt = tmp_path / "r18.pt"
    torch.save(other.state_dict(), ckpt)
    model, _ = build_classifier("resnet10-slim", 2, 1, 1, (32, 32))
    with pytest.raises(ConfigError, match=r"r18.pt: weights do not match the backbone: .*unexpected layer\(s\) in "
                                          r"the file, e.g. layer1.1.*--backbone"):
        load_backbone_weights(model, ckpt)


def test_shape_mismatch_names_the_layer(tmp_path: Path) -> None:
    model, _ = build_classifier("resnet10-slim", 2, 1, 1, (32, 32))
    state = {k: v for k, v in model.net.state_dict().items()}
    state["layer2.0.conv1.weight"] = torch.zeros(5, 5, 3, 3)
    ckpt = tmp_path / "bad.pt"
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises(ConfigError, match=r"shape differs for layer2.0.conv1.weight \(file \(5, 5, 3, 3\)"):
        load_backbone_weights(model, ckpt)


def test_efficientnet_pytorch_style_checkpoint_loads_with_rgb_stem(tmp_path: Path) -> None:
    """The EfficientNet-Lite0 ImageNet file uses these key names (_conv_stem, _blocks.N, _fc) and 3 channels."""
    torch.manual_seed(0)
    source = nets.EfficientNet(LITE0_BLOCKS, spatial_dims=2, in_channels=3, num_classes=1000)
    # EfficientNet-PyTorch numbering: blocks 0..15 flat, no num_batches_tracked
    nested = sorted({".".join(k.split(".")[:3]) for k in source.state_dict() if k.startswith("_blocks.")},
                    key=lambda p: (int(p.split(".")[1]), int(p.split(".")[2])))
    flat_of = {p: f"_blocks.{i}" for i, p in enumerate(nested)}
    src = {}
    for k, v in source.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        prefix = ".".join(k.split(".")[:3])
        src[flat_of[prefix] + k[len(prefix):] if prefix in flat_of else k] = v
    assert len(nested) == 16 and "_blocks.15._project_conv.weight" in src
    ckpt = tmp_path / "efficientnet-lite0.pth"
    torch.save(src, ckpt)
    model, _ = build_classifier("efficientnet-lite0", 2, 1, 2, (64, 64))
    counts = load_backbone_weights(model, ckpt)
    own = model.net.state_dict()
    assert counts["loaded"] == len([k for k in src if not k.startswith("_fc.")])
    torch.testing.assert_close(own["_conv_stem.weight"], src["_conv_stem.weight"].sum(1, keepdim=True))
    # flat block 7 sits at its stage-grouped place in MONAI (nested[7]) and was loaded there
    torch.testing.assert_close(own[nested[7] + "._project_conv.weight"], src["_blocks.7._project_conv.weight"])
    assert model.head.out_features == 2  # a fresh head for our labels
    n = set_trainable(model, "frozen")
    assert n == sum(p.numel() for p in model.head.parameters())


def test_cli_train_with_mismatched_weights_exits_2(tmp_path: Path, square_data, capsys) -> None:
    from medsight.cli.main import main

    manifest, _ = square_data
    other, _ = build_classifier("resnet18-slim", 2, 1, 1, (48, 48))
    ckpt = tmp_path / "r18.pt"
    torch.save(other.state_dict(), ckpt)
    with pytest.raises(SystemExit) as code:
        main(["-q", "train-cls", str(manifest), "--out", str(tmp_path / "m"), "--backbone", "resnet10-slim",
              "--input-size", "48,48", "--epochs", "1", "--weights", str(ckpt)])
    assert code.value.code == 2
    err = capsys.readouterr().err
    assert "weights do not match the backbone" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "model.pt").exists()
