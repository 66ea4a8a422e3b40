"""What one site trains and evaluates: its own manifest rows only, a small classifier, held-out AUC and ECE.

The site reads the rows of the shared-format manifest whose ``site`` column is its own name (a hospital keeps
only its own rows anyway; filtering makes a pooled demo manifest usable too). Rows with ``split == test`` are its
held-out cases; without a split column a patient-level hold-out is drawn. The network is deliberately small
(two conv blocks) by default: federated rounds send it over the wire every round. Any medsight backbone can be
named instead (``backbone``; the demo sites use the demo classifier's evidence-map ResNet). Flower starts a fresh
process for every message a site handles, so MONAI is imported only when such a backbone is asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.data.manifest import read_classification_manifest
from medsight.engine.task import Task
from medsight.errors import DatasetError
from medsight.io import read_image
from medsight.metrics.calibration import expected_calibration_error
from medsight.metrics.classification import roc_auc


def load_images(paths: list[Path], size: int) -> torch.Tensor:
    """(N, 1, size, size) grey images, bilinear-resized and standardised per image.

    Mean/std, not the classifiers' median/IQR: on the demo sites (class-balanced batches, no augmentation) the
    evidence-map ResNet found the lesions after ~650 pooled steps with mean/std and had not after 1,100 with
    median/IQR (one seed each; docs/federated.md)."""
    out = []
    for p in paths:
        img = read_image(p)
        a = np.asarray(img.array, dtype=np.float32)
        a = a.mean(axis=-1) if img.is_multichannel else a
        a = np.nan_to_num(a.reshape(a.shape[:2]) if a.ndim == 3 and a.shape[-1] == 1 else a)
        if a.ndim != 2:
            raise DatasetError(f"federated classification takes 2D images; {p} has shape {a.shape}")
        x = nn.functional.interpolate(torch.as_tensor(a)[None, None], size=(size, size), mode="bilinear",
                                      align_corners=False, antialias=True)[0]
        out.append((x - x.mean()) / max(float(x.std()), 1e-6))
    return torch.stack(out)


def small_classifier(width: int = 8) -> nn.Module:
    """Two conv blocks and a linear head: one logit (binary task)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(2 * width, 1))


SMALL = "small"


def site_model(backbone: str = SMALL, size: int = 32) -> nn.Module:
    """The federation's network: the small classifier, or a medsight backbone by name (one logit, 2D, grey)."""
    if backbone == SMALL:
        return small_classifier()
    from medsight.nets.backbones import build_classifier

    return build_classifier(backbone, 2, 1, 1, (size, size))[0]


