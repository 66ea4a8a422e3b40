"""One seed fixes everything: Python, NumPy and torch, and per-epoch streams derived from (seed, fold, epoch)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def epoch_rng(seed: int, fold: int | str, epoch: int) -> np.random.Generator:
    """The NumPy generator for one epoch's batches and augmentation: independent of any earlier epoch."""
    return np.random.default_rng([seed, _fold_no(fold), epoch])


def epoch_torch_seed(seed: int, fold: int | str, epoch: int) -> int:
    return int(np.random.default_rng([seed, _fold_no(fold), epoch, 1]).integers(2**62))


def _fold_no(fold: int | str) -> int:
    return 99 if fold == "all" else int(fold)
