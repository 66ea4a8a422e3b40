"""A trained segmentation model as a model package.

Training keeps its resumable state (checkpoints, TensorBoard logs) in a training folder beside the package
(``<model_dir>.training``); what prediction needs — plan, dataset description, splits, each finished fold's
``model_final.pt`` and ``summary.json``, and the run's energy record — is copied into the package ``model_dir``,
which is replaced as a unit each time a fold finishes. ``inference.json`` records the test-time mirror axes
chosen from the folds' mirror studies (segmentation/tta.py), which ``predict`` uses by default.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medsight.errors import InputNotFoundError
from medsight.files import atomic_write_text, sha256_file, temp_prefix
from medsight.package.package import Package, save_package
from medsight.segmentation.tta import INFERENCE_FILE, combine_studies

PACKAGE_FILES = ("plan.json", "dataset.json", "splits.json")
FOLD_FILES = ("model_final.pt", "summary.json")


def training_dir(model_dir: str | Path) -> Path:
    """Where training state for the package ``model_dir`` lives (so a killed run resumes from it)."""
    p = Path(model_dir)
    return p.with_name(p.name + ".training")


def _merge_energy(previous: Package | None, energy: dict[str, Any] | None) -> dict[str, Any] | None:
    """Energy of all training runs that went into the package: the new run added to the previous record."""
    if energy is None:
        return None
    runs = []
    if previous is not None and previous.has("energy.json"):
        runs = list(previous.read_json("energy.json").get("runs", []))
    runs.append(energy)
    return {"kwh": sum(r["kwh"] for r in runs), "co2_kg": sum(r["co2_kg"] for r in runs),
            "seconds": sum(r["seconds"] for r in runs), "measured": all(r["measured"] for r in runs),
            "method": "; ".join(sorted({r["method"].split(":")[0] for r in runs})) + " (sum of runs, see runs)",
            "runs": runs}


def package_segmentation(train_dir: str | Path, model_dir: str | Path, *, name: str,
                         energy: dict[str, Any] | None = None, previous: Package | None = None,
                         registry_url: str | None = None) -> Package:
    """Copy the prediction files of every finished fold in ``train_dir`` into the package ``model_dir``."""
    src = Path(train_dir)
    folds = sorted(p.parent for p in src.glob("fold_*/model_final.pt"))
    if not folds:
        raise InputNotFoundError("no finished fold (fold_*/model_final.pt) to package", src)
    dest = Path(model_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(dest, "seg-"), dir=dest.parent))
    try:
        for f in PACKAGE_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, work / f)
        dice, inits, studies = [], {}, []
        for fold in folds:
            (work / fold.name).mkdir()
            for f in FOLD_FILES:
                if (fold / f).is_file():
                    shutil.copy2(fold / f, work / fold.name / f)
            if (fold / "summary.json").is_file():
                fold_summary = json.loads((fold / "summary.json").read_text())
                if fold_summary.get("init"):  # initialised from an encoder package (medsight pretrain)
                    inits[fold_summary["init"]["package_id"]] = fold_summary["init"]
                if fold_summary.get("mirror_study"):
                    studies.append(fold_summary["mirror_study"])
                value = fold_summary.get("final_val_dice")
                if isinstance(value, (int, float)):
                    dice.append(float(value))
                elif isinstance(value, dict):
                    dice.extend(float(v) for v in value.values() if isinstance(v, (int, float)))
        choice = combine_studies(studies)
        if choice is not None:
            atomic_write_text(work / INFERENCE_FILE, json.dumps(choice, indent=2, sort_keys=True))
        merged = _merge_energy(previous, energy)
        if merged is not None:
            atomic_write_text(work / "energy.json", json.dumps(merged, indent=2, sort_keys=True))
        extra = {"data_fingerprint": sha256_file(src / "dataset.json") if (src / "dataset.json").is_file() else None,
                 "metrics": {"val_dice_mean": float(np.mean(dice))} if dice else {},
                 "folds": [f.name for f in folds],
                 **({"init": sorted(inits.values(), key=lambda r: r["package_id"])} if inits else {}),
                 **({"energy_kwh": merged["kwh"], "energy_method": merged["method"]} if merged else {})}
        return save_package(work, dest, task="segmentation", name=name, extra=extra, registry_url=registry_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
