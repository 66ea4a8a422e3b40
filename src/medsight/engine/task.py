"""What a task tells the engine: its network, optimiser, batches, loss and validation; the engine does the rest.

A task is a thin definition (segmentation, classification, slide-level MIL, the toy reference task). Everything
the tasks share (seeding, the step loop, checkpoints, resume, logs, time budget, best-epoch selection, DDP) lives
in ``engine/loop.py`` and is written once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class Task:
    """Base class of a training task. Subclasses implement the five methods marked required.

    ``selection`` names the validation metric that picks the kept epoch and whether larger or smaller is better
    (``("val_auc_mean", "max")``); ``None`` keeps the last epoch.
    """

    selection: tuple[str, str] | None = None

    def build_model(self) -> nn.Module:  # required
        """A freshly initialised network (the engine has seeded torch before calling this)."""
        raise NotImplementedError

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:  # required
        raise NotImplementedError

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:  # required
        """The batches of one epoch, every random draw taken from ``rng`` (or torch's global stream, which the
        engine seeds per epoch), so that epoch k is the same whether or not the run was resumed before it."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:  # required
        raise NotImplementedError

    def validate(self, model: nn.Module) -> dict[str, Any]:  # required (return {} when there is nothing)
        """Validation metrics after an epoch (floats; lists are logged but not plotted). Model is in eval mode."""
        raise NotImplementedError

    # ---- optional hooks -------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load or preprocess the data; called once, only when there is at least one epoch left to train."""

    def steps_per_epoch(self) -> int | None:
        """Optimiser steps per epoch, needed by per-step schedules (one-cycle); None when unknown."""
        return None

    def train_mode(self, model: nn.Module) -> None:
        """Put the model in training mode (a frozen trunk may keep its normalisation statistics in eval)."""
        model.train()

    def batch_size(self, batch: Any) -> int:
        """Examples in a batch: weights the epoch's mean loss and counts examples for federated averaging."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(len(first))

    def shard(self, batch: Any, rank: int, world: int) -> Any:
        """This process's share of a global batch under DDP: rows ``rank::world`` of every tensor."""
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.shard(b, rank, world) for b in batch)
        if isinstance(batch, torch.Tensor):
            return batch[rank::world]
        return batch


@dataclass
class EngineConfig:
    """How to run a task: the same fields for every task.

    ``identity`` holds what must match for a checkpoint to be resumed (plan hash, data hash...); seed and epochs
    are always part of it. ``out_dir`` None trains in memory (no checkpoint, no logs).
    """

    epochs: int
    seed: int = 0
    fold: int | str = 0
    max_seconds: float | None = None  # training seconds after Task.setup(); stops after the epoch crossing it
    lr_schedule: str = "constant"  # constant | poly (per epoch, nnU-Net) | onecycle (per step)
    lr: float | None = None  # base (poly) or peak (onecycle) rate; default: the optimiser's
    onecycle_pct: float = 0.3
    grad_clip: float | None = None
    out_dir: Path | None = None
    quiet: bool = False
    name: str = "train"  # shown on the progress bar and in messages
    identity: dict[str, Any] = field(default_factory=dict)
    checkpoint_name: str = "checkpoint.pt"
    log_name: str = "log.jsonl"
    tensorboard: bool = True
    restore_best: bool = True
    energy: bool = True
    callbacks: list[Any] = field(default_factory=list)


@dataclass
class FitResult:
    model: nn.Module
    history: list[dict[str, Any]]
    best_epoch: int | None  # 0-based epoch whose weights the model holds (None: the last)
    seconds: float
    stopped_by_time_budget: bool
    start_epoch: int = 0  # first epoch trained in this run (> 0 after a resume)
    energy: dict[str, Any] | None = None


def out_path(config: EngineConfig, name: str) -> Path | None:
    return None if config.out_dir is None else Path(config.out_dir) / name
