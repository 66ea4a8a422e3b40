"""Versioned model store: weights + plan + model card + content hashes (see ``store.py``)."""

from __future__ import annotations

from medsight.registry.model_card import ModelCard

__all__ = ["ModelCard"]
