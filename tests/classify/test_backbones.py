"""Every named backbone builds in 2D, gives one logit per output and has the Grad-CAM layer it names."""

from __future__ import annotations

import pytest
import torch

from medsight.classify.backbones import BACKBONES, build_classifier, get_layer


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_builds_with_head_and_cam_layer(name: str) -> None:
    model, cam_layer = build_classifier(name, 2, 1, 3, (64, 64))
    model.eval()
    with torch.no_grad():
        logits, features = model.forward_with_features(torch.zeros(2, 1, 64, 64))
    assert logits.shape == (2, 3) and features.shape[0] == 2
    assert features.shape[1] == model.head.in_features
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
