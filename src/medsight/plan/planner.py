"""Fingerprint -> Plan, following nnU-Net's rules of thumb, with the reason for each choice written down.

- Target spacing: the median spacing; for strongly anisotropic data (max/min > 3) the low-resolution axis takes
  the 10th percentile instead, so thin-slice detail is not thrown away.
- Normalisation: CT is clipped to the foreground 0.5-99.5 percentiles and z-scored with the foreground mean and
  std (intensities mean the same in every scan); every other modality is z-scored per case.
- Topology: an axis is pooled while its feature map stays >= 4 voxels and its spacing is within 2x of the finest;
  kernels are 1 along axes still too coarse (anisotropy), at most 5 pooling steps.
- Patch and batch: start from the median resampled shape and shrink the largest axis (relative to the median
  shape) until the estimated training memory fits ``memory_gb``; batch 2 for 3D, larger for 2D while it fits.
- Width: 32 base filters (capped at 320) when memory allows, fewer on small budgets (CPU demo, laptops).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np

from medsight.errors import ConfigError
from medsight.files import sha256_bytes
from medsight.plan.plan import ConfigPlan, Plan

BYTES_PER_ACTIVATION = 4 * 12  # float32 x (conv, norm, activation, their gradients and the decoder's share)
MAX_POOLS = 5
MIN_FEATURE = 4
CONTEXT_SLICES = 2  # 2.5D: five slices in, the middle one's labels out
ANISOTROPY_2D = 3.0
MIN_SLICES_3D = 16
LESION_PATCH_SHARE = 1.0  # of the foreground-centred patches, the share centred on a lesion class
LESION_OVERSAMPLE = 0.5  # foreground-centred share of all patches when lesion labels exist (nnU-Net: 0.33)
MIN_LESION_VOXELS = 2  # a one-voxel component is more often noise than a lesion the network can resolve


def fingerprint_hash(fp: dict[str, Any]) -> str:
    """The SHA-256 of a dataset fingerprint (``medsight.data.fingerprint``) as canonical JSON, stored in the plan."""
    return sha256_bytes(json.dumps(fp, sort_keys=True).encode())


def make_plan(fp: dict[str, Any], memory_gb: float = 8.0, base_filters: int | None = None,
              epochs: int = 100, iterations_per_epoch: int = 50, network: str = "dynunet") -> Plan:
    """Deterministic: the same fingerprint and options always give the same plan (and plan hash)."""
    if memory_gb <= 0:
        raise ConfigError(f"--memory-gb must be positive, got {memory_gb}")
    reasons: list[str] = []
    spacings = np.asarray(fp["spacings"], dtype=float)
    target = np.median(spacings, axis=0)
    reasons.append(f"target spacing {_fmt(target)} mm = median spacing over {len(spacings)} cases")
    if target.max() / target.min() > 3:
        low = int(np.argmax(target))
        target[low] = float(np.percentile(spacings[:, low], 10))
        reasons.append(f"axis {low} is > 3x coarser than the finest: uses its 10th-percentile spacing {target[low]:.3g}")
    shapes = np.asarray(fp["shapes"], dtype=float)
    resampled = np.median(shapes * spacings / target, axis=0)
    median_shape = [int(round(v)) for v in resampled]
    reasons.append(f"median shape after resampling {median_shape}")

    norm: dict[str, dict[str, Any]] = {}
    for ch, stats in fp["intensity"].items():
        if str(stats["name"]).upper() == "CT":
            norm[ch] = {"scheme": "ct", "clip": [stats["p00_5"], stats["p99_5"]], "mean": stats["mean"],
                        "std": max(stats["std"], 1e-6)}
            reasons.append(f"channel {ch} is CT: clip to foreground [{stats['p00_5']:.4g}, {stats['p99_5']:.4g}] "
                           "and z-score with the foreground mean/std")
        else:
            norm[ch] = {"scheme": "zscore_case"}
            reasons.append(f"channel {ch} ({stats['name']}) is not CT: per-case z-score (arbitrary scanner units)")

    if base_filters is None:
        base_filters = 32 if memory_gb >= 8 else 16 if memory_gb >= 2 else 8
        reasons.append(f"{base_filters} base filters for a {memory_gb:g} GB budget (32 from 8 GB up, as nnU-Net)")
    configs = {
        "3d": _config("3d", target, median_shape, memory_gb, base_filters, 320, 3, epochs, iterations_per_epoch,
                      network),
        "2d": _config("2d", target[:2], median_shape[:2], memory_gb, base_filters, 512, 2, epochs,
                      iterations_per_epoch, network),
    }
    why_25d = f"2.5D: the 2D network sees {CONTEXT_SLICES} neighbouring slices on each side as extra channels"
    configs["2.5d"] = replace(configs["2d"], name="2.5d", context_slices=CONTEXT_SLICES,
                              reasons=configs["2d"].reasons + [why_25d])
    default, why = choose_configuration(target, median_shape)
    reasons.append(f"default configuration {default}: {why}")
    post = lesion_postprocess(fp, target, reasons)
    if post:
        for cfg in configs.values():
            lesion_sampling(cfg, fp, post)
    return Plan(dataset=fp["dataset"], fingerprint_sha256=fingerprint_hash(fp), channels=dict(fp["channels"]),
                labels=dict(fp["labels"]), normalisation=norm, target_spacing=[float(v) for v in target],
                configurations=configs, memory_gb=float(memory_gb), reasons=reasons, postprocess=post,
                default_configuration=default)


def choose_configuration(target: np.ndarray, median_shape: list[int]) -> tuple[str, str]:
    """3D for roughly isotropic volumes; 2.5D when slices are thick (> 3x the in-plane spacing) or few (< 16): a
    3D kernel then mixes tissue far apart along z, while neighbouring slices as channels keep that context cheaply
    (nnU-Net picks 2D vs 3D from cross-validation; without that budget the choice follows the geometry)."""
    ratio = float(target[2] / min(target[0], target[1]))
    if ratio > ANISOTROPY_2D or median_shape[2] < MIN_SLICES_3D:
        return "2.5d", (f"slice spacing {ratio:.2g}x the in-plane spacing, {median_shape[2]} slices (2.5D above "
                        f"{ANISOTROPY_2D:g}x or under {MIN_SLICES_3D} slices)")
    return "3d", (f"slice spacing {ratio:.2g}x the in-plane spacing and {median_shape[2]} slices: 3D context is "
                  f"worth its cost (2.5D above {ANISOTROPY_2D:g}x or under {MIN_SLICES_3D} slices)")


def lesion_sampling(cfg: ConfigPlan, fp: dict[str, Any], post: dict[str, Any]) -> None:
    """Small rare lesions need their own share of patches and of the loss: half of the patches are centred on a
    lesion voxel (class drawn first, then a case holding it), the other half are drawn anywhere, so that the
    network also sees what lies far from any lesion or tissue (with every patch foreground-centred it never saw the
    edges of the volume: tissue Dice 0.74 on whole validation cases, 25 false lesions per case); cross-entropy is
    weighted per batch by inverse class frequency (capped at 100)."""
    lesions = set(post["lesion_labels"])
    others = [str(v) for v in fp["labels"].values() if int(v) != 0 and str(v) not in lesions]
    share = {c: LESION_PATCH_SHARE / len(lesions) for c in lesions}
    share.update({c: (1.0 - LESION_PATCH_SHARE) / len(others) for c in others} if others else {})
    cfg.class_sampling = {c: round(v, 4) for c, v in sorted(share.items())}
    cfg.foreground_oversample = max(cfg.foreground_oversample, LESION_OVERSAMPLE)
    cfg.reasons.append(f"lesion labels present: {cfg.foreground_oversample:g} of patches foreground-centred, class "
                       f"drawn first with shares {cfg.class_sampling} (a lesion in few cases and voxels is otherwise "
                       "almost never at a patch centre; tissue classes fill the random patches anyway)")
    cfg.loss = "dice_inverse_ce"
    cfg.reasons.append("lesion labels present: Dice + cross-entropy weighted by inverse class frequency (a lesion of "
                       "~0.2% of a patch's voxels has ~0.2% of plain cross-entropy's voice). On the demo data the "
                       "square-root weights left the lesion class at 0 after 150 iterations; inverse weights found "
                       "it within 30 (docs/benchmarks.md 'lesions')")


def lesion_postprocess(fp: dict[str, Any], target: np.ndarray, reasons: list[str]) -> dict[str, Any]:
    """Which labels are lesions (measured in lesions.csv) and the smallest component kept: MIN_LESION_VOXELS voxels
    at the target spacing, or half the smallest training lesion when the fingerprint knows a larger one."""
    from medsight.metrics.lesions import is_lesion_name

    named = {int(v): str(k) for k, v in fp["labels"].items() if int(v) != 0 and is_lesion_name(str(k))}
    if not named:  # no label named like a lesion: nothing is measured as lesions
        reasons.append("no label is named lesion/tumour/nodule/metastasis: no lesion table")
        return {}
    voxel_ml = float(np.prod(target)) / 1000.0
    floor = MIN_LESION_VOXELS * voxel_ml
    smallest = [float(fp.get("class_volume_ml", {}).get(n, {}).get("min", 0.0)) for n in named.values()]
    known = [v for v in smallest if v > 0]
    min_ml = max(floor, 0.5 * min(known)) if known else floor
    reasons.append(f"lesion labels {named}: components under {min_ml:.4g} ml dropped ({MIN_LESION_VOXELS} voxels at "
                   "the target spacing, or half the smallest training lesion if larger)")
    return {"lesion_labels": {str(k): v for k, v in named.items()}, "min_lesion_volume_ml": round(min_ml, 6),
            "refer_mean_probability_below": 0.6, "refer_mean_entropy_above": 0.6}


def _topology(patch: list[int], spacing: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """nnU-Net-style kernels and strides for a patch; first level has stride 1."""
    size = np.asarray(patch, dtype=float)
    sp = np.asarray(spacing, dtype=float).copy()
    kernels = [[3 if s <= 2 * sp.min() else 1 for s in sp]]
    strides = [[1] * len(sp)]
    for _ in range(MAX_POOLS):
        pool = [(size[a] / 2 >= MIN_FEATURE) and (sp[a] <= 2 * sp.min()) for a in range(len(sp))]
        if not any(pool):
            break
        strides.append([2 if p else 1 for p in pool])
        size = np.where(pool, size / 2, size)
        sp = np.where(pool, sp * 2, sp)
        kernels.append([3 if s <= 2 * sp.min() else 1 for s in sp])
    return kernels, strides


def _divisor(strides: list[list[int]]) -> np.ndarray:
    return np.prod(np.asarray(strides), axis=0)


def _memory_gb(patch: list[int], batch: int, filters: list[int], strides: list[list[int]]) -> float:
    voxels = float(np.prod(patch))
    total = 0.0
    for f, s in zip(filters, strides):
        voxels /= float(np.prod(s))
        total += f * voxels
    return batch * total * BYTES_PER_ACTIVATION / 1e9 * 2  # encoder + decoder


def _config(name: str, spacing: np.ndarray, median_shape: list[int], memory_gb: float, base: int, cap: int,
            dims: int, epochs: int, iters: int, network: str) -> ConfigPlan:
    reasons = []
    patch = [int(v) for v in median_shape]
    batch = 2
    for _ in range(200):
        kernels, strides = _topology(patch, spacing)
        div = _divisor(strides)
        patch = [int(math.ceil(p / d) * d) for p, d in zip(patch, div)]
        filters = [min(base * 2 ** i, cap) for i in range(len(strides))]
        mem = _memory_gb(patch, batch, filters, strides)
        if mem <= memory_gb or max(patch) <= 2 * MIN_FEATURE:
            break
        ratio = np.asarray(patch) / np.asarray(median_shape)
        axis = int(np.argmax(ratio))
        patch[axis] = max(int(patch[axis] - div[axis]), int(div[axis]))
    reasons.append(f"patch {patch} with batch {batch}: est. {mem:.2f} GB of {memory_gb:g} GB "
                   f"(largest patch near the median shape {median_shape} that fits)")
    if dims == 2:
        while batch < 32 and _memory_gb(patch, batch * 2, filters, strides) <= memory_gb:
            batch *= 2
        mem = _memory_gb(patch, batch, filters, strides)
        reasons.append(f"2D batch raised to {batch} while memory allows")
    reasons.append(f"{len(strides) - 1} pooling steps, strides {strides}; filters {filters}")
    mirror = list(range(dims))
    return ConfigPlan(name=name, spatial_dims=dims, spacing=[float(v) for v in spacing],
                      median_shape=[int(v) for v in median_shape], patch_size=patch, batch_size=batch,
                      network=network, filters=filters, kernels=kernels, strides=strides, deep_supervision=True,
                      epochs=epochs, iterations_per_epoch=iters, mirror_axes=mirror,
                      estimated_memory_gb=round(mem, 3), reasons=reasons)


def _fmt(v: np.ndarray) -> str:
    return "x".join(f"{x:.3g}" for x in v)
