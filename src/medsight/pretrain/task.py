"""Self-supervised pretraining as a task on the engine: restoration (Models Genesis) or contrastive (SimCLR).

``restore`` trains the whole segmentation network (encoder and decoder) to undo Models Genesis corruptions of a
random patch (MSE); every tensor except the output heads transfers. ``contrastive`` trains the encoder path
(DynUNet's input block, down-sampling blocks and bottleneck) with a projection head on two augmented, overlapping
crops of the same volume (NT-Xent, the positives are the two views, the other 2B - 2 views the negatives); the
encoder transfers, the projection head is dropped. Every draw comes from the engine's per-epoch generator, so a
killed run resumes to the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsight.engine.task import Task
from medsight.errors import ConfigError
from medsight.nets.segmentation import build_model
from medsight.plan.plan import ConfigPlan
from medsight.pretrain.corrupt import corrupt
from medsight.segmentation.augment import augment
from medsight.segmentation.sampling import Sample, crop

METHODS = ("restore", "contrastive")
ENCODER_PARTS = ("input_block", "downsamples", "bottleneck")
PROJECTION_DIM = 64
TEMPERATURE = 0.2
VAL_BATCHES = 2


class EncoderPath(nn.Module):
    """The encoder path of a DynUNet (same parameter names) with a projection head for contrastive learning."""

    def __init__(self, net: nn.Module, width: int) -> None:
        super().__init__()
        missing = [p for p in ENCODER_PARTS if not hasattr(net, p)]
        if missing:
            raise ConfigError(f"contrastive pretraining needs a DynUNet-style encoder ({', '.join(ENCODER_PARTS)}); "
                              f"{type(net).__name__} has no {missing[0]}: use --method restore for this network")
        self.input_block, self.downsamples, self.bottleneck = net.input_block, net.downsamples, net.bottleneck
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                        nn.Linear(width, PROJECTION_DIM))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, *S) -> (N, D): global average of the bottleneck."""
        x = self.input_block(x)
        for block in self.downsamples:
            x = block(x)
        return self.bottleneck(x).flatten(2).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's loss: cross-entropy of each view's similarity row against its partner view."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    n = z1.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def main_output(out: Any) -> torch.Tensor:
    """The full-resolution output of a network that may stack deep-supervision heads in training mode."""
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


class PretrainTask(Task):
    """Pretrain the plan configuration's network on preprocessed unlabelled volumes."""

    def __init__(self, volumes: list[np.ndarray], cfg: ConfigPlan, in_channels: int, method: str, batch_size: int,
                 iterations: int, seed: int) -> None:
        if method not in METHODS:
            raise ConfigError(f"unknown pretraining method {method!r}; use {' or '.join(METHODS)}")
        if batch_size < 2 and method == "contrastive":
            raise ConfigError("contrastive pretraining needs --batch-size >= 2 (the other views are the negatives)")
        self.cfg, self.in_channels, self.method = cfg, in_channels, method
        self.bs, self.iterations = batch_size, iterations
        self.samples = [Sample(v, np.zeros(v.shape[1:], dtype=np.int8), {}) for v in volumes]
        self.val = [self._batch(np.random.default_rng([seed, 23, i])) for i in range(VAL_BATCHES)]

    # ---- the network ------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        out = self.in_channels * (2 * self.cfg.context_slices + 1)  # restore every input channel (2.5D: slices)
        net = build_model(self.cfg, self.in_channels, out)
        if self.method == "restore":
            return net
        return EncoderPath(net, self.cfg.filters[-1] if self.cfg.filters else 32)

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-5)

    # ---- data -------------------------------------------------------------------------------------------------
    def _crop(self, s: Sample, center: np.ndarray) -> np.ndarray:
        return crop(s, center, self.cfg.patch_size, self.cfg.spatial_dims, self.cfg.context_slices)[0]

    def _batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = [], []
        for _ in range(self.bs):
            s = self.samples[int(rng.integers(len(self.samples)))]
            center = np.array([int(rng.integers(n)) for n in s.label.shape])
            if self.method == "restore":
                x, y = corrupt(self._crop(s, center), rng)
            else:  # two overlapping crops (shifted by up to a quarter patch), each with its own augmentation
                shift = [int(rng.integers(-p // 4, p // 4 + 1)) for p in self.cfg.patch_size]
                other = center.copy()
                other[:len(shift)] += shift
                x = _view(self._crop(s, center), rng)
                y = _view(self._crop(s, np.clip(other, 0, np.asarray(s.label.shape) - 1)), rng)
            a.append(x)
            b.append(y)
        return torch.from_numpy(np.stack(a)), torch.from_numpy(np.stack(b))

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.iterations):
            yield self._batch(rng)

    def steps_per_epoch(self) -> int:
        return self.iterations

    # ---- objective --------------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        if self.method == "restore":
            return F.mse_loss(main_output(_squeeze_heads(model(x), x)), y)
        return nt_xent(model(x), model(y))

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """The same loss on fixed held-out draws (seeded once): falls as the pretext task is learnt."""
        dev = next(model.parameters()).device
        losses = [float(self.loss(model, (x.to(dev), y.to(dev)))) for x, y in self.val]
        return {"val_loss": float(np.mean(losses))}


def _view(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One augmented view: segmentation's spatial + intensity augmentation, plus a stronger intensity jitter."""
    img, _ = augment(patch, np.zeros(patch.shape[1:], dtype=np.int8), rng, p_spatial=0.5)
    img = img * rng.uniform(0.8, 1.2) + rng.normal(0, 0.2)
    return img.astype(np.float32)


def _squeeze_heads(out: Any, x: torch.Tensor) -> Any:
    """DynUNet in training mode stacks (N, heads, C, *S); keep the full-resolution output."""
    if isinstance(out, torch.Tensor) and out.dim() == x.dim() + 1:
        return out[:, 0]
    return out
