"""The federated model as a medsight package: weights plus the run's record of sites, rounds and hashes."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from medsight.errors import ConfigError
from medsight.federated.launch import RUN_DEFAULTS
from medsight.federated.tasks import run_plan, task_kind
from medsight.package.package import Package, save_package


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
            "model": {k: result["config"].get(k, RUN_DEFAULTS[k]) for k in ("backbone", "image-size", "label")}}


def package_federation(out_dir: str | Path, dest: str | Path, name: str, *, register: bool = True,
                       registry_url: str | None = None) -> Package:
    """Package ``out_dir``'s model.pt and federation.json (written by the ServerApp) into ``dest``.

    A segmentation federation becomes a model folder ``medsight predict`` reads (plan.json and
    fold_federated/model_final.pt, the weights the server hashed in the last round)."""
    out_dir = Path(out_dir)
    result = json.loads((out_dir / "federation.json").read_text())
    summary = federation_summary(result)
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
