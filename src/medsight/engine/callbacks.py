"""Callbacks: what differs between runs without a second loop. The engine's own logs are callbacks too.

A callback sees the run at four points (fit start, epoch start, epoch end, fit end). Only rank 0 of a
distributed run calls them, so files are written once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torch import nn


class Callback:
    """Override the hooks you need; every hook receives the engine's state dict (read it, do not replace it)."""

    def on_fit_start(self, state: dict[str, Any]) -> None:
        pass

    def on_epoch_start(self, epoch: int, state: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, record: dict[str, Any], model: nn.Module, state: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, state: dict[str, Any]) -> None:
        pass


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a record (lists and NaN are left out of plots and bars)."""
    out = {}
    for k, v in record.items():
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


class JsonlLog(Callback):
    """One JSON line per epoch, appended (a resumed run continues the same file)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_epoch_end(self, record: dict[str, Any], model: nn.Module, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class TensorBoardLog(Callback):
    """Every scalar of the record under its own tag; silently absent when tensorboard is not installed."""

    TAGS = {"loss": "loss/train", "val_mean_dice": "dice/val_mean"}

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.writer = None

    def on_fit_start(self, state: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # the JSON log still has everything
            return
        self.writer = SummaryWriter(str(self.path))

    def on_epoch_end(self, record: dict[str, Any], model: nn.Module, state: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in scalars(record).items():
            self.writer.add_scalar(self.TAGS.get(k, k), v, record["epoch"])
        self.writer.flush()

    def on_fit_end(self, state: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar(Callback):
    """A tqdm bar over epochs showing the loss and up to three validation scalars."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def on_fit_start(self, state: dict[str, Any]) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=state["epochs"], initial=state["start_epoch"], desc=self.desc, unit="epoch",
                        leave=False)

    def on_epoch_end(self, record: dict[str, Any], model: nn.Module, state: dict[str, Any]) -> None:
        if self.bar is None:
            return
        shown = {k: v for k, v in scalars(record).items() if k not in ("lr", "seconds")}
        self.bar.update(1)
        self.bar.set_postfix({k: f"{v:.3f}" for k, v in list(shown.items())[:4]})

    def on_fit_end(self, state: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
