"""Dice + cross-entropy (MONAI's DiceCELoss) with nnU-Net-style deep-supervision weighting.

Dice is over the foreground classes only (nnU-Net's ``do_bg=False``): the background's Dice is near 1 from the
first iterations and, kept in the mean, only dilutes the gradient of a small class such as a lesion by 1/C.

``balanced_ce=True`` weights cross-entropy per batch by sqrt(largest class frequency / class frequency), capped:
a lesion of 0.25% of the voxels gets ~15x the weight of background. The planner chooses it (``loss:
"dice_balanced_ce"``) when the dataset has lesion labels: overfitting two demo cases on lesion-centred batches,
plain DiceCE predicted no lesion voxel after 150 steps while the balanced loss reached lesion Dice 0.7 by step
160, grey/white matter unchanged (docs/benchmarks.md "lesions"). ``weight_power=1`` (loss ``"dice_inverse_ce"``,
what the planner now chooses for lesion datasets) weights by the inverse frequency itself, capped at 100: on the
demo's 3D data the square-root weights left the lesion class at zero for 150 iterations, the inverse weights (with
every patch foreground-centred) gave it validation Dice 0.48 after 20.

``lesion_share`` > 0 (loss ``"dice_lesionwise_ce"``) makes the cross-entropy weight lesion-wise rather than
voxel-wise: every connected component (full connectivity) of a foreground class in a patch weighs at least
``lesion_share`` of the batch's voxels, spread over its voxels, i.e. a voxel of a component of s voxels weighs
max(class weight, lesion_share * N / s). A 1-voxel lesion then speaks with ~10% of the cross-entropy instead of
~0.1% (inverse frequency is capped at 100); components of the tissue classes (thousands of voxels) keep their class
weight. Only the plan's lesion labels are weighted so (``component_classes``, set by the trainer): a tissue class
cut by the patch border leaves small fragments that must not get a lesion's voice. Why: on the demo every missed
lesion was 1-17 voxels (docs/benchmarks.md "lesions").

``dice_ce_lesion_region`` (``RegionLesionLoss``) keeps the 4-class softmax but trains two decoupled problems on it,
as nnU-Net's region-based training does for nested structures: the tissues get plain Dice + CE on the merged
softmax (lesion probability added to its host class: white matter in the demo, whose lesions are centred in white
matter; 76% of their voxels overwrite white matter, 24% grey matter), unweighted; the lesion gets a binary problem
inside the reference's host + lesion region, P(lesion | region) against P(host | region), with the lesion-wise
cross-entropy weights above, and a soft Dice on P(lesion). The binary term is conditional on the region because the
unconditional one (P(lesion) against 1 - P(lesion) over the whole patch) left P(lesion) at ~0.4 in white matter after
40 steps (argmax: 60-70% of white matter called lesion; validation WM Dice 0.0 after 12 epochs of the demo plan):
background and grey matter voxels, easy negatives, dilute its gradient, and the tissue term cannot help (it moves
host and lesion together). Why try it: every lesion-weighted 4-class loss measured held the demo's GM/WM Dice at
0.857-0.877 while plain Dice + CE reached 0.912 and found no lesion (docs/benchmarks.md "Tissue Dice levers"). It
did not help (seed 0, docs/benchmarks.md "A region-style lesion loss"): GM/WM 0.851 against the demo loss's 0.866,
the same held-out lesions, one site_C lesion fewer; the demo keeps ``dice_lesionwise_ce``. Its tissue CE with
``dice_inverse_ce``'s class weights (``tissue_weighted=True``) did not close the gap either (validation GM/WM 0.844
against 0.863 rerun beside it; docs/benchmarks.md "Weighted tissue term"). A separate sigmoid lesion head beside a
3-class tissue softmax is ``dice_ce_lesion_head`` (segmentation/lesion_head.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from medsight.errors import ConfigError
from medsight.metrics.segmentation import dice

LESION_SHARE = 0.1  # dice_lesionwise_ce: each foreground component weighs at least this share of the batch's voxels


class DeepSupervisionLoss(nn.Module):
    """Sum of DiceCE over the main output and the lower-resolution heads, weights halving per level."""

    def __init__(self, balanced_ce: bool = False, max_weight: float = 30.0, weight_power: float = 0.5,
                 lesion_share: float = 0.0) -> None:
        super().__init__()
        self.max_weight, self.weight_power, self.lesion_share = max_weight, weight_power, lesion_share
        self._voxel_w: tuple[torch.Tensor, torch.Tensor] | None = None  # (target, weights) of the current batch
        # classes weighted lesion-wise (the plan's lesion labels, set by the trainer); None: every foreground class
        self.component_classes: set[int] | None = None
        if balanced_ce:
            self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5,
                                 include_background=False)
            self.loss = self._balanced
        else:
            self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5,
                                   include_background=False)

    def _class_weights(self, t: torch.Tensor, n_classes: int, dtype: torch.dtype) -> torch.Tensor:
        """Per-batch CE class weights: (largest class frequency / class frequency) ** weight_power, in
        [1, max_weight]; an absent class weighs 1."""
        n = torch.bincount(t.reshape(-1), minlength=n_classes).to(dtype)
        f = n / n.sum()
        return torch.where(n > 0, (f.max() / f.clamp_min(1e-12)).pow(self.weight_power).clamp(1.0, self.max_weight),
                           torch.ones_like(f))

    def _balanced(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target[:, 0].long()
        w = self._class_weights(t, output.shape[1], output.dtype)
        if self.lesion_share <= 0:
            return self.dice(output, target) + F.cross_entropy(output, t, weight=w)
        vw = self._component_weights(target, t, w)
        ce = F.cross_entropy(output, t, reduction="none")
        return self.dice(output, target) + (ce * vw).sum() / vw.sum()

    def _component_weights(self, target: torch.Tensor, t: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Per-voxel cross-entropy weights: the class weight, raised to lesion_share * N / s inside every
        foreground component of s voxels (cached per target: the deep-supervision heads share it)."""
        if self._voxel_w is not None and self._voxel_w[0] is target:
            return self._voxel_w[1]
        from scipy import ndimage

        lab = t.cpu().numpy()
        vw = w[t].cpu().numpy().astype(np.float32)
        budget = self.lesion_share * lab.size
        structure = ndimage.generate_binary_structure(lab.ndim - 1, lab.ndim - 1)
        for b in range(lab.shape[0]):
            for c in np.unique(lab[b]):
                if c == 0 or (self.component_classes is not None and int(c) not in self.component_classes):
                    continue
                comp, n = ndimage.label(lab[b] == c, structure=structure)
                sizes = np.bincount(comp.ravel(), minlength=n + 1).astype(np.float32)
                floor = np.where(sizes > 0, budget / np.maximum(sizes, 1.0), 0.0)[comp]
                inside = comp > 0
                vw[b][inside] = np.maximum(vw[b][inside], floor[inside])
        out = torch.from_numpy(vw).to(w.device, w.dtype)
        self._voxel_w = (target, out)
        return out

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``output`` is (B, C, *S) or DynUNet's stack (B, heads+1, C, *S); ``target`` is (B, 1, *S) int."""
        if output.dim() == target.dim():
            return self.loss(output, target)
        heads = output.shape[1]
        weights = torch.tensor([0.5 ** i for i in range(heads)])
        weights = weights / weights.sum()
        total = output.new_zeros(())
        for i in range(heads):
            # DynUNet upsamples every head to full size already; the target is used as it is
            total = total + weights[i] * self.loss(output[:, i], target)
        return total


