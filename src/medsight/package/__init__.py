"""The model package: manifest-hashed model folders, the registry of packages, and model cards."""

from __future__ import annotations

from medsight.package.model_card import ModelCard
from medsight.package.registry import (ModelRecord, default_root, get_model, list_models, register_model,
                                     verify_model)

__all__ = ["ModelCard", "ModelRecord", "default_root", "get_model", "list_models", "register_model",
           "verify_model"]