class SiteTask(Task):
    """A binary classifier trained on one site's training rows and checked on its held-out rows.

    ``label`` names the manifest's 0/1 column to learn (needed when it has several); ``backbone`` and ``size``
    choose the network and the square input size, the same at every site and on the server; ``balanced`` draws
    positives and negatives equally often (a rare finding is otherwise seen in few batches)."""

    def __init__(self, manifest: str | Path, site: str, size: int = 32, batch_size: int = 16, lr: float = 3e-3,
                 holdout: float = 0.3, seed: int = 0, label: str | None = None, backbone: str = SMALL,
                 balanced: bool = False) -> None:
        self.manifest, self.site, self.size, self.balanced = Path(manifest), site, size, balanced
        self.batch, self.lr, self.holdout, self.seed = batch_size, lr, holdout, seed
        self.label, self.backbone = label or None, backbone
        self._data: tuple[torch.Tensor, ...] | None = None

    def setup(self) -> None:
        if self._data is not None:
            return
        try:
            m = read_classification_manifest(self.manifest, labels=[self.label] if self.label else None,
                                             task="binary")
        except DatasetError as err:
            if self.label or "label" not in str(err).lower():  # the hint is for a manifest with several labels
                raise
            raise DatasetError(f"{err}; for federated training name the column to learn (--label)") from err
        rows = np.flatnonzero(m.sites == self.site)
        if rows.size == 0:
            raise DatasetError(f"no row of site {self.site!r} (sites: {', '.join(sorted(set(m.sites)))}); "
                               "check --site / the node config", self.manifest)
        y = m.y[rows, 0].astype(np.float32)
        if "split" in m.table.columns:
            held = m.table["split"].astype(str).to_numpy()[rows] == "test"
        else:
            from medsight.data.splits import patient_holdout  # sklearn: only when there is no split column

            held = patient_holdout(m.patients[rows], y.astype(int), self.holdout, self.seed)
        if held.all() or not held.any():
            raise DatasetError(f"site {self.site!r} needs both training and held-out rows", self.manifest)
        x = load_images([m.image_paths[i] for i in rows], self.size)
        yt = torch.as_tensor(y)[:, None]
        h = torch.as_tensor(held)
        self._data = (x[~h], yt[~h], x[h], yt[h])

    @property
    def n_train(self) -> int:
        self.setup()
        return int(self._data[0].shape[0])

    def train_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of the training rows, for DP-SGD's Poisson batches (federated/dpsgd.py)."""
        self.setup()
        return self._data[0], self._data[1]

    def build_model(self) -> nn.Module:
        return site_model(self.backbone, self.size)

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=self.lr)

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        x, y = self._data[0], self._data[1]
        if self.balanced:  # each class drawn equally often (with replacement), as the demo classifier samples
            pos = y[:, 0].numpy() >= 0.5
            w = np.where(pos, 0.5 / max(pos.sum(), 1), 0.5 / max((~pos).sum(), 1)) if 0 < pos.sum() < len(pos) \
                else np.full(len(pos), 1.0 / len(pos))
            order = torch.as_tensor(rng.choice(len(x), size=len(x), replace=True, p=w / w.sum()))
        else:
            order = torch.as_tensor(rng.permutation(len(x)))
        for i in range(0, len(x), self.batch):
            idx = order[i:i + self.batch]
            yield x[idx], y[idx]

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(model(batch[0]), batch[1])

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Held-out AUC, ECE (15 equal-width bins), accuracy at 0.5 and log loss of ``model``."""
        self.setup()
        x, y = self._data[2], self._data[3]
        model.eval()
        with torch.no_grad():
            z = model(x)
        p = torch.sigmoid(z).numpy()[:, 0]
        t = y.numpy()[:, 0]
        auc = roc_auc(t, p) if 0 < t.sum() < len(t) else float("nan")
        return {"auc": float(auc), "ece": float(expected_calibration_error(t, p)),
                "accuracy": float(((p >= 0.5) == (t >= 0.5)).mean()),
                "log_loss": float(nn.functional.binary_cross_entropy_with_logits(z, y)), "n": int(len(t))}


class ProxTask(Task):
    """FedProx: the wrapped task's loss plus (mu / 2) * ||w - w_global||^2, keeping local steps near the global
    model when sites' data differ (Li et al. 2020). Everything else is the wrapped task's."""

    def __init__(self, inner: Task, global_weights: dict[str, torch.Tensor], mu: float) -> None:
        self.inner, self.mu = inner, float(mu)
        self.anchor = {k: v.detach().clone() for k, v in global_weights.items()}

    def setup(self) -> None:
        self.inner.setup()

    def build_model(self) -> nn.Module:
        return self.inner.build_model()

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return self.inner.configure_optimizer(model)

    def epoch_batches(self, epoch: int, rng: np.random.Generator) -> Iterable[Any]:
        return self.inner.epoch_batches(epoch, rng)

    def batch_size(self, batch: Any) -> int:
        return self.inner.batch_size(batch)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        prox = sum(((p - self.anchor[n]) ** 2).sum() for n, p in model.named_parameters())
        return self.inner.loss(model, batch) + 0.5 * self.mu * prox

    def validate(self, model: nn.Module) -> dict[str, Any]:
        return self.inner.validate(model)
