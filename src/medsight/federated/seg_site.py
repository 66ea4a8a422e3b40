"""One site's segmentation task in a federation: its own cases of a shared-layout dataset, the agreed plan.

Every site and the server build the same network from the plan that travels in the run config (dataset-level
settings: spacing, patch, network; no image). The site reads only the cases whose manifest ``site`` is its own
name, trains through the plan's ``SegTask`` (patches, augmentation, loss as in ``medsight train``) and evaluates
the global model on its held-out cases (``split == test`` in the manifest, else a patient-level hold-out): whole
cases predicted on the plan's grid without mirroring, hard Dice per foreground class (mean over the cases where
the class is present in the reference or the prediction) and the top-label ECE over voxels.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.data.dataset import SegDataset, load_dataset, validate
from medsight.data.preprocess import preprocess_case
from medsight.engine.task import Task
from medsight.errors import DatasetError
from medsight.metrics.calibration import expected_calibration_error
from medsight.nets.segmentation import build_model
from medsight.plan.plan import Plan

EVAL_CASES = 8  # at most this many held-out cases are predicted each round (sorted, the same every round)


def dataset_root(path: str | Path) -> Path:
    """A site names its dataset folder, or its dataset.json / manifest.csv inside it."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def segmentation_model(plan: Plan, configuration: str) -> nn.Module:
    """The federation's network: the plan's configuration, as ``medsight train`` builds it."""
    from medsight.segmentation.lesion_head import uses_lesion_head

    cfg = plan.config(configuration)
    return build_model(cfg, len(plan.channels), len(plan.labels), lesion_head=uses_lesion_head(cfg.loss))


def _site_cases(ds: SegDataset, site: str, holdout: float, seed: int) -> tuple[list[str], list[str]]:
    mine = [c for c in ds.cases if c.site == site]
    if not mine:
        raise DatasetError(f"no case of site {site!r} (sites: {', '.join(sorted({c.site for c in ds.cases}))}); "
                           "check the site names in manifest.csv and the node config", ds.root)
    if any(c.attrs.get("split") for c in mine):
        held = np.array([c.attrs.get("split", "").strip() == "test" for c in mine])
    else:
        from medsight.data.splits import patient_holdout  # sklearn: only when there is no split column

        held = patient_holdout(np.array([c.patient_id for c in mine]), np.zeros(len(mine), int), holdout, seed)
    if held.all() or not held.any():
        raise DatasetError(f"site {site!r} needs both training and held-out cases", ds.root)
    ids = [c.case_id for c in mine]
    return [i for i, h in zip(ids, held) if not h], sorted(i for i, h in zip(ids, held) if h)


class SegSiteTask(Task):
    """The plan's segmentation task on one site's training cases, evaluated on its held-out cases."""

    def __init__(self, dataset: str | Path, site: str, plan: Plan, configuration: str, seed: int = 0,
                 holdout: float = 0.3, eval_cases: int = EVAL_CASES) -> None:
        self.root, self.site, self.plan, self.configuration = dataset_root(dataset), site, plan, configuration
        self.cfg = plan.config(configuration)
        self.seed, self.holdout, self.eval_cases = seed, holdout, eval_cases
        self.inner: Task | None = None
        self.held: list[str] = []
        self.ds: SegDataset | None = None

    def setup(self) -> None:
        if self.inner is not None:
            return
        from medsight.segmentation.train import SegTask  # the trainer's imports (MONAI) only in a site process

        ds = load_dataset(self.root)
        train, held = _site_cases(ds, self.site, self.holdout, self.seed)
        self.ds = ds.subset(train + held)
        validate(self.ds)  # a bad case stops the site before it trains, naming the case
        self.held = held[:self.eval_cases]
        inner = SegTask(ds.subset(train), self.plan, self.cfg, train, [], self.seed, quiet=True)
        inner.setup()
        self.inner = inner

    @property
    def n_train(self) -> int:
        self.setup()
        return len(self.inner.train)

    def build_model(self) -> nn.Module:
        return segmentation_model(self.plan, self.configuration)

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.inner.configure_optimizer(model)

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        return self.inner.epoch_batches(epoch, rng)

    def steps_per_epoch(self) -> int | None:
        return self.inner.steps_per_epoch()

    def batch_size(self, batch: Any) -> int:
        return int(batch[0].shape[0])

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.inner.loss(model, batch)

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Per-class hard Dice and voxel top-label ECE of ``model`` on the held-out cases (plan grid)."""
        from medsight.metrics.segmentation import dice as mask_dice
        from medsight.segmentation.predict import plan_grid_probabilities

        self.setup()
        model.eval()
        names = {v: k for k, v in self.plan.labels.items()}
        dice: dict[int, list[float]] = {c: [] for c in range(1, len(self.plan.labels))}
        conf, right = [], []
        for cid in self.held:
            pre = preprocess_case(self.ds.case(cid), self.plan, self.cfg)
            prob, _ = plan_grid_probabilities([model], pre.image, self.cfg, [])
            p = prob.numpy()
            pred, ref = p.argmax(0), pre.label
            for c in dice:
                a, b = pred == c, ref == c
                if a.any() or b.any():  # a class absent from both says nothing about this case
                    dice[c].append(mask_dice(a, b))
            conf.append(p.max(0).ravel())
            right.append((pred == ref).ravel())
        out: dict[str, Any] = {f"dice_{names[c]}": float(np.mean(v)) if v else float("nan") for c, v in dice.items()}
        per_class = [v for v in out.values() if np.isfinite(v)]
        out["dice"] = float(np.mean(per_class)) if per_class else float("nan")
        out["ece"] = expected_calibration_error(np.concatenate(right).astype(float), np.concatenate(conf))
        out["n"] = len(self.held)
        return out
