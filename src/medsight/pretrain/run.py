"""``pretrain``: unlabelled pool -> engine run (resumable) -> verified, registered package of kind ``encoder``.

Training state (checkpoint, log) lives in ``<package>.training`` beside the package, as for ``train``: the same
command after a kill resumes from the last epoch and ends with the weights of an uninterrupted run. The package
is written once, at the end, as a unit (``save_package``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medsight import __version__
from medsight.engine import distributed as dd
from medsight.engine.loop import fit
from medsight.engine.task import EngineConfig
from medsight.errors import ConfigError
from medsight.files import atomic_write_text, temp_prefix
from medsight.nets.segmentation import build_model, count_parameters
from medsight.package.encoder import DESCRIPTION, WEIGHTS
from medsight.package.package import Package, check_target, save_package
from medsight.plan.plan import ConfigPlan, Plan
from medsight.pretrain.data import find_volumes, load_pool, pool_fingerprint
from medsight.pretrain.task import PretrainTask


def training_dir(package_dir: Path) -> Path:
    return package_dir.with_name(package_dir.name + ".training")


def head_keys(cfg: ConfigPlan, in_channels: int) -> set[str]:
    """Tensors whose shape depends on the number of output classes (the heads): never transferred.

    Found by building the network for two output counts and comparing shapes, so it holds for any registered
    network; torch's random state is left as it was."""
    with torch.random.fork_rng():
        a = build_model(cfg, in_channels, 2).state_dict()
        b = build_model(cfg, in_channels, 3).state_dict()
    return {k for k in a if k not in b or a[k].shape != b[k].shape}


def transferable(model: nn.Module, method: str, cfg: ConfigPlan, channels: int) -> dict[str, torch.Tensor]:
    """The tensors an encoder package carries, named as in the segmentation network (``channels``: the plan's)."""
    state = dd.unwrap(model).state_dict()
    if method == "restore":
        heads = head_keys(cfg, channels)
        return {k: v.detach().cpu().clone() for k, v in state.items() if k not in heads}
    return {k: v.detach().cpu().clone() for k, v in state.items() if not k.startswith("projection.")}


def pretrain(data: str | Path, package_dir: str | Path, plan: Plan, config: str = "3d", method: str = "restore",
             epochs: int = 10, iterations: int = 20, batch_size: int | None = None, seed: int = 0,
             max_seconds: float | None = None, name: str | None = None, quiet: bool = False,
             registry_url: str | None = None) -> tuple[Package | None, dict[str, Any]]:
    """Pretrain ``plan``'s ``config`` network on the volumes under ``data``; returns (package, summary)."""
    cfg = plan.config(config)
    if epochs < 1 or iterations < 1:
        raise ConfigError(f"epochs and iterations must be >= 1, got {epochs} and {iterations}")
    package_dir = Path(package_dir)
    check_target(package_dir)
    paths = find_volumes(data)
    fingerprint = pool_fingerprint(paths)
    bs = int(batch_size or (max(cfg.batch_size, 4) if method == "contrastive" else cfg.batch_size))
    volumes = load_pool(paths, plan, cfg, quiet)
    in_channels = len(plan.channels) * (2 * cfg.context_slices + 1)
    task = PretrainTask(volumes, cfg, len(plan.channels), method, bs, iterations, seed)
    train_dir = training_dir(package_dir)
    if dd.is_main():
        train_dir.mkdir(parents=True, exist_ok=True)
    dd.barrier()
    engine = EngineConfig(epochs=epochs, seed=seed, max_seconds=max_seconds, lr_schedule="poly", lr=1e-3,
                          grad_clip=12.0, out_dir=train_dir, quiet=quiet or not dd.is_main(),
                          name=f"pretrain {method}", restore_best=False,
                          identity={"plan_sha256": plan.sha256(), "config": config, "method": method,
                                    "pool_sha256": fingerprint, "batch_size": bs, "iterations": iterations})
    result = fit(task, engine)
    state = transferable(result.model, method, cfg, len(plan.channels))
    summary = {"method": method, "network": cfg.network, "config_name": config, "config": asdict(cfg),
               "in_channels": in_channels, "parts": "encoder+decoder" if method == "restore" else "encoder",
               "plan": {"sha256": plan.sha256(), "dataset": plan.dataset, "channels": plan.channels,
                        "normalisation": plan.normalisation, "target_spacing": plan.target_spacing},
               "data": {"volumes": len(volumes), "files": len(paths), "pool_sha256": fingerprint},
               "training": _training_record(result, epochs, iterations, bs, seed, dd.world_size(),
                                            dd.unwrap(result.model)),
               "tensors": len(state), "medsight_version": __version__, "torch_version": torch.__version__}
    if result.energy:
        summary["energy"] = result.energy
    pkg = None
    if dd.is_main():
        pkg = _write_package(train_dir, package_dir, state, summary, plan, name or package_dir.name, registry_url)
    dd.barrier()
    return pkg, summary


