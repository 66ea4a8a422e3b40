"""Save a trained MIL model folder as a model package (hashed, registered) when the package layer is present."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def package_model(model_dir: Path, name: str) -> str:
    """Package ``model_dir`` with ``save_package`` (task ``pathology-mil``); a sentence saying where it went."""
    try:
        from medsight.package.package import save_package
    except ImportError:
        return f"model folder {model_dir} (plain folder: model packages are not available in this build)"
    pkg = save_package(model_dir, model_dir.parent / f"{model_dir.name}-package", task="pathology-mil", name=name)
    return f"model package {pkg.id} at {pkg.path}"
