"""Save a trained MIL model folder as a model package (hashed, registered), and verify one before use."""

from __future__ import annotations

from pathlib import Path

from medsight.package.package import load_package, save_package


def package_model(model_dir: Path, name: str) -> str:
    """Package ``model_dir`` with ``save_package`` (task ``mil``); a sentence saying where it went."""
    pkg = save_package(model_dir, model_dir.parent / f"{model_dir.name}-package", task="mil", name=name)
    return f"model package {pkg.id} at {pkg.path}"


def verified_model_dir(model_dir: Path) -> Path:
    """A package's folder after every file hash is checked (PackageError names a changed file); a plain model
    folder as it is."""
    if not (model_dir / "manifest.json").exists():
        return model_dir
    return Path(load_package(model_dir).path)
