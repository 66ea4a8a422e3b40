"""EfficientNets trained for a few dozen steps work in eval mode (the mode of predict and of validation) as in training.

As MONAI builds them (BatchNorm momentum 0.01, depthwise convolutions initialised ~sqrt(channels) too small), a
Lite0 trained 30 steps gave one output for every image in eval mode (AUC 0.475 against 0.928 in train mode; the
contrastive pretraining's validation loss was exactly ln(2B - 1)). Measured on this test's task: momentum 0.1
alone 0.446, the depthwise initialisation alone 0.588, both 0.854 against 0.860 in train mode
(nets/backbones.py)."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

from medsight.nets.backbones import EFFICIENTNET_NORM, build_classifier


def _mean_offset_images(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images whose class is their mean intensity (+-0.7): learnt in a few steps in train mode."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 32, 32, generator=g) + 0.7 * (2 * y - 1).float().view(-1, 1, 1, 1)
    return x, y


def _briefly_trained(steps: int = 30) -> torch.nn.Module:
    torch.manual_seed(0)
    x, y = _mean_offset_images()
    model, _ = build_classifier("efficientnet-lite0", 2, 1, 1, (32, 32), 0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (16,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]).squeeze(1), y[idx].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def test_lite0_trained_30_steps_scores_alike_in_eval_and_train_mode() -> None:
    model = _briefly_trained()
    x, y = _mean_offset_images(seed=2)  # fresh images of the same two classes
    with torch.no_grad():
        model.train()  # the reference: BatchNorm on these images' own statistics
        train_auc = roc_auc_score(y.numpy(), model(x).squeeze(1).numpy())
        model.eval()
        scores = model(x).squeeze(1)
    eval_auc = roc_auc_score(y.numpy(), scores.numpy())
    assert float(scores.std()) > 1e-2  # as MONAI builds it: 4e-9, one score for every image
    assert train_auc >= 0.8 and eval_auc >= 0.8 and abs(eval_auc - train_auc) <= 0.05, (train_auc, eval_auc)


def test_depthwise_outputs_of_a_fresh_lite0_are_above_batchnorm_eps() -> None:
    """Reference: TensorFlow's EfficientNet initialises a depthwise kernel with fan-out k x k, which keeps the
    variance of its output near its input's; MONAI's init made it 1e-4-3e-2, under eps = 1e-3."""
    torch.manual_seed(0)
    model, _ = build_classifier("efficientnet-lite0", 2, 1, 1, (64, 64))
    variances = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
            m.register_forward_hook(lambda _m, _i, out: variances.append(float(out.var(dim=(0, 2, 3)).mean())))
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 64, 64))
    assert len(variances) == 16 and min(variances) > 0.05, variances


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-b0"])
def test_every_efficientnet_batchnorm_uses_torch_momentum(name: str) -> None:
    model, _ = build_classifier(name, 2, 1, 1, (32, 32))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and {m.momentum for m in bns} == {EFFICIENTNET_NORM[1]["momentum"]} == {0.1}
