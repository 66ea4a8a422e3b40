"""The model card of each validated model, generated from the results document and the model's folder.

Kept beside assemble.py because it reads files (the authored ``model_card.json``, the package ``manifest.json``,
``energy.json``, the training fingerprint in ``plan.json`` / ``config.json``) and writes the card's markdown.
The card goes beside the report, never into the model's folder: a registered package is never modified by
the evaluation of it (``write_card_version`` makes a new package version holding it, when asked).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medsight.files import atomic_write_text
from medsight.package.model_card import AUTHORED_JSON, CARD_MD, build_model_card


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
    extra = (_json(model_dir / "manifest.json") or {}).get("extra") or {}
    if extra.get("init"):  # fine-tuned from a pretrained encoder package: say which one
        out["initialised from"] = "; ".join(f"encoder package {r.get('name')} (id {str(r.get('package_id'))[:12]}, "
                                            f"{r.get('method')} pretraining on {r.get('pretrained_on')} unlabelled "
                                            "volumes)" for r in extra["init"])
    fed = extra.get("federated")
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
             hashes: dict[str, str] | None = None, *, card_path: Path) -> dict[str, Any]:
    """Build the card, write its markdown to ``card_path`` (beside the report; never into the model's folder), and
    return it as a dict for the report.

    ``defaults`` fill written fields (intended use...) that the folder's ``model_card.json`` leaves empty."""
    model_dir = Path(model_dir)
    authored = {**(defaults or {}), **{k: v for k, v in (_json(model_dir / AUTHORED_JSON) or {}).items() if v}}
    card = build_model_card(doc, task, name=name, authored=authored, training_data=training_data(model_dir, dataset),
                            package=package_info(model_dir, hashes), energy=_json(model_dir / "energy.json"),
                            worst_cases=list(worst_cases or []))
    path = Path(card_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, card.to_markdown())
    return {**card.to_dict(), "file": str(path.resolve())}


def write_card_version(model: Path, card_file: Path, registry_url: str | None = None):  # noqa: ANN201 - Package
    """A new package version of ``model`` that holds the card (``model_card.md``, listed and hashed), parent
    recorded; the evaluated version itself is left as it was."""
    from medsight.package.package import derive_package, load_package

    return derive_package(load_package(model, allow_retired=True, registry_url=registry_url),
                          files={CARD_MD: Path(card_file).read_bytes()}, registry_url=registry_url)
