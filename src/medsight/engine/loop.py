"""The one training loop: every task trains through ``fit`` (and federated rounds through ``local_update``).

Exact resume: epoch k draws its batches from ``epoch_rng(seed, fold, k)`` and seeds torch with
``epoch_torch_seed(seed, fold, k)``; the checkpoint written atomically after every epoch holds model, optimiser,
schedule, history and the best epoch so far. A run killed after epoch k and started again therefore ends with
the weights of a run that never stopped (same machine, same thread count). A checkpoint written under another
identity (plan, data, seed, epoch count) is refused rather than silently continued.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from medsight.engine import distributed as dd
from medsight.engine.callbacks import Callback, JsonlLog, ProgressBar, TensorBoardLog
from medsight.engine.checkpoint import load_checkpoint, save_checkpoint
from medsight.engine.seeding import epoch_rng, epoch_torch_seed, seed_everything
from medsight.engine.task import EngineConfig, FitResult, Task, out_path
from medsight.errors import ConfigError

log = logging.getLogger(__name__)
SCHEDULES = ("constant", "poly", "onecycle")


def fit(task: Task, config: EngineConfig) -> FitResult:
    """Train ``task`` for ``config.epochs`` epochs (resuming from ``out_dir``'s checkpoint when there is one)."""
    if config.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {config.epochs}")
    if config.lr_schedule not in SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule '{config.lr_schedule}'; use {', '.join(SCHEDULES)}")
    t0 = time.perf_counter()
    seed_everything(config.seed)
    model = task.build_model().to(dd.device())
    opt = task.configure_optimizer(model)
    base_lr = float(config.lr if config.lr is not None else opt.param_groups[0]["lr"])
    identity = {**config.identity, "seed": config.seed, "epochs": config.epochs}
    ckpt = out_path(config, config.checkpoint_name)
    saved = load_checkpoint(ckpt) if ckpt is not None and ckpt.is_file() else None
    start, history, best = 0, [], None
    if saved is not None:
        _check_identity(saved, identity, config)
        model.load_state_dict(saved["model"])
        start, history, best = int(saved["epoch"]) + 1, list(saved["history"]), saved.get("best")
        log.info("%s: resuming after epoch %d", config.name, start - 1)
    state: dict[str, Any] = {"epochs": config.epochs, "start_epoch": start, "config": config, "history": history}
    if start >= config.epochs:  # already complete: nothing to load or train
        return _finish(task, config, model, history, best, t0, False, start, None)
    callbacks = _callbacks(config) if dd.is_main() else []
    meter = _energy_meter() if config.energy else contextlib.nullcontext()
    stopped = False
    with meter:
        task.setup()
        t0 = time.perf_counter()  # the budget counts training, not data loading (as the demo's budgets assume)
        sched = _scheduler(opt, config, task, base_lr)
        if saved is not None:
            opt.load_state_dict(saved["optimizer"])  # after the scheduler, which rewrites the group rates
            if sched is not None and saved.get("scheduler"):
                sched.load_state_dict(saved["scheduler"])
        net = dd.wrap(model)
        for cb in callbacks:
            cb.on_fit_start(state)
        for epoch in range(start, config.epochs):
            for cb in callbacks:
                cb.on_epoch_start(epoch, state)
            if config.lr_schedule == "poly":
                for g in opt.param_groups:
                    g["lr"] = base_lr * (1 - epoch / config.epochs) ** 0.9
            lr = float(opt.param_groups[0]["lr"])
            torch.manual_seed(epoch_torch_seed(config.seed, config.fold, epoch))
            net.train()
            task.train_mode(model)
            loss_sum, n, _ = run_steps(task, net, opt, sched, task.epoch_batches(epoch, epoch_rng(
                config.seed, config.fold, epoch)), config.grad_clip)
            record: dict[str, Any] = {"epoch": epoch, "lr": lr,
                                      "loss": dd.mean_over_ranks(loss_sum / max(n, 1), n)}
            model.eval()
            with torch.no_grad():
                record.update(task.validate(model))
            record["seconds"] = round(time.perf_counter() - t0, 1)
            history.append(record)
            best = _update_best(task, model, record, best)
            if ckpt is not None and dd.is_main():
                save_checkpoint(ckpt, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict() if sched is not None else None,
                                       "history": history, "best": best, "identity": identity, **identity,
                                       "torch_rng": torch.get_rng_state()})
            dd.barrier()
            for cb in callbacks:
                cb.on_epoch_end(record, model, state)
            over = config.max_seconds is not None and time.perf_counter() - t0 > config.max_seconds
            if dd.any_rank(over) and epoch + 1 < config.epochs:
                stopped = True
                log.warning("%s: time budget of %.0f s reached after epoch %d of %d", config.name,
                            config.max_seconds, epoch + 1, config.epochs)
                break
        for cb in callbacks:
            cb.on_fit_end(state)
    energy = meter.record() if hasattr(meter, "record") else None
    return _finish(task, config, model, history, best, t0, stopped, start, energy)


