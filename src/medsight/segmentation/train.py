"""Train one fold of a plan configuration as a task on the engine: patches with foreground oversampling,
augmentation, the plan's loss (DiceCE, class-balanced for lesions) with deep supervision, AdamW (or SGD) with a
poly learning-rate schedule.

The engine (engine/loop.py) makes it resumable: every epoch draws its patches from ``epoch_rng(seed, fold,
epoch)`` and the checkpoint holds model, optimiser and history, so a run killed after epoch k and restarted ends
with the same weights as one that never stopped (same machine, same threads). Outputs per fold: checkpoint.pt,
log.jsonl, tensorboard/, and at the end model_final.pt and summary.json. The summary also holds the fold's inference
study (segmentation/tta_study.py): the Dice and counted cost of each window overlap x set of flips on its
validation cases, from which the package chooses the overlap and flips ``predict`` uses by default.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsight import __version__
from medsight.data.dataset import SegDataset, validate
from medsight.engine import distributed as dd
from medsight.engine.checkpoint import save_checkpoint
from medsight.engine.loop import fit
from medsight.engine.task import EngineConfig, Task
from medsight.errors import ConfigError, DatasetError
from medsight.files import atomic_write_text
from medsight.nets.segmentation import build_model, count_parameters, network_provenance
from medsight.package.encoder import apply_encoder, load_encoder_package
from medsight.plan.plan import ConfigPlan, Plan
from medsight.segmentation.lesion_head import uses_lesion_head
from medsight.segmentation.losses import segmentation_loss, soft_dice_per_class
from medsight.segmentation.sampling import Sample, batch, prepare
from medsight.segmentation.tta import STUDY_CASES

log = logging.getLogger(__name__)
VAL_PATCHES = 4
GRAD_CLIP = 12.0
LESION_STUDY_CASES = 24  # validation cases whose lesions fit the package's lesion referral rule
LESION_STUDY_OVERLAP = 0.25  # sliding-window overlap of that pass (the demo predicts with 0.25 too)


def fold_dir(model_dir: Path, fold: int | str) -> Path:
    return Path(model_dir) / f"fold_{fold}"


def poly_lr(base: float, epoch: int, epochs: int) -> float:
    return base * (1 - epoch / epochs) ** 0.9


class SegTask(Task):
    """Patch-based segmentation of one fold: the plan says network, patch, batch and optimiser."""

    def __init__(self, ds: SegDataset, plan: Plan, cfg: ConfigPlan, train_ids: list[str], val_ids: list[str],
                 seed: int, quiet: bool, init: tuple[Any, ...] | None = None) -> None:
        self.ds, self.plan, self.cfg, self.seed, self.quiet = ds, plan, cfg, seed, quiet
        self.init = init  # (package, state, description) of a verified encoder package, or None: from scratch
        self.train_ids, self.val_ids = train_ids, val_ids
        self.n_classes = len(plan.labels)
        self.loss_fn = segmentation_loss(cfg.loss)
        if plan.postprocess.get("lesion_labels"):  # lesion-wise losses weight the lesion labels' components only
            self.loss_fn.component_classes = {int(k) for k in plan.postprocess["lesion_labels"]}
        self.train: list[Sample] = []
        self.val_batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def setup(self) -> None:
        if self.train:
            return
        self.train = prepare(self.ds, self.train_ids, self.plan, self.cfg, self.seed, self.quiet)
        val = prepare(self.ds, self.val_ids, self.plan, self.cfg, self.seed, self.quiet) if self.val_ids else []
        if val:
            vcfg = replace(self.cfg, batch_size=VAL_PATCHES, foreground_oversample=1.0)
            self.val_batch = batch(val, vcfg, np.random.default_rng([self.seed, 17]), do_augment=False)

    def build_model(self) -> torch.nn.Module:
        model = build_model(self.cfg, len(self.plan.channels), self.n_classes,
                            lesion_head=uses_lesion_head(self.cfg.loss))
        if self.init is not None:  # a resumed run then loads its checkpoint over these weights
            apply_encoder(model, *self.init, network=self.cfg.network)
        return model

    def configure_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        if cfg.optimizer == "adamw":
            return torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(model.parameters(), lr=cfg.learning_rate, momentum=0.99, nesterov=True,
                                   weight_decay=cfg.weight_decay)
        raise ConfigError(f"unknown optimizer '{cfg.optimizer}' in the plan; use adamw or sgd")

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.cfg.iterations_per_epoch):
            yield batch(self.train, self.cfg, rng)

    def steps_per_epoch(self) -> int:
        return self.cfg.iterations_per_epoch

    def loss(self, model: torch.nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.loss_fn(model(b[0]), b[1])

    def validate(self, model: torch.nn.Module) -> dict[str, Any]:
        if self.val_batch is None:
            return {}
        dev = next(model.parameters()).device
        logits = model(self.val_batch[0].to(dev)).cpu()
        dice = soft_dice_per_class(logits, self.val_batch[1], self.n_classes)
        mean = float(np.nanmean(dice)) if not all(math.isnan(d) for d in dice) else float("nan")
        return {"val_dice": dice, "val_mean_dice": mean}


def train_fold(ds: SegDataset, plan: Plan, config: str, fold: int | str, model_dir: str | Path,
               train_ids: list[str], val_ids: list[str], seed: int = 0, epochs: int | None = None,
               max_seconds: float | None = None, quiet: bool = False, init: str | Path | None = None,
               study_mirroring: bool = True) -> dict[str, Any]:
    """Train (or resume) one fold; returns its summary and writes ``fold_K/model_final.pt`` when done.

    ``init``: an encoder package (``medsight pretrain``) whose tensors replace the fresh network's before the first
    epoch; it is verified, must fit the network, and its id becomes part of the checkpoint identity.

    Under ``torchrun`` (WORLD_SIZE > 1) every process runs this; the engine shards each batch and only rank 0
    writes files. ``study_mirroring=False`` skips the mirror study (a caller that predicts without mirroring).
    """
    cfg = plan.config(config)
    epochs = int(epochs or cfg.epochs)
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    if not train_ids:
        raise DatasetError(f"fold {fold} has no training cases", ds.root)
    validate(ds.subset(train_ids + val_ids))  # bad inputs stop here, before any training
    provenance = network_provenance(cfg.network)
    out = fold_dir(Path(model_dir), fold)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_encoder_package(init) if init is not None else None
    task = SegTask(ds, plan, cfg, train_ids, val_ids, seed, quiet, loaded)
    init_record = None
    if loaded is not None:  # check the fit now: a one-line refusal before any data is prepared
        init_record = apply_encoder(build_model(cfg, len(plan.channels), len(plan.labels)), *loaded,
                                    network=cfg.network)
    identity = {"plan_sha256": plan.sha256(), **({"init_package_id": loaded[0].id} if loaded else {})}
    engine = EngineConfig(epochs=epochs, seed=seed, fold=fold, max_seconds=max_seconds, lr_schedule="poly",
                          lr=cfg.learning_rate, grad_clip=GRAD_CLIP, out_dir=out, quiet=quiet or not dd.is_main(),
                          name=f"train {config} fold {fold}", identity=identity)
    result = fit(task, engine)
    if result.start_epoch >= epochs and (out / "model_final.pt").is_file() and (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    history = result.history
    summary = {"fold": fold, "config": config, "network": cfg.network, "network_provenance": provenance,
               "epochs_planned": epochs, "epochs_done": len(history),
               "stopped_by_time_budget": result.stopped_by_time_budget, "seed": seed,
               "train_cases": train_ids, "val_cases": val_ids, "parameters": count_parameters(result.model),
               "plan_sha256": plan.sha256(), "medsight_version": __version__, "torch_version": torch.__version__,
               "processes": dd.world_size(),
               "final_loss": history[-1]["loss"] if history else None,
               "final_val_dice": history[-1].get("val_dice") if history else None,
               "train_seconds_this_run": round(result.seconds, 1)}
    if init_record is not None:
        summary["init"] = init_record
    if result.energy:
        summary["energy"] = result.energy
    if dd.is_main():
        study = fold_mirror_study(result.model, ds, plan, cfg, val_ids) if study_mirroring else None
        if study is not None:
            summary["mirror_study"] = study
        lesions = fold_lesion_study(result.model, ds, plan, cfg, val_ids)
        if lesions is not None:  # the package fits its lesion referral rule on these (segmentation/lesion_study.py)
            summary["lesion_study"] = lesions
        save_checkpoint(out / "model_final.pt", {"model": result.model.state_dict(), "config": config, "fold": fold,
                                                  "summary": summary})
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    dd.barrier()
    return summary


def fold_mirror_study(model: torch.nn.Module, ds: SegDataset, plan: Plan, cfg: ConfigPlan,
                      val_ids: list[str], n_cases: int = STUDY_CASES) -> dict[str, Any] | None:
    """Dice and counted cost of every (window overlap, set of flips) on up to ``n_cases`` validation cases,
    predicted whole on the plan grid with the predictor's own sliding window and window batching
    (segmentation/tta_study.py; None without validation cases)."""
    from medsight.data.preprocess import preprocess_case
    from medsight.segmentation.predict import WINDOW_BATCH, plan_grid_probabilities
    from medsight.segmentation.tta_study import inference_study

    ids = sorted(val_ids)[:n_cases]
    if not ids:
        return None
    t, cpu = time.perf_counter(), time.process_time()
    cases = [(pre.image, pre.label) for pre in (preprocess_case(ds.case(c), plan, cfg) for c in ids)]
    forward = _eval_forward(model, plan, cfg)

    def probabilities(image: np.ndarray, overlap: float, combo: tuple[int, ...]) -> np.ndarray:
        return plan_grid_probabilities([forward], image, cfg, [], overlap, combos=[combo],
                                       window_batch=WINDOW_BATCH)[0].numpy()

    study = inference_study(probabilities, cases, cfg.mirror_axes, len(plan.labels), cfg.patch_size,
                            cfg.spatial_dims)
    study.update(seconds=round(time.perf_counter() - t, 1), cpu_seconds=round(time.process_time() - cpu, 1))
    log.info("inference study on %d validation cases (%.0f s): Dice gain by axis %s -> overlap %s, flips %s",
             study["n_cases"], study["seconds"], {a: round(g, 4) for a, g in study["gain_by_axis"].items()},
             study["chosen"]["overlap"], study["chosen"]["flips"])
    return study


def _eval_forward(model: torch.nn.Module, plan: Plan, cfg: ConfigPlan):  # noqa: ANN202 - a forward function
    """A CPU eval-mode copy of the trained network, run as ``predict`` runs it by default (PyTorch)."""
    from medsight.segmentation.runtime import choose_runtime

    net = copy.deepcopy(model).cpu().eval()
    channels = len(plan.channels) * (2 * cfg.context_slices + 1 if cfg.spatial_dims == 2 else 1)
    return choose_runtime(net, torch.randn(1, channels, *cfg.patch_size,
                                           generator=torch.Generator().manual_seed(0)), "torch")[0]


def fold_lesion_study(model: torch.nn.Module, ds: SegDataset, plan: Plan, cfg: ConfigPlan, val_ids: list[str],
                      n_cases: int = LESION_STUDY_CASES) -> dict[str, Any] | None:
    """Every predicted lesion of up to ``n_cases`` validation cases (one un-mirrored pass each, predict's
    post-processing) with its referral signals and whether it is a true lesion; None without lesion labels."""
    from medsight.data.preprocess import preprocess_case
    from medsight.segmentation.lesion_study import lesion_study
    from medsight.segmentation.predict import WINDOW_BATCH, plan_grid_probabilities

    ids = sorted(val_ids)[:n_cases]
    if not ids or not plan.postprocess.get("lesion_labels") or cfg.spatial_dims != 3:
        return None
    forward = _eval_forward(model, plan, cfg)
    cases = [(c, pre.image, pre.label) for c, pre in ((c, preprocess_case(ds.case(c), plan, cfg)) for c in ids)]
    study = lesion_study(lambda image: plan_grid_probabilities([forward], image, cfg, [], LESION_STUDY_OVERLAP,
                                                               window_batch=WINDOW_BATCH)[0].numpy(),
                         cases, cfg.spacing, plan.postprocess)
    if study is not None:
        log.info("validation lesions: %d of %d found, %d false positives on %d cases", study["tp"],
                 study["n_ref_lesions"], study["fp"], study["n_cases"])
    return study
