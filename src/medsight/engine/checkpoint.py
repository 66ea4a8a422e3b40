"""Atomic checkpoints: a killed run never leaves a half-written file, and resuming restores every state."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from medsight.errors import CorruptFileError
from medsight.files import atomic_write_bytes


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Serialise to memory first, then write-fsync-rename, so the previous checkpoint survives a crash."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CorruptFileError(f"checkpoint cannot be read ({type(exc).__name__}); delete it to restart the fold",
                               path) from exc