def run_steps(task: Task, net: nn.Module, opt: torch.optim.Optimizer, sched: Any, batches: Iterable[Any],
              grad_clip: float | None, max_steps: int | None = None) -> tuple[float, int, int]:
    """The optimiser-step loop (the only one in medsight): returns (example-weighted loss sum, examples, steps)."""
    loss_sum, n, steps = 0.0, 0, 0
    dev, rank, world = dd.device(), dd.rank(), dd.world_size()
    for batch in batches:
        if max_steps is not None and steps >= max_steps:
            break
        if world > 1:
            batch = task.shard(batch, rank, world)
        batch = dd.to_device(batch, dev)
        opt.zero_grad(set_to_none=True)
        loss = task.loss(net, batch)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        opt.step()
        if sched is not None:
            sched.step()
        k = task.batch_size(batch)
        loss_sum, n, steps = loss_sum + float(loss.detach()) * k, n + k, steps + 1
    return loss_sum, n, steps


def local_update(task: Task, weights: dict[str, torch.Tensor], steps: int, seed: int, round: int,
                 grad_clip: float | None = None, validate: bool = False
                 ) -> tuple[dict[str, torch.Tensor], int, dict[str, Any]]:
    """Federated learning's client step: ``steps`` optimiser steps from ``weights`` on this site's data.

    Batches come from the task's epochs 0, 1, ... drawn with generators derived from (seed, round), so a round
    is reproducible. Returns the new weights (CPU copies), the number of examples seen and metrics (mean
    training loss; the task's validation too when ``validate``).
    """
    if steps < 1:
        raise ConfigError(f"local steps must be >= 1, got {steps}")
    seed_everything(seed)
    task.setup()  # before the model and optimiser: a task may need its data to build them
    model = task.build_model()
    model.load_state_dict(weights)
    opt = task.configure_optimizer(model)
    loss_sum, n, done, epoch = 0.0, 0, 0, 0
    while done < steps:
        torch.manual_seed(epoch_torch_seed(seed, round, epoch))
        model.train()
        task.train_mode(model)
        s, k, m = run_steps(task, model, opt, None, task.epoch_batches(epoch, epoch_rng(seed, round, epoch)),
                            grad_clip, max_steps=steps - done)
        if m == 0:
            raise ConfigError("the task yields no training batch; add training data")
        loss_sum, n, done, epoch = loss_sum + s, n + k, done + m, epoch + 1
    metrics: dict[str, Any] = {"loss": loss_sum / max(n, 1), "steps": done}
    if validate:
        model.eval()
        with torch.no_grad():
            metrics.update(task.validate(model))
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, n, metrics


def _check_identity(saved: dict[str, Any], identity: dict[str, Any], config: EngineConfig) -> None:
    old = saved.get("identity") or saved  # checkpoints before the engine kept the keys at the top level
    differ = sorted(k for k, v in identity.items() if old.get(k) != v)
    if differ:
        raise ConfigError(f"{config.name} has a checkpoint from a different plan, seed or epoch count "
                          f"({', '.join(differ)} differ); delete it or use another output folder",
                          out_path(config, config.checkpoint_name))


def _scheduler(opt: torch.optim.Optimizer, config: EngineConfig, task: Task, base_lr: float) -> Any:
    if config.lr_schedule != "onecycle":
        return None
    steps = task.steps_per_epoch()
    if not steps:
        raise ConfigError("the one-cycle schedule needs the task's steps per epoch")
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=base_lr, total_steps=config.epochs * steps,
                                               pct_start=config.onecycle_pct)


def _update_best(task: Task, model: nn.Module, record: dict[str, Any], best: dict[str, Any] | None
                 ) -> dict[str, Any] | None:
    """Keep the weights of the best epoch so far (smaller key is better); None when the task selects nothing."""
    key = selection_key(task, record)
    if key is None or (best is not None and not key < best["key"]):
        return best
    return {"epoch": record["epoch"], "key": key,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}


def selection_key(task: Task, record: dict[str, Any]) -> float | None:
    """The task's own ``selection_key`` when it has one, else its ``selection`` metric (negated for max)."""
    custom = getattr(task, "selection_key", None)
    if custom is not None:
        return custom(record)
    if task.selection is None:
        return None
    metric, mode = task.selection
    v = record.get(metric)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return -float(v) if mode == "max" else float(v)


def _finish(task: Task, config: EngineConfig, model: nn.Module, history: list[dict[str, Any]],
            best: dict[str, Any] | None, t0: float, stopped: bool, start: int,
            energy: dict[str, Any] | None) -> FitResult:
    best_epoch = None
    if best is not None and config.restore_best:
        model.load_state_dict(best["model"])
        best_epoch = int(best["epoch"])
    model.eval()
    return FitResult(model, history, best_epoch, time.perf_counter() - t0, stopped, start, energy)


def _callbacks(config: EngineConfig) -> list[Callback]:
    cbs: list[Callback] = []
    if not config.quiet:
        cbs.append(ProgressBar(config.name))
    if config.out_dir is not None:
        cbs.append(JsonlLog(out_path(config, config.log_name)))
        if config.tensorboard:
            cbs.append(TensorBoardLog(out_path(config, "tensorboard")))
    return cbs + list(config.callbacks)


def _energy_meter() -> Any:
    """h13's EnergyMeter when installed (engine/energy.py), else a no-op."""
    try:
        from medsight.engine.energy import EnergyMeter  # type: ignore[import-not-found]
    except ImportError:
        return contextlib.nullcontext()
    try:
        return EnergyMeter()
    except Exception as exc:  # a meter that cannot start must not stop training
        log.debug("energy meter unavailable: %s", exc)
        return contextlib.nullcontext()
