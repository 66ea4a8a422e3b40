"""Every named backbone builds in 2D, gives one logit per output and has the Grad-CAM layer it names."""

from __future__ import annotations

import pytest
import torch

import torch.nn.functional as F

from medsight.nets.backbones import BACKBONES, build_classifier, get_layer
from medsight.explain.gradcam import gradcam_maps


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_builds_with_head_and_cam_layer(name: str) -> None:
    model, cam_layer = build_classifier(name, 2, 1, 3, (64, 64))
    model.eval()
    with torch.no_grad():
        logits, features = model.forward_with_features(torch.zeros(2, 1, 64, 64))
    assert logits.shape == (2, 3) and features.shape[0] == 2
    width = model.head.in_channels if model.evidence_map else model.head.in_features
    assert features.shape[1] == width
    get_layer(model, cam_layer)


def test_fine_resnet_keeps_twice_the_resolution() -> None:
    seen = {}
    for name in ("resnet10-slim", "resnet10-slim-fine"):
        model, _ = build_classifier(name, 2, 1, 1, (64, 64))
        hook = get_layer(model, "net.layer1").register_forward_hook(lambda m, i, o, n=name: seen.__setitem__(n, o))
        with torch.no_grad():
            model(torch.zeros(1, 1, 64, 64))
        hook.remove()
    assert seen["resnet10-slim"].shape[-1] == 16 and seen["resnet10-slim-fine"].shape[-1] == 32


@pytest.mark.parametrize("sharpness", [0.0, 4.0])
def test_evidence_model_logit_is_map_maximum_and_gradcam_is_the_map(sharpness: float) -> None:
    """Worked by hand: with logit = pool(conv1x1(A)) and pooling weights that sum to one over positions,
    Grad-CAM's channel weights are w_k / (h*w), so its map is ReLU(evidence - bias), upsampled and scaled."""
    torch.manual_seed(0)
    model, cam_layer = build_classifier("resnet10-slim-evidence", 2, 1, 1, (64, 64))
    model.evidence_sharpness = sharpness
    model.eval()
    x = torch.randn(3, 1, 64, 64)
    with torch.no_grad():
        fmap = model.net(x)
        evidence = model.head(fmap)  # (3, 1, 16, 16): 1/4 of the input
        logits = model(x)
    assert evidence.shape[-2:] == (16, 16)
    e = evidence.flatten(1).double()
    if sharpness == 0:
        assert torch.allclose(logits[:, 0].double(), e.amax(1), atol=1e-6)
    else:  # (1/r) log(mean(exp(r e))), written out
        assert torch.allclose(logits[:, 0].double(), torch.log(torch.exp(sharpness * e).mean(1)) / sharpness,
                              atol=1e-5)
    expected = F.interpolate(torch.relu(evidence - model.head.bias.view(1, -1, 1, 1)), size=(64, 64),
                             mode="bilinear", align_corners=False)[:, 0]
    flat = expected.flatten(1)
    expected = ((flat - flat.min(1, keepdim=True).values)
                / (flat.max(1, keepdim=True).values - flat.min(1, keepdim=True).values)).reshape(3, 64, 64)
    cams = gradcam_maps(model, x, cam_layer)
    assert cam_layer == "net.layer2"
    assert torch.allclose(torch.as_tensor(cams), expected, atol=1e-4)


def test_validation_pointing_reads_the_evidence_maximum() -> None:
    """A stand-in evidence model whose map is its input: the peak pixel decides a hit, counted on images with a
    finding only (label 1 and a non-empty mask)."""
    from torch import nn

    from medsight.classification.localisation import val_pointing as _val_pointing

    model = nn.Module()
    model.net = nn.Identity()
    model.head = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        model.head.weight.fill_(1.0)
        model.head.bias.zero_()
    x = torch.zeros(4, 1, 16, 16)
    masks = torch.zeros(4, 1, 16, 16)
    for i, (peak, box) in enumerate((((3, 3), (2, 5)), ((10, 10), (2, 5)), ((12, 4), (11, 14)), ((8, 8), (7, 9)))):
        x[i, 0, peak[0], peak[1]] = 5.0
        masks[i, 0, box[0]:box[1], box[0]:box[1]] = 1.0
    y = torch.tensor([[1.0], [1.0], [1.0], [0.0]])  # the last image is negative: not counted
    # image 0 hits (peak inside its box), 1 misses, 2 misses (row 12 inside, column 4 outside)
    assert _val_pointing(model, x, y, masks) == pytest.approx(1 / 3)


def test_unknown_backbone_stops_training_before_any_data_is_read(tmp_path) -> None:
    from medsight.classification.train import TrainConfig, train_classifier
    from medsight.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backbone 'resnet10-evidenc'.*resnet10-evidence"):
        train_classifier(tmp_path / "no-such-manifest.csv", tmp_path / "m", TrainConfig(backbone="resnet10-evidenc"))
    assert not (tmp_path / "m").exists()
