"""Train one fold of a plan configuration: patches with foreground oversampling, augmentation, DiceCE with deep
supervision, AdamW with a poly learning-rate schedule, a checkpoint after every epoch.

Resume is exact: every epoch draws its batches and augmentation from ``epoch_rng(seed, fold, epoch)`` and its
torch stream from ``epoch_torch_seed``, and the checkpoint holds model, optimiser and history, so a run killed
after epoch k and restarted ends with the same weights as one that never stopped (same machine, same threads).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight import __version__
from medsight.data.dataset import SegDataset, validate
from medsight.errors import ConfigError, DatasetError
from medsight.files import atomic_write_text
from medsight.nets.segmentation import build_model, count_parameters
from medsight.plan.plan import ConfigPlan, Plan
from medsight.segmentation.sampling import batch, prepare, tqdm_bar
from medsight.engine.checkpoint import load_checkpoint, save_checkpoint
from medsight.segmentation.losses import DeepSupervisionLoss, soft_dice_per_class
from medsight.engine.seeding import epoch_rng, epoch_torch_seed, seed_everything

log = logging.getLogger(__name__)
VAL_PATCHES = 4


def fold_dir(model_dir: Path, fold: int | str) -> Path:
    return Path(model_dir) / f"fold_{fold}"


def poly_lr(base: float, epoch: int, epochs: int) -> float:
    return base * (1 - epoch / epochs) ** 0.9


def train_fold(ds: SegDataset, plan: Plan, config: str, fold: int | str, model_dir: str | Path,
               train_ids: list[str], val_ids: list[str], seed: int = 0, epochs: int | None = None,
               max_seconds: float | None = None, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) one fold; returns its summary and writes ``fold_K/model_final.pt`` when done."""
    cfg = plan.config(config)
    epochs = int(epochs or cfg.epochs)
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if not train_ids:
        raise DatasetError(f"fold {fold} has no training cases", ds.root)
    validate(ds.subset(train_ids + val_ids))  # bad inputs stop here, before any training
    out = fold_dir(Path(model_dir), fold)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    n_classes = len(plan.labels)
    in_ch = len(plan.channels)

    seed_everything(seed)
    model = build_model(cfg, in_ch, n_classes)
    opt = _optimizer(cfg, model)
    loss_fn = DeepSupervisionLoss()
    start, history = 0, []
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path)
        if state.get("plan_sha256") != plan.sha256() or state.get("seed") != seed or state.get("epochs") != epochs:
            raise ConfigError(f"fold {fold} has a checkpoint from a different plan, seed or epoch count; delete "
                              f"{ckpt_path} or use another model folder", ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["epoch"]) + 1, list(state["history"])
        log.info("fold %s: resuming after epoch %d", fold, start - 1)
    if start >= epochs and (out / "model_final.pt").is_file():
        return json.loads((out / "summary.json").read_text())

    train = prepare(ds, train_ids, plan, cfg, seed, quiet)
    val = prepare(ds, val_ids, plan, cfg, seed, quiet) if val_ids else []
    val_batch = batch(val, _val_cfg(cfg), np.random.default_rng([seed, 17]), do_augment=False) if val else None
    writer = _writer(out / "tensorboard")
    t0 = time.perf_counter()
    stopped_early = False
    bar = None if quiet else tqdm_bar(range(start, epochs), f"train {config} fold {fold}", initial=start, total=epochs)
    for epoch in range(start, epochs):
        lr = poly_lr(cfg.learning_rate, epoch, epochs)
        for g in opt.param_groups:
            g["lr"] = lr
        rng = epoch_rng(seed, fold, epoch)
        torch.manual_seed(epoch_torch_seed(seed, fold, epoch))
        model.train()
        losses = []
        for _ in range(cfg.iterations_per_epoch):
            x, y = batch(train, cfg, rng)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
            opt.step()
            losses.append(float(loss.detach()))
        record = {"epoch": epoch, "lr": lr, "loss": float(np.mean(losses))}
        if val_batch is not None:
            model.eval()
            with torch.no_grad():
                logits = model(val_batch[0])
            dice = soft_dice_per_class(logits, val_batch[1], n_classes)
            record["val_dice"] = dice
            record["val_mean_dice"] = float(np.nanmean(dice)) if not all(math.isnan(d) for d in dice) else float("nan")
        history.append(record)
        save_checkpoint(ckpt_path, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "history": history, "plan_sha256": plan.sha256(), "seed": seed,
                                    "epochs": epochs, "torch_rng": torch.get_rng_state()})
        _log(out, writer, record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", val_dice=f"{record.get('val_mean_dice', float('nan')):.3f}")
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds and epoch + 1 < epochs:
            stopped_early = True
            log.warning("fold %s: time budget of %.0f s reached after epoch %d of %d", fold, max_seconds, epoch + 1,
                        epochs)
            break
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    summary = {"fold": fold, "config": config, "network": cfg.network, "epochs_planned": epochs,
               "epochs_done": len(history), "stopped_by_time_budget": stopped_early, "seed": seed,
               "train_cases": train_ids, "val_cases": val_ids, "parameters": count_parameters(model),
               "plan_sha256": plan.sha256(), "medsight_version": __version__, "torch_version": torch.__version__,
               "final_loss": history[-1]["loss"] if history else None,
               "final_val_dice": history[-1].get("val_dice") if history else None,
               "train_seconds_this_run": round(time.perf_counter() - t0, 1)}
    save_checkpoint(out / "model_final.pt", {"model": model.state_dict(), "config": config, "fold": fold,
                                              "summary": summary})
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def _val_cfg(cfg: ConfigPlan) -> ConfigPlan:
    from dataclasses import replace

    return replace(cfg, batch_size=VAL_PATCHES, foreground_oversample=1.0)


def _optimizer(cfg: ConfigPlan, model: torch.nn.Module) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=0.99, nesterov=True,
                               weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer '{cfg.optimizer}' in the plan; use adamw or sgd")


def _writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard missing: the JSON log still has everything
        return None
    return SummaryWriter(str(path))


def _log(out: Path, writer, record: dict[str, Any]) -> None:
    with open(out / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if writer is not None:
        writer.add_scalar("loss/train", record["loss"], record["epoch"])
        writer.add_scalar("lr", record["lr"], record["epoch"])
        if "val_mean_dice" in record:
            writer.add_scalar("dice/val_mean", record["val_mean_dice"], record["epoch"])
        writer.flush()
