"""Versioned model store: weights + plan + model card + content hashes (see ``store.py``)."""

from __future__ import annotations

from medsight.registry.model_card import ModelCard
from medsight.registry.store import (ModelRecord, default_root, get_model, list_models, register_model,
                                     verify_model)

__all__ = ["ModelCard", "ModelRecord", "default_root", "get_model", "list_models", "register_model",
           "verify_model"]
