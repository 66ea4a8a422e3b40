"""Classification losses, registered as plug-ins (group ``medsight.losses``): one sigmoid logit per label for
binary and multi-label tasks, softmax over classes for multiclass (ordinal grades)."""

from __future__ import annotations

from typing import Any

import torch
from monai.losses import FocalLoss
from torch import nn


def bce(task: str = "binary", **_: Any) -> nn.Module:
    """Binary cross-entropy on logits; cross-entropy for a multiclass task."""
    return nn.CrossEntropyLoss() if task == "multiclass" else nn.BCEWithLogitsLoss()


def focal(task: str = "binary", gamma: float = 2.0, **_: Any) -> nn.Module:
    """Focal loss (Lin et al. 2017): sigmoid per label, or softmax over classes for a multiclass task."""
    if task == "multiclass":
        loss = FocalLoss(gamma=gamma, use_softmax=True, to_onehot_y=True)
        return _Wrapped(lambda z, y: loss(z, y[:, None]))
    return FocalLoss(gamma=gamma)


class _Wrapped(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.fn(z, y)
