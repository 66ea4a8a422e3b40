"""The federated model as a medsight package: weights plus the run's record of sites, rounds and hashes."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from medsight.errors import ConfigError
from medsight.federated.launch import RUN_DEFAULTS
from medsight.federated.privacy import ACCOUNTANT
from medsight.federated.tasks import run_plan, task_kind
from medsight.package.package import Package, save_package

log = logging.getLogger(__name__)


class NotLearnedError(ConfigError):
    """The federation's final model is no better than its initial one (or cannot be measured): not a model."""


def not_learned(result: dict[str, Any]) -> str | None:
    """Why the run's final model is not a model (None when it learned): no round aggregated, a site's final
    validation metric (AUC; Dice for segmentation) undefined, or the final pooled metric below the initial
    model's (every site evaluates the initial model before round 1: ``initial`` in federation.json)."""
    rounds = result.get("rounds", [])
    if not any(r.get("aggregated", r.get("aggregate_sha256")) for r in rounds):
        return "no round aggregated any site's update"
    key = "dice" if task_kind(result["config"]) == "segmentation" else "auc"
    final = rounds[-1]
    bad = sorted(s for s, m in final["evaluate"].items() if not math.isfinite(float(m.get(key, math.nan))))
    if bad or not final["evaluate"]:
        return f"the final validation {key} is undefined at site(s) {', '.join(bad) or '(none evaluated)'}"
    now = float(final.get("global", {}).get(key, math.nan))
    if not math.isfinite(now):
        return f"the final pooled validation {key} is undefined"
    if "initial" not in result:  # a record from before the initial evaluation: nothing to compare with
        log.warning("the run's record has no initial evaluation; cannot tell whether the federation learned")
        return None
    before = float(result["initial"].get("global", {}).get(key, math.nan))
    if math.isfinite(before) and now < before:
        return f"the final pooled validation {key} {now:.3f} is below the initial model's {before:.3f}"
    return None


def federation_summary(result: dict[str, Any]) -> dict[str, Any]:
    """What the package manifest records: sites, rounds, per-round per-site metrics, every aggregate's SHA-256."""
    rounds = result["rounds"]
    sites = sorted({s for r in rounds for s in (*r["train"], *r["evaluate"], *r.get("no_reply", []))})
    return {"strategy": result["strategy"], "task": task_kind(result["config"]), "sites": sites, "rounds": len(rounds),
            "per_round": [{"round": r["round"], "contributors": r["contributors"], "global": r.get("global", {}),
                           "sites": r["evaluate"], "aggregate_sha256": r["aggregate_sha256"]} for r in rounds],
            "aggregate_sha256": [r["aggregate_sha256"] for r in rounds],
            "contributing_sites": sorted({s for r in rounds for s in r["contributors"]}),
            "dp": {k: result["config"].get(k, RUN_DEFAULTS[k])
                   for k in ("dp-noise", "dp-clip", "dp-delta", "dp-epsilon", "dp-mode")},
            "privacy": {"accountant": ACCOUNTANT, "sites": result.get("privacy", {})},  # each site's own ledger
            "initial": result.get("initial", {}).get("global", {}),
            "model": {k: result["config"].get(k, RUN_DEFAULTS[k]) for k in ("backbone", "image-size", "label")}}


def package_federation(out_dir: str | Path, dest: str | Path, name: str, *, register: bool = True,
                       registry_url: str | None = None, force: bool = False) -> Package:
    """Package ``out_dir``'s model.pt and federation.json (written by the ServerApp) into ``dest``.

    A federation that did not learn (``not_learned``) is refused (NotLearnedError) unless ``force``.

    A segmentation federation becomes a model folder ``medsight predict`` reads (plan.json and
    fold_federated/model_final.pt, the weights the server hashed in the last round)."""
    out_dir = Path(out_dir)
    result = json.loads((out_dir / "federation.json").read_text())
    why = not_learned(result)
    if why and not force:
        raise NotLearnedError(f"not packaged: {why}; a federation that did not learn is not a model "
                              "(--force packages it anyway)")
    if not (out_dir / "model.pt").exists():
        raise NotLearnedError(f"no model in {out_dir}: no round aggregated any site's update")
    summary = federation_summary(result)
    if why:
        summary["forced"] = why
    task = summary["task"]
    if task == "mil":
        raise ConfigError("packaging a MIL federation is not built yet (the package would need the agreed tile "
                          f"encoder's record); the weights are in {out_dir / 'model.pt'}")
    with tempfile.TemporaryDirectory(prefix="medsight-fedpkg-") as tmp:
        shutil.copy(out_dir / "federation.json", Path(tmp) / "federation.json")
        if task == "segmentation":
            _segmentation_folder(result, torch.load(out_dir / "model.pt", weights_only=True), Path(tmp))
        else:
            shutil.copy(out_dir / "model.pt", Path(tmp) / "model.pt")
        final = summary["per_round"][-1]["global"]
        return save_package(tmp, dest, task=task, name=name, register=register,
                            registry_url=registry_url,
                            extra={"federated": summary, "metrics": {f"federated_{k}": v for k, v in final.items()}})


def _segmentation_folder(result: dict[str, Any], weights: dict[str, Any], folder: Path) -> None:
    """plan.json and fold_federated/model_final.pt, as ``medsight train`` lays out a model folder."""
    from medsight.engine.checkpoint import save_checkpoint
    from medsight.nets.segmentation import network_provenance

    plan, configuration = run_plan(result["config"])
    plan.save(folder / "plan.json")
    (folder / "fold_federated").mkdir()
    summary = {"fold": "federated", "config": configuration, "network": plan.config(configuration).network,
               "network_provenance": network_provenance(plan.config(configuration).network),
               "plan_sha256": plan.sha256(), "federated": True, "rounds": len(result["rounds"]),
               "aggregate_sha256": result["rounds"][-1]["aggregate_sha256"]}
    save_checkpoint(folder / "fold_federated" / "model_final.pt",
                    {"model": weights, "config": configuration, "fold": "federated", "summary": summary})
