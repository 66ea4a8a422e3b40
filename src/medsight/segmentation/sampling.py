"""Patch sampling for segmentation training: preprocessed cases held in memory, foreground-oversampled patches.

Every draw comes from the ``np.random.Generator`` the caller passes (one per epoch), so a resumed run draws the same
patches as one that never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medsight.data.dataset import SegDataset
from medsight.data.preprocess import Preprocessed, preprocess_case
from medsight.plan.plan import ConfigPlan, Plan
from medsight.segmentation.augment import augment

LOCATIONS_PER_CLASS = 2000


@dataclass
class Sample:
    image: np.ndarray
    label: np.ndarray
    fg: dict[int, np.ndarray]  # class -> sampled voxel locations


def prepare(ds: SegDataset, ids: list[str], plan: Plan, cfg: ConfigPlan, seed: int, quiet: bool) -> list[Sample]:
    out = []
    items = ids if quiet else tqdm_bar(ids, "preprocess")
    for n, cid in enumerate(items):
        pre: Preprocessed = preprocess_case(ds.case(cid), plan, cfg)
        rng = np.random.default_rng([seed, 5, n])
        fg = {}
        for c in range(1, len(plan.labels)):
            loc = np.argwhere(pre.label == c)
            if len(loc) > LOCATIONS_PER_CLASS:
                loc = loc[rng.choice(len(loc), LOCATIONS_PER_CLASS, replace=False)]
            if len(loc):
                fg[c] = loc
        out.append(Sample(pre.image, pre.label, fg))
    return out


def tqdm_bar(it, desc: str, **kw):
    from tqdm import tqdm

    return tqdm(it, desc=desc, leave=False, **kw)


def context_indices(z: int, context: int, n: int) -> list[int]:
    """Slices z-context..z+context, clamped to the volume (the edge slice repeats)."""
    return [min(max(z + d, 0), n - 1) for d in range(-context, context + 1)]


def slice_stack(slices: torch.Tensor, context: int) -> torch.Tensor:
    """(Z, C, X, Y) slices -> (Z, C * (2 context + 1), X, Y): each slice with its neighbours as channels, in the
    order ``crop`` gives them in training (slice-major)."""
    n = slices.shape[0]
    return torch.cat([slices[context_indices(z, context, n)].reshape(1, -1, *slices.shape[2:]) for z in range(n)])


def crop(sample: Sample, center: np.ndarray, patch: list[int], dims: int, context: int = 0
         ) -> tuple[np.ndarray, np.ndarray]:
    """Patch of ``patch`` size centred at ``center`` (3D index); 2D takes the slice ``center[2]`` (2.5D also its
    ``context`` neighbours on each side, edge slices repeated, as channels: slice-major). Zero-padded."""
    img, lab = sample.image, sample.label
    if dims == 2:
        z = int(center[2])
        img, lab = np.concatenate([img[..., k] for k in context_indices(z, context, img.shape[-1])]), lab[..., z]
        center = center[:2]
    shape = np.asarray(lab.shape)
    p = np.asarray(patch)
    lo = np.asarray(center) - p // 2
    lo = np.clip(lo, np.minimum(0, shape - p), np.maximum(0, shape - p))
    hi = lo + p
    src = tuple(slice(max(0, int(a)), min(int(s), int(b))) for a, b, s in zip(lo, hi, shape))
    dst = tuple(slice(int(s.start - a), int(s.stop - a)) for s, a in zip(src, lo))
    out_img = np.zeros((img.shape[0], *patch), dtype=np.float32)
    out_lab = np.zeros(tuple(patch), dtype=np.int16)
    out_img[(slice(None),) + dst] = img[(slice(None),) + src]
    out_lab[dst] = lab[src]
    return out_img, out_lab


def class_first_center(samples: list[Sample], cfg: ConfigPlan, rng: np.random.Generator
                       ) -> tuple[Sample, np.ndarray] | None:
    """A foreground-centred draw by the plan's ``class_sampling``: the class first (by its planned share), then a
    case holding it, then one of its voxels, so a lesion present in few cases and few voxels still gets its share
    of patches. (nnU-Net's rule, used when the plan has no ``class_sampling``, draws the case first and then one
    of its classes uniformly: a lesion in 40% of cases gets 40% of its nominal share.)"""
    weights = {int(c): float(w) for c, w in cfg.class_sampling.items()
               if float(w) > 0 and any(int(c) in s.fg for s in samples)}
    if not weights:
        return None
    classes = sorted(weights)
    p = np.asarray([weights[c] for c in classes])
    c = classes[int(rng.choice(len(classes), p=p / p.sum()))]
    holders = [s for s in samples if c in s.fg]
    s = holders[int(rng.integers(len(holders)))]
    return s, s.fg[c][int(rng.integers(len(s.fg[c])))]


def batch(samples: list[Sample], cfg: ConfigPlan, rng: np.random.Generator, do_augment: bool = True
           ) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labs = [], []
    n_forced = max(1, int(round(cfg.batch_size * cfg.foreground_oversample)))
    for b in range(cfg.batch_size):
        forced = b >= cfg.batch_size - n_forced
        drawn = class_first_center(samples, cfg, rng) if forced and cfg.class_sampling else None
        if drawn is not None:
            s, center = drawn
        else:
            s = samples[int(rng.integers(len(samples)))]
            if forced and s.fg:
                classes = sorted(s.fg)
                locs = s.fg[classes[int(rng.integers(len(classes)))]]
                center = locs[int(rng.integers(len(locs)))]
            else:
                center = np.array([int(rng.integers(n)) for n in s.label.shape])
        img, lab = crop(s, center, cfg.patch_size, cfg.spatial_dims, cfg.context_slices)
        if do_augment:
            img, lab = augment(img, lab, rng)
        imgs.append(img)
        labs.append(lab)
    return torch.from_numpy(np.stack(imgs)), torch.from_numpy(np.stack(labs)[:, None].astype(np.int64))
