"""Mirroring test-time augmentation: average the softmax over every combination of flips of the chosen axes."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch


def mirror_combinations(axes: list[int] | tuple[int, ...]) -> list[tuple[int, ...]]:
    """All subsets of ``axes`` (spatial axis numbers), the empty one (no flip) first."""
    out: list[tuple[int, ...]] = []
    for r in range(len(axes) + 1):
        out.extend(itertools.combinations(axes, r))
    return out


def mirrored_softmax(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     axes: list[int] | tuple[int, ...] = ()) -> torch.Tensor:
    """Mean softmax over flips of (B, C, *S) input along spatial ``axes``; each output is flipped back."""
    combos = mirror_combinations(axes)
    total = None
    for combo in combos:
        dims = [a + 2 for a in combo]
        xi = torch.flip(x, dims) if dims else x
        out = model(xi)
        if isinstance(out, (list, tuple)):
            out = out[0]
        p = torch.softmax(out, 1)
        if dims:
            p = torch.flip(p, dims)
        total = p if total is None else total + p
    return total / len(combos)
