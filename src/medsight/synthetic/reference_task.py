"""A small, self-contained lesion-presence task on real brain anatomy, so the safety layer can be evaluated
(and its tests and benchmark run) even where the project's classifier or demo data are not installed.

Images are axial slices of the MNI ICBM152 2009a T1 template shipped inside the nilearn wheel (read from the
package file, no fetcher), with random rotation/scale, a per-site scanner profile (contrast gamma, bias field,
noise) and, in half the cases, a simulated lesion (a smooth bright blob inside the brain). Sites A and B are the
training sites; site C has its own profile and is never trained on. The model is a four-block CNN with a
dropout layer before the head, exposing the CLASSIFIER contract (``preprocess``, ``logits_and_features``,
``config``, ``model``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medsight.engine.loop import fit
from medsight.engine.task import EngineConfig, Task
from medsight.errors import InputNotFoundError
from medsight.image import Geometry, Image, Provenance

SIZE = 64
BATCH = 32
SITES = {  # gamma, bias-field strength, noise sigma (fraction of the brain's mean intensity)
    "site_A": (1.0, 0.10, 0.04),
    "site_B": (0.85, 0.15, 0.06),
    "site_C": (1.35, 0.30, 0.10),
}


@functools.cache
def _template() -> tuple[np.ndarray, np.ndarray]:
    """The MNI T1 at 2 mm (float, 0..1) and its brain mask, cropped to the head."""
    import nibabel as nib
    import nilearn

    path = Path(nilearn.__file__).parent / "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        raise InputNotFoundError("the MNI template is missing from the nilearn package; reinstall nilearn", path)
    t1 = np.asarray(nib.load(path).dataobj, dtype=np.float32)[::2, ::2, ::2]
    t1 /= np.percentile(t1, 99.5)
    mask = ndimage.binary_erosion(t1 > 0.35, iterations=2)
    return np.clip(t1, 0, 1.2), mask


def make_case(rng: np.random.Generator, site: str, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """One SIZE x SIZE slice (index order [i, j]) and its lesion mask."""
    t1, mask = _template()
    k = int(rng.integers(35, 60))
    img, m = t1[:, :, k], mask[:, :, k]
    angle, scale = rng.uniform(-12, 12), rng.uniform(0.9, 1.1)
    zoom = SIZE / max(img.shape) * scale
    img = ndimage.rotate(ndimage.zoom(img, zoom, order=1), angle, reshape=False, order=1)
    m = ndimage.rotate(ndimage.zoom(m.astype(float), zoom, order=1), angle, reshape=False, order=1) > 0.5
    img, m = _fit(img), _fit(m)
    les = np.zeros_like(m)
    if lesion and m.any():
        ii, jj = np.nonzero(ndimage.binary_erosion(m, iterations=4) if ndimage.binary_erosion(m, iterations=4).any() else m)
        c = int(rng.integers(len(ii)))
        r = rng.uniform(2.5, 6.0)
        gi, gj = np.mgrid[:SIZE, :SIZE]
        blob = np.exp(-(((gi - ii[c]) ** 2 + (gj - jj[c]) ** 2) / (2 * r**2)))
        img = img + rng.uniform(0.25, 0.6) * blob * m
        les = (blob > 0.5) & m
    gamma, bias, noise = SITES[site]
    gi, gj = np.mgrid[:SIZE, :SIZE] / SIZE
    field_ = 1 + bias * (np.sin(2 * np.pi * (gi * rng.uniform(0.3, 1) + rng.uniform())) * np.cos(np.pi * gj))
    img = np.clip(img, 0, None) ** gamma * field_
    img = img + rng.normal(0, noise, img.shape)
    return (img * 1000).astype(np.float32), les


def _fit(a: np.ndarray) -> np.ndarray:
    out = np.zeros((SIZE, SIZE), dtype=a.dtype)
    h, w = min(SIZE, a.shape[0]), min(SIZE, a.shape[1])
    oi, oj = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
    ti, tj = (SIZE - h) // 2, (SIZE - w) // 2
    out[ti:ti + h, tj:tj + w] = a[oi:oi + h, oj:oj + w]
    return out


def make_split(n: int, sites: tuple[str, ...], seed: int) -> tuple[list[Image], np.ndarray]:
    """``n`` Images spread over ``sites`` with half lesion-positive; labels shaped (n, 1)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for idx in range(n):
        site, lesion = sites[idx % len(sites)], bool((idx // len(sites)) % 2)
        arr, _ = make_case(rng, site, lesion)
        images.append(Image(arr, Geometry.identity(2, (2.0, 2.0)), Provenance(format="synthetic", modality="MR",
                                                                                body_part="brain",
                                                                                acquisition={"site": site})))
        labels.append([int(lesion)])
    return images, np.asarray(labels)


class SmallCNN(nn.Module):
    """Four conv blocks -> global average pool (the 64-d penultimate features) -> dropout -> one logit."""

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        chans = [1, 16, 32, 64, 64]
        blocks = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks += [nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(chans[-1], 1)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return self.head(self.dropout(f)), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


@dataclass
class ReferenceBundle:
    """The CLASSIFIER contract's shape: model, config, preprocess, logits_and_features."""

    model: SmallCNN
    config: dict[str, Any] = field(default_factory=lambda: {
        "labels": ["lesion"], "thresholds": {"lesion": 0.5}, "activation": "sigmoid", "spatial_dims": 2,
        "input_size": [SIZE, SIZE], "normalisation": "per-image z-score", "backbone": "SmallCNN"})

    def preprocess(self, image: Image) -> torch.Tensor:
        """Grey array -> resized to SIZE x SIZE -> per-image z-score, shape (1, SIZE, SIZE)."""
        a = np.asarray(image.array, dtype=np.float32)
        if image.is_multichannel:
            a = a.mean(axis=-1)
        x = torch.as_tensor(np.nan_to_num(a))[None, None]
        x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True,
                                            align_corners=False)[0]
        return (x - x.mean()) / (x.std() + 1e-6)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_features(x)


class ReferenceTask(Task):
    """The small CNN on in-memory slices: AdamW + one-cycle + BCE, random horizontal flips, no validation."""

    def __init__(self, bundle_preprocess: Any, images: list[Image], labels: np.ndarray) -> None:
        self.x = torch.stack([bundle_preprocess(im) for im in images])
        self.y = torch.as_tensor(labels, dtype=torch.float32).reshape(-1, 1)

    def build_model(self) -> nn.Module:
        return SmallCNN()

    def configure_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)

    def steps_per_epoch(self) -> int:
        return (len(self.x) + BATCH - 1) // BATCH

    def epoch_batches(self, epoch: int, rng: np.random.Generator):
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        for idx in torch.randperm(len(self.x), generator=gen).split(BATCH):
            xb = self.x[idx]
            if torch.rand((), generator=gen) < 0.5:
                xb = xb.flip(-1)
            yield xb, self.y[idx]

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(model(batch[0]), batch[1])

    def validate(self, model: nn.Module) -> dict[str, Any]:
        return {}


def train_reference(images: list[Image], labels: np.ndarray, epochs: int = 20, seed: int = 0,
                    quiet: bool = True) -> ReferenceBundle:
    """Train the small CNN with AdamW, a one-cycle learning rate (peak 1e-2) and BCE, deterministic given the seed.

    One-cycle converges reliably in 20 epochs (held-out accuracy 0.89-0.98 over seeds 0-2); a constant rate
    left some seeds near chance.
    """
    preprocess = ReferenceBundle(SmallCNN()).preprocess
    task = ReferenceTask(preprocess, images, labels)
    result = fit(task, EngineConfig(epochs=epochs, seed=seed, lr_schedule="onecycle", lr=1e-2, quiet=quiet,
                                    name="reference classifier"))
    return ReferenceBundle(result.model)
