"""Monte Carlo dropout: keep dropout sampling at inference so that repeated passes give a predictive distribution.

Why: the spread of N stochastic passes approximates the model's epistemic uncertainty (Gal & Ghahramani, 2016)
at no training cost. Only dropout layers are switched to training mode; batch-norm keeps its running statistics,
otherwise the "samples" would differ because of batch composition rather than weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from medsight.errors import ConfigError

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """All dropout modules of the model (functional dropout calls cannot be switched and are not found)."""
    return [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES)]


@contextlib.contextmanager
def mc_dropout(model: nn.Module, p: float | None = None) -> Iterator[nn.Module]:
    """Model in eval mode with only its dropout layers sampling; restores every module's mode (and p) on exit.

    ``p`` overrides the dropout probability for the duration (useful when the model was trained with p=0).
    """
    layers = dropout_layers(model)
    if not layers:
        raise ConfigError("the model has no dropout layers, so MC dropout cannot sample; use an ensemble instead")
    modes = {m: m.training for m in model.modules()}
    old_p = {m: m.p for m in layers}
    try:
        model.eval()
        for m in layers:
            m.train()
            if p is not None:
                m.p = float(p)
        yield model
    finally:
        for m, training in modes.items():
            m.train(training)
        for m, value in old_p.items():
            m.p = value


@torch.no_grad()
def mc_dropout_predict(model: nn.Module, x: torch.Tensor, n_samples: int = 20, *, p: float | None = None,
                       seed: int | None = 0, transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       ) -> torch.Tensor:
    """Stack of ``n_samples`` stochastic outputs, shape ``(n_samples, *output.shape)``.

    ``transform`` maps raw outputs to probabilities (e.g. ``lambda z: z.softmax(1)``); ``seed`` makes the
    dropout masks reproducible without touching the global RNG.
    """
    if n_samples < 1:
        raise ConfigError(f"n_samples must be at least 1, got {n_samples}")
    devices = [x.device.type] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with mc_dropout(model, p):
            outs = []
            for _ in range(n_samples):
                y = model(x)
                y = y[0] if isinstance(y, (tuple, list)) else y
                outs.append(transform(y) if transform is not None else y)
    return torch.stack(outs)
