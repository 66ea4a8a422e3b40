"""Fold ensembling: load every trained fold of a model folder and average their probabilities."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from medsight.errors import ConfigError, InputNotFoundError
from medsight.nets.segmentation import build_model
from medsight.plan.plan import ConfigPlan, Plan
from medsight.segmentation.lesion_head import uses_lesion_head
from medsight.engine.checkpoint import load_checkpoint


def available_folds(model_dir: Path) -> list[str]:
    return sorted(p.parent.name.removeprefix("fold_") for p in Path(model_dir).glob("fold_*/model_final.pt"))


def load_models(model_dir: str | Path, folds: list[str] | None = None, network: str | None = None
                ) -> tuple[Plan, ConfigPlan, list[nn.Module]]:
    """The plan, the configuration and one eval-mode network per fold (all folds found when ``folds`` is None).

    ``network`` replaces the recorded network name; a recorded plug-in that is not installed is a one-line
    ConfigError naming its distribution and version."""
    model_dir = Path(model_dir)
    plan = Plan.load(model_dir / "plan.json")
    folds = folds or available_folds(model_dir)
    if not folds:
        raise InputNotFoundError("no trained fold (fold_*/model_final.pt) in this model folder; run `medsight "
                                 "train` first", model_dir)
    models, config = [], None
    for f in folds:
        path = model_dir / f"fold_{f}" / "model_final.pt"
        if not path.is_file():
            raise InputNotFoundError(f"fold {f} is not trained (no model_final.pt)", path)
        state = load_checkpoint(path)
        config = state["config"]
        cfg = plan.config(config)
        if network is not None:
            cfg = replace(cfg, network=network)
        recorded = None if network else (state.get("summary") or {}).get("network_provenance")
        net = build_model(cfg, len(plan.channels), len(plan.labels), recorded=recorded,
                          lesion_head=uses_lesion_head(cfg.loss))
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ConfigError(f"fold {f}'s weights do not fit network {cfg.network!r} "
                              f"({str(exc).splitlines()[0]})", path) from exc
        net.eval()
        models.append(net)
    cfg = plan.config(config)
    return plan, replace(cfg, network=network) if network is not None else cfg, models


def average(probabilities: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(probabilities).mean(0)
