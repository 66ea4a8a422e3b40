"""A separate lesion head (loss ``dice_ce_lesion_head``): the tissue softmax keeps plain Dice + CE, the lesion gets
its own sigmoid.

Why: every lesion-weighted loss on the demo's shared 4-class softmax held GM/WM Dice at 0.85-0.88, while plain
Dice + CE reached 0.91 and learnt no lesion (docs/benchmarks.md "Tissue Dice levers", "A region-style lesion
loss"): the lesion weights steer the shared softmax at the tissue boundaries. Here the network's C outputs are read
as C-1 tissue logits z_t (background and tissues) and one lesion logit z_l (the last label, which must be the plan's
only lesion label). The tissue term is plain Dice + CE on softmax(z_t) with the lesion voxels masked out (the
simulator paints a lesion over whatever tissue it covers, so the label under it is unknown); the lesion term is the
lesion-wise weighted binary CE of sigmoid(z_l) against lesion-vs-rest with ``dice_lesionwise_ce``'s voxel weights
(each voxel its class's inverse frequency in the batch, capped at ``max_weight``; each lesion component >=
``lesion_share`` of the batch's voxels) plus a soft Dice on sigmoid(z_l).

At inference the network returns composed logits (``compose_lesion_head`` in nets/lesion_head.py, a forward hook
set by ``build_model``
when the plan's loss is a head loss): [z_t - logsumexp(z_t), z_l], whose softmax is exactly P(lesion) =
sigmoid(z_l), P(c) = (1 - sigmoid(z_l)) softmax(z_t)_c. Everything downstream (argmax, the lesion study, the
detection rule, referral, predict, ONNX export) therefore still sees (C, *S) logits of a proper distribution, and
a package trained with another loss has no hook and predicts as before. The loss reads the same composed logits:
softmax over the tissue slots is shift-invariant and the lesion slot is z_l itself.

Measured (seed 0, docs/benchmarks.md "A separate lesion head"): at the demo's plan GM/WM +0.006-0.009 over
``dice_lesionwise_ce`` with fewer lesions found (test 5 vs 7 of 13, site_C 5 vs 8 of 11); the demo keeps that loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medsight.errors import ConfigError
from medsight.nets.lesion_head import ComposeLesionHead, add_lesion_head, compose_lesion_head
from medsight.segmentation.losses import LESION_SHARE, DeepSupervisionLoss

HEAD_LOSSES = frozenset({"dice_ce_lesion_head"})
SMOOTH = 1e-5  # as the other losses' MONAI Dice (smooth_nr = smooth_dr)


def uses_lesion_head(loss: str | None) -> bool:
    """Whether a plan configuration's loss trains the separate lesion head (its network then composes logits)."""
    return loss in HEAD_LOSSES


class LesionHeadLoss(DeepSupervisionLoss):
    """Plain Dice + CE on the tissue softmax (lesion voxels masked out) + ``lesion_weight`` x (lesion-wise weighted
    BCE + soft Dice) on the lesion sigmoid; see the module docstring."""

    def __init__(self, lesion_weight: float = 1.0, max_weight: float = 100.0,
                 lesion_share: float = LESION_SHARE) -> None:
        super().__init__(max_weight=max_weight, weight_power=1.0, lesion_share=lesion_share)
        self.lesion_weight = lesion_weight
        del self.loss  # the parent's DiceCELoss module: this loss is a method
        self.loss = self._head

    def _lesion_class(self, n_classes: int) -> int:
        lesions = sorted(self.component_classes) if self.component_classes else [n_classes - 1]
        if lesions != [n_classes - 1] or n_classes < 3:
            raise ConfigError(f"dice_ce_lesion_head needs one lesion label, the last of the plan's {n_classes} "
                              f"labels (and at least 2 tissue labels); the plan's lesion labels are {lesions}")
        self.component_classes = {n_classes - 1}  # _component_weights weights this class's components only
        return n_classes - 1

    def tissue_term(self, logits: torch.Tensor, t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Dice (foreground tissue classes, over the batch) + mean CE of softmax(logits), on ``keep`` voxels only."""
        log_q = torch.log_softmax(logits, 1)
        tt = torch.where(keep, t, torch.zeros_like(t))  # any valid index: masked voxels are weighted 0
        m = keep.to(logits.dtype)
        ce = -(log_q.gather(1, tt[:, None])[:, 0] * m).sum() / m.sum().clamp_min(1.0)
        onehot = F.one_hot(tt, logits.shape[1]).movedim(-1, 1).to(logits.dtype)[:, 1:] * m[:, None]
        q = log_q.exp()[:, 1:] * m[:, None]
        dims = (0, *range(2, q.dim()))
        dice = 1 - (2 * (q * onehot).sum(dims) + SMOOTH) / (q.sum(dims) + onehot.sum(dims) + SMOOTH)
        return dice.mean() + ce

    def _head(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = self._lesion_class(output.shape[1])
        t = target[:, 0].long()
        y = t == k
        tissue = self.tissue_term(output[:, :k], t, ~y)
        z, yf = output[:, k], y.to(output.dtype)
        n_pos = yf.sum()
        # dice_lesionwise_ce's voxel weights: a lesion voxel weighs against a white-matter voxel as in the demo's
        # 4-class CE (~100 : ~4), not 100 : 1 (inverse lesion frequency against all the rest, which left P(lesion)
        # ~0.5 over white matter after 80 steps of the demo's plan and its validation WM Dice at 0.005)
        vw = self._component_weights(target, t, self._class_weights(t, output.shape[1], output.dtype))
        bce = F.binary_cross_entropy_with_logits(z, yf, reduction="none")
        lesion = (bce * vw).sum() / vw.sum()
        if bool(n_pos > 0):
            p = torch.sigmoid(z)
            lesion = lesion + 1 - (2 * (p * yf).sum() + SMOOTH) / (p.sum() + n_pos + SMOOTH)
        return tissue + self.lesion_weight * lesion


def dice_ce_lesion_head(**options: Any) -> LesionHeadLoss:
    """The separate-lesion-head loss (``dice_ce_lesion_head``, see the module docstring)."""
    return LesionHeadLoss(**options)


__all__ = ["HEAD_LOSSES", "ComposeLesionHead", "LesionHeadLoss", "add_lesion_head", "compose_lesion_head",
           "dice_ce_lesion_head", "uses_lesion_head"]
