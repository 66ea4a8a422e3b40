"""Contrastive pretraining of a classification backbone (``medsight pretrain --backbone NAME``) for ``train-cls``.

The images are read and normalised by classification's own loader (resize to the input size, robust scaling),
so the backbone sees in pretraining exactly what ``train-cls`` will give it. Two views of each image come from
classification's augmentation (flips, shifts, contrast jitter; torch's generator, seeded per epoch by the engine)
plus Gaussian noise; a projection MLP on the backbone's pooled features is trained with NT-Xent and dropped.
The package carries the backbone (``net.*``) under the names ``build_classifier`` gives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.classification.augment import augment
from medsight.engine.task import Task
from medsight.errors import ConfigError
from medsight.nets.backbones import build_classifier
from medsight.pretrain.task import PROJECTION_DIM, nt_xent

NOISE = 0.1


class ProjectedBackbone(nn.Module):
    """A classifier built as ``train-cls`` builds it, its pooled features through a projection MLP."""

    def __init__(self, backbone: str, dims: int, size: tuple[int, ...]) -> None:
        super().__init__()
        self.classifier, _ = build_classifier(backbone, dims, 1, 2, size, 0.0)
        with torch.no_grad():
            width = int(self.classifier.forward_with_features(torch.zeros(2, 1, *size))[1].shape[1])
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                        nn.Linear(width, PROJECTION_DIM))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.classifier.forward_with_features(x)[1])


class BackbonePretrainTask(Task):
    """SimCLR on images held in memory as an (N, 1, *size) tensor."""

    def __init__(self, x: torch.Tensor, backbone: str, batch_size: int, iterations: int, seed: int) -> None:
        if len(x) < 2 or batch_size < 2:
            raise ConfigError("contrastive pretraining needs at least 2 images and --batch-size >= 2")
        self.x, self.backbone, self.bs, self.iterations = x, backbone, min(batch_size, len(x)), iterations
        self.dims, self.size = x.ndim - 2, tuple(int(s) for s in x.shape[2:])
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(x), generator=g)[: self.bs]
        state = torch.get_rng_state()
        torch.manual_seed(seed + 1)
        self.val = (self._view(x[idx]), self._view(x[idx]))
        torch.set_rng_state(state)

    def build_model(self) -> nn.Module:
        return ProjectedBackbone(self.backbone, self.dims, self.size)

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)

    def _view(self, xb: torch.Tensor) -> torch.Tensor:
        v, _ = augment(xb)
        return v + NOISE * torch.randn_like(v)

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.iterations):
            idx = torch.from_numpy(rng.choice(len(self.x), self.bs, replace=False))
            yield self._view(self.x[idx]), self._view(self.x[idx])

    def steps_per_epoch(self) -> int:
        return self.iterations

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nt_xent(model(batch[0]), model(batch[1]))

    def validate(self, model: nn.Module) -> dict[str, Any]:
        return {"val_loss": float(self.loss(model, self.val))}


def backbone_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's tensors named as in ``build_classifier``'s model (``net.*``); heads and projection dropped."""
    inner = getattr(model, "module", model).classifier
    return {k: v.detach().cpu().clone() for k, v in inner.state_dict().items() if k.startswith("net.")}
