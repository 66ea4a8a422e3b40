"""The model package: one verified, registered unit per trained model (manifest, registry, model card)."""

from __future__ import annotations

from medsight.package.manifest import PackageError
from medsight.package.model_card import ModelCard
from medsight.package.package import Package, derive_package, load_package, save_package
from medsight.package.registry import ModelRecord, Registry

__all__ = ["ModelCard", "ModelRecord", "Package", "PackageError", "Registry", "derive_package", "load_package",
           "save_package"]
