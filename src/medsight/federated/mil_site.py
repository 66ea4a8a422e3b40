"""One site's slide-level MIL task in a federation: its own labelled slides' stored tile features.

The site reads its label CSV (``slide_id``, ``label``, optional ``patient_id``, ``site`` and ``split``; rows of
other sites are ignored) and ``<features>/<slide_id>/features.npz`` made by ``medsight wsi features`` with the
encoder every site agreed on. It trains the named MIL model (``abmil`` by default) one bag per step through the
engine, as ``medsight train-mil`` does, and evaluates the global model on its held-out slides (``split == test``,
else a patient-level hold-out): AUC, ECE, accuracy and log loss per slide.

The model standardises features with stored statistics. The server starts them at zero mean and unit spread; in
the first round each site puts in its own training statistics, which FedAvg then averages. Under DP the site does
not: the statistics would leave the site without clipping or noise.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.engine.task import Task
from medsight.errors import DatasetError
from medsight.metrics.calibration import expected_calibration_error
from medsight.metrics.classification import roc_auc

DEFAULT_MIL = "abmil"


def mil_model(name: str, feature_dim: int) -> nn.Module:
    """The federation's MIL network; every site and the server build it from the run config alone."""
    from medsight.nets.mil import load_mil

    if feature_dim < 1:
        raise DatasetError(f"MIL federation needs the features' dimension (feature-dim), got {feature_dim}")
    return load_mil(name)(feature_dim)


class MilSiteTask(Task):
    """Slide-level MIL on one site's training slides, evaluated on its held-out slides."""

    def __init__(self, labels_csv: str | Path, site: str, features_dir: str | Path, model_name: str = DEFAULT_MIL,
                 feature_dim: int = 0, seed: int = 0, holdout: float = 0.3, lr: float = 1e-3) -> None:
        self.labels_csv, self.site, self.features_dir = Path(labels_csv), site, Path(features_dir)
        self.model_name, self.feature_dim, self.seed, self.holdout = model_name, feature_dim, seed, holdout
        self.lr = lr
        self.inner: Any = None

    def setup(self) -> None:
        if self.inner is not None:
            return
        from medsight.pathology.mil_train import MILTask, bags_of, patient_split, read_labels

        rows = read_labels(self.labels_csv)
        if any(r.get("site") for r in rows):
            rows = [r for r in rows if (r.get("site") or "").strip() == self.site]
        if not rows:
            raise DatasetError(f"no slide of site {self.site!r}", self.labels_csv)
        bags = bags_of(rows, self.features_dir)
        dims = {int(b.features.shape[1]) for b in bags}
        if dims != {self.feature_dim}:
            raise DatasetError(f"this site's features have dimension {sorted(dims)}, the federation's model takes "
                               f"{self.feature_dim}; extract them with the agreed encoder", self.features_dir)
        if any(r.get("split") for r in rows):
            test = {r["slide_id"] for r in rows if r.get("split", "").strip() == "test"}
            train, held = [b for b in bags if b.slide_id not in test], [b for b in bags if b.slide_id in test]
            if not held or len({b.label for b in train}) < 2:
                raise DatasetError(f"site {self.site!r} needs held-out slides and both classes in training",
                                   self.labels_csv)
        else:
            train, held = patient_split(bags, self.holdout, self.seed)
        self.inner = MILTask(self.model_name, self.feature_dim, train, held, self.lr)

    @property
    def n_train(self) -> int:
        self.setup()
        return len(self.inner.train)

    def build_model(self) -> nn.Module:
        return mil_model(self.model_name, self.feature_dim)

    def adapt_global(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """First round (the server's untouched standardiser): put in this site's training statistics."""
        if "proj.mu" not in weights or weights["proj.mu"].any() or not torch.all(weights["proj.sigma"] == 1):
            return weights
        self.setup()
        feats = torch.cat([b.features for b in self.inner.train])
        return {**weights, "proj.mu": feats.mean(0), "proj.sigma": feats.std(0).clamp_min(1e-3)}

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.inner.configure_optimizer(model)

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        return self.inner.epoch_batches(epoch, rng)

    def batch_size(self, batch: Any) -> int:
        return 1

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.inner.loss(model, batch)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Held-out AUC, ECE (15 equal-width bins), accuracy at 0.5 and log loss, per slide."""
        self.setup()
        model.eval()
        z = np.array([float(model(b.features)["logit"]) for b in self.inner.val])
        y = np.array([float(b.label) for b in self.inner.val])
        p = 1.0 / (1.0 + np.exp(-z))
        return {"auc": float(roc_auc(y, p)) if 0 < y.sum() < len(y) else float("nan"),
                "ece": float(expected_calibration_error(y, p)), "accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()),
                "log_loss": float(np.mean(np.logaddexp(0, z) - y * z)), "n": int(len(y))}