def pretrain_backbone(data: str | Path, package_dir: str | Path, backbone: str, input_size: tuple[int, ...],
                      epochs: int = 10, iterations: int = 20, batch_size: int | None = None, seed: int = 0,
                      max_seconds: float | None = None, name: str | None = None, quiet: bool = False,
                      registry_url: str | None = None) -> tuple[Package | None, dict[str, Any]]:
    """Contrastive pretraining of a ``train-cls`` backbone on the 2D or 3D images under ``data``."""
    from medsight.classification.dataset import load_tensors
    from medsight.nets.backbones import check_backbone
    from medsight.pretrain.backbone import BackbonePretrainTask, backbone_tensors

    check_backbone(backbone)
    if epochs < 1 or iterations < 1:
        raise ConfigError(f"epochs and iterations must be >= 1, got {epochs} and {iterations}")
    package_dir = Path(package_dir)
    check_target(package_dir)
    paths = find_volumes(data)
    fingerprint = pool_fingerprint(paths)
    x = load_tensors(paths, input_size, quiet=quiet)
    bs = int(batch_size or 16)
    task = BackbonePretrainTask(x, backbone, bs, iterations, seed)
    train_dir = training_dir(package_dir)
    train_dir.mkdir(parents=True, exist_ok=True)
    engine = EngineConfig(epochs=epochs, seed=seed, max_seconds=max_seconds, lr_schedule="poly", lr=1e-3,
                          grad_clip=12.0, out_dir=train_dir, quiet=quiet, name="pretrain contrastive",
                          restore_best=False, identity={"backbone": backbone, "input_size": list(input_size),
                                                        "pool_sha256": fingerprint, "batch_size": bs,
                                                        "iterations": iterations})
    result = fit(task, engine)
    state = backbone_tensors(result.model)
    summary = {"method": "contrastive", "network": backbone, "kind": "classification backbone",
               "spatial_dims": len(input_size), "input_size": list(input_size), "in_channels": 1, "parts": "backbone",
               "normalisation": "classification: resize to input_size, then (x - q01) / (IQR / 1.349) per image",
               "data": {"volumes": int(len(x)), "files": len(paths), "pool_sha256": fingerprint},
               "training": _training_record(result, epochs, iterations, task.bs, seed, 1, result.model),
               "tensors": len(state), "medsight_version": __version__, "torch_version": torch.__version__}
    if result.energy:
        summary["energy"] = result.energy
    return _write_package(train_dir, package_dir, state, summary, None, name or package_dir.name, registry_url), \
        summary


def _training_record(result: Any, epochs: int, iterations: int, batch_size: int, seed: int, processes: int,
                     model: torch.nn.Module) -> dict[str, Any]:
    """What a pretraining run did (the ``training`` block of ``encoder.json``), the same for both entry points."""
    history = result.history
    return {"epochs_planned": epochs, "epochs_done": len(history), "iterations": iterations,
            "batch_size": batch_size, "seed": seed, "processes": processes,
            "stopped_by_time_budget": result.stopped_by_time_budget, "seconds_this_run": round(result.seconds, 1),
            "final_loss": history[-1]["loss"] if history else None,
            "final_val_loss": history[-1].get("val_loss") if history else None,
            "parameters_trained": count_parameters(model)}


def _write_package(train_dir: Path, package_dir: Path, state: dict[str, torch.Tensor], summary: dict[str, Any],
                   plan: Plan | None, name: str, registry_url: str | None) -> Package:
    package_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(package_dir, "enc-"), dir=package_dir.parent))
    try:
        torch.save(state, work / WEIGHTS)
        atomic_write_text(work / DESCRIPTION, json.dumps(summary, indent=2, default=str))
        if plan is not None:
            plan.save(work / "plan.json")
        if (train_dir / "log.jsonl").is_file():
            shutil.copy2(train_dir / "log.jsonl", work / "log.jsonl")
        if summary.get("energy"):
            atomic_write_text(work / "energy.json", json.dumps(summary["energy"], indent=2))
        t = summary["training"]
        extra = {"data_fingerprint": summary["data"]["pool_sha256"], "method": summary["method"],
                 "network": summary["network"], "config": summary.get("config_name", summary.get("kind")),
                 "metrics": {"final_val_loss": t["final_val_loss"]} if t["final_val_loss"] is not None else {},
                 **({"energy_kwh": summary["energy"]["kwh"]} if summary.get("energy") else {})}
        return save_package(work, package_dir, task="encoder", name=name, extra=extra, registry_url=registry_url)
    finally:
        shutil.rmtree(work, ignore_errors=True)
