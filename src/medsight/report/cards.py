"""The model card of each validated model, generated from the results document and the model's folder.

Kept beside assemble.py because it reads files (the authored ``model_card.json``, the package ``manifest.json``,
``energy.json``, the training fingerprint in ``plan.json`` / ``config.json``) and writes ``model_card.md``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medsight.package.model_card import AUTHORED_JSON, build_model_card, write_model_card


def _json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def package_info(model_dir: Path, hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """Id and version of a model package (read through ``load_package``, hashes verified); an unregistered
    folder gets an id from its file hashes."""
    if (Path(model_dir) / "manifest.json").is_file():
        from medsight.package.package import load_package

        pkg = load_package(model_dir, allow_retired=True)
        return {"id": pkg.id, "version": str(pkg.version) if pkg.version is not None else "unregistered",
                "name": pkg.name, **({"below_target": pkg.extra["below_target"]}
                                     if pkg.extra.get("below_target") else {})}
    text = json.dumps(sorted((hashes or {}).items()))
    return {"id": "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16] + " (unregistered: file hashes)",
            "version": "unregistered"}


def training_data(model_dir: Path, dataset: Path | None = None) -> dict[str, Any]:
    """What the model was trained on: a fingerprint of its training data and the sites it came from."""
    model_dir = Path(model_dir)
    out: dict[str, Any] = {}
    plan, cfg = _json(model_dir / "plan.json"), _json(model_dir / "config.json")
    fed = ((_json(model_dir / "manifest.json") or {}).get("extra") or {}).get("federated")
    if fed:  # trained where the data are: the sites that sent updates, never the data themselves
        out["training"] = (f"federated ({fed.get('strategy')}, {fed.get('rounds')} rounds); images never left "
                           "the sites")
        out["training sites"] = fed.get("contributing_sites") or fed.get("sites")
        return out
    if plan and plan.get("fingerprint_sha256"):
        out["training data fingerprint"] = f"sha256 {plan['fingerprint_sha256']} (dataset fingerprint of the plan)"
        splits = model_dir / "splits.json"
        if splits.is_file() and dataset is not None and (Path(dataset) / "manifest.csv").is_file():
            folds = json.loads(splits.read_text())
            trained = [f for i, f in enumerate(folds) if (model_dir / f"fold_{i}").is_dir()]
            cases = {c for f in trained for c in f.get("train", [])}
            m = pd.read_csv(Path(dataset) / "manifest.csv", dtype=str)
            out["training sites"] = sorted(m.loc[m["case_id"].isin(cases), "site"].dropna().unique().tolist())
            out["training cases"] = len(cases)
    elif cfg and cfg.get("data"):
        d = cfg["data"]
        out["training data fingerprint"] = f"sha256 {d.get('manifest_sha256')} (training manifest)"
        out["training cases"] = d.get("n_train")
        manifest = Path(d.get("manifest") or "")
        if manifest.is_file():
            m = pd.read_csv(manifest, dtype=str)
            if {"split", "site"} <= set(m.columns):
                out["training sites"] = sorted(m.loc[m["split"] == "train", "site"].dropna().unique().tolist())
    return out


def card_for(doc: dict[str, Any], task: str, model_dir: Path, name: str, dataset: Path | None = None,
             defaults: dict[str, Any] | None = None, worst_cases: Sequence[dict[str, Any]] | None = None,
             hashes: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the card, write ``model_card.md`` into ``model_dir``, and return it as a dict for the report.

    ``defaults`` fill written fields (intended use...) that the folder's ``model_card.json`` leaves empty."""
    model_dir = Path(model_dir)
    authored = {**(defaults or {}), **{k: v for k, v in (_json(model_dir / AUTHORED_JSON) or {}).items() if v}}
    card = build_model_card(doc, task, name=name, authored=authored, training_data=training_data(model_dir, dataset),
                            package=package_info(model_dir, hashes), energy=_json(model_dir / "energy.json"),
                            worst_cases=list(worst_cases or []))
    path = write_model_card(card, model_dir)
    return {**card.to_dict(), "file": str(path)}
