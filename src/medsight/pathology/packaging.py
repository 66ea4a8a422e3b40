"""A trained MIL model as a model package (hashed, registered), and the one way to load one before use.

``train_mil_package`` trains into a staging folder and saves the package at the folder the user named (the one
``predict-mil`` reads, as docs/pathology.md says); ``mil_package`` verifies a package (folder or registered
NAME[@VERSION]) and refuses a plain folder: a model whose ``calibration.json`` or ``referral.json`` nobody hashed
would change its decisions silently.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from medsight.files import temp_prefix
from medsight.package.manifest import MANIFEST, PackageError
from medsight.package.package import Package, load_package, save_package


def train_mil_package(labels_csv: str | Path | None, features_dir: str | Path | None, out_dir: str | Path,
                      model_name: str, name: str, **train_args: Any) -> tuple[dict[str, Any], Package]:
    """``train_mil`` into a staging folder beside ``out_dir``, then ``save_package`` (task ``mil``) at ``out_dir``."""
    from medsight.pathology.mil_train import train_mil

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(out_dir, "train-"), dir=out_dir.parent))
    try:
        config = train_mil(labels_csv, features_dir, work, model_name, **train_args)
        pkg = save_package(work, out_dir, task="mil", name=name,
                           extra={"metrics": {"val_auc": config["validation"]["auc"]}, "model": model_name,
                                  **({"init": [config["init"]]} if config.get("init") else {})})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return config, pkg


def mil_package(model: str | Path | Package, allow_retired: bool = False) -> Package:
    """A verified MIL package; a plain model folder is refused with the command that packages it."""
    if isinstance(model, Package):
        pkg = model
    else:
        if Path(model).is_dir() and not (Path(model) / MANIFEST).is_file():
            raise PackageError("not a model package (no manifest.json): an unverified MIL model is not run; package "
                               f"it with `medsight models package {model} PACKAGE_DIR --task mil --name NAME`", model)
        pkg = load_package(model, allow_retired=allow_retired)
    if pkg.task != "mil":
        raise PackageError(f"package {pkg.label} is a {pkg.task} model, not a slide-level MIL model", pkg.path)
    return pkg