class RegionLesionLoss(DeepSupervisionLoss):
    """Tissue term (Dice + CE over the softmax with the lesion classes merged into ``host``, no class weights) plus
    ``lesion_weight`` x lesion term (lesion-wise weighted binary CE of lesion against host on the reference's host +
    lesion voxels, class weight = inverse lesion frequency there capped at ``max_weight``; soft Dice on P(lesion));
    a batch without a lesion voxel gets the tissue term only. Lesion classes: the trainer's ``component_classes``
    (the plan's lesion labels), else the last class. ``tissue_weighted``: the tissue CE takes ``dice_inverse_ce``'s
    class weights (inverse frequency of the merged classes in the batch, capped at ``max_weight``), as the demo's
    4-class loss weights the GM/WM border."""

    def __init__(self, host: int = 2, lesion_weight: float = 1.0, max_weight: float = 100.0,
                 lesion_share: float = LESION_SHARE, tissue_weighted: bool = False) -> None:
        super().__init__(max_weight=max_weight, weight_power=1.0, lesion_share=lesion_share)
        self.host, self.lesion_weight, self.tissue_weighted = host, lesion_weight, tissue_weighted
        self.tissue_dice = DiceLoss(to_onehot_y=True, softmax=False, batch=True, smooth_nr=1e-5, smooth_dr=1e-5,
                                    include_background=False)
        del self.loss  # the parent's DiceCELoss module: this loss is a method
        self.loss = self._region

    def _classes(self, n_classes: int) -> tuple[list[int], list[int]]:
        lesions = sorted(self.component_classes) if self.component_classes else [n_classes - 1]
        if not 0 < self.host < n_classes or self.host in lesions or not all(0 < c < n_classes for c in lesions):
            raise ConfigError(f"dice_ce_lesion_region: host class {self.host} and lesion classes {lesions} do not fit "
                              f"{n_classes} classes (the host must be a foreground class that is not a lesion)")
        self.component_classes = set(lesions)  # _component_weights weights these classes' components only
        return lesions, [c for c in range(n_classes) if c not in lesions]

    def _region(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        lesions, tissues = self._classes(output.shape[1])
        t = target[:, 0].long()
        log_z = torch.logsumexp(output, 1)
        # tissue: log-probabilities of the merged classes (the host's slot holds host + lesions)
        merged = [torch.logsumexp(output[:, [c, *lesions]], 1) if c == self.host else output[:, c] for c in tissues]
        log_q = torch.stack(merged, 1) - log_z[:, None]
        remap = torch.zeros(output.shape[1], dtype=torch.long, device=t.device)
        for i, c in enumerate(tissues):
            remap[c] = i
        remap[lesions] = tissues.index(self.host)
        tt = remap[t]
        tw = self._class_weights(tt, len(tissues), output.dtype) if self.tissue_weighted else None
        tissue = self.tissue_dice(log_q.exp(), tt[:, None]) + F.nll_loss(log_q, tt, weight=tw)
        is_lesion = torch.zeros(output.shape[1], dtype=torch.bool, device=t.device)
        is_lesion[lesions] = True
        y = is_lesion[t]
        if not bool(y.any()):
            return tissue
        # lesion against its host, inside the region (host + lesions) of the reference: P(lesion | region)
        log_region = torch.logsumexp(output[:, [self.host, *lesions]], 1)
        log_p_in = torch.logsumexp(output[:, lesions], 1) - log_region
        inside = (y | (t == self.host)).to(output.dtype)
        n_les = y.sum().to(output.dtype)
        w = torch.ones(output.shape[1], dtype=output.dtype, device=output.device)
        w[lesions] = ((inside.sum() - n_les) / n_les).clamp(1.0, self.max_weight)  # inverse frequency in the region
        vw = self._component_weights(target, t, w) * inside
        bce = -torch.where(y, log_p_in, output[:, self.host] - log_region)
        p, yf = (torch.logsumexp(output[:, lesions], 1) - log_z).exp(), y.to(output.dtype)
        soft_dice = 1 - (2 * (p * yf).sum() + 1e-5) / (p.sum() + yf.sum() + 1e-5)
        return tissue + self.lesion_weight * ((bce * vw).sum() / vw.sum() + soft_dice)


def dice_ce_lesion_region(**options: Any) -> RegionLesionLoss:
    """Region-style loss (``dice_ce_lesion_region``, see the module docstring): plain Dice + CE for the tissues on
    the merged softmax, a lesion-wise weighted binary lesion term beside it."""
    return RegionLesionLoss(**options)



def dice_balanced_ce(**options: Any) -> DeepSupervisionLoss:
    """The planner's former loss for lesion datasets (registered as ``dice_balanced_ce`` in ``medsight.losses``)."""
    return DeepSupervisionLoss(balanced_ce=True, **options)


def dice_inverse_ce(**options: Any) -> DeepSupervisionLoss:
    """The planner's loss for lesion datasets (``dice_inverse_ce``): inverse frequency (not its square root),
    capped at 100, so a 0.2% lesion weighs ~100x background."""
    return DeepSupervisionLoss(**{"balanced_ce": True, "weight_power": 1.0, "max_weight": 100.0, **options})


def dice_lesionwise_ce(**options: Any) -> DeepSupervisionLoss:
    """``dice_inverse_ce`` with lesion-wise cross-entropy weights (``lesion_share`` 0.1, see the module docstring):
    the demo's loss, so that 1-10 voxel lesions are not outvoiced by the large ones."""
    return dice_inverse_ce(**{"lesion_share": LESION_SHARE, **options})


def segmentation_loss(name: str) -> DeepSupervisionLoss:
    """The plan's loss, built through the ``medsight.losses`` registry (plans written before the field existed
    say nothing: ``dice_ce``). A plug-in segmentation loss subclasses ``DeepSupervisionLoss`` (it must take
    DynUNet's deep-supervision heads); a classification loss of the same registry is refused by name."""
    from medsight.nets import registry

    known = [n for n in registry.available("medsight.losses") if n.startswith("dice")]
    if name not in registry.available("medsight.losses"):
        raise ConfigError(f"unknown segmentation loss '{name}' in the plan; use {', '.join(known)}")
    loss = registry.load("medsight.losses", name)()
    if not isinstance(loss, DeepSupervisionLoss):
        raise ConfigError(f"unknown segmentation loss '{name}' in the plan: it is registered in medsight.losses "
                          f"but is not a segmentation loss (a DeepSupervisionLoss); use {', '.join(known)}")
    return loss


def soft_dice_per_class(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> list[float]:
    """Hard Dice (``medsight.metrics.segmentation.dice``) per foreground class over the whole batch (NaN where the
    class is absent in both)."""
    pred = logits.argmax(1).cpu().numpy()
    tgt = target[:, 0].cpu().numpy()
    out = []
    for c in range(1, n_classes):
        p, t = pred == c, tgt == c
        out.append(dice(p, t) if p.any() or t.any() else float("nan"))
    return out


__all__ = ["DeepSupervisionLoss", "RegionLesionLoss", "dice_balanced_ce", "dice_ce_lesion_region", "dice_inverse_ce",
           "dice_lesionwise_ce", "segmentation_loss", "soft_dice_per_class"]
