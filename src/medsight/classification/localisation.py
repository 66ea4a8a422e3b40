"""Mask supervision during classifier training, and the pointing game that scores where the model looks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


KINDS = ("dense", "inside")


class Localisation:
    """Scores the model's lesion-mask prediction during training (mask supervision where masks are known).

    For an evidence-map model the supervised map is the evidence map of the first output itself (captured at
    ``head``): the map whose maximum is the logit learns where the finding is, not only that it is there. For
    other models a 1x1 auxiliary head on ``layer`` predicts the mask from that layer's features.

    ``kind``: ``dense`` scores every cell against its mask coverage (binary cross-entropy); on the demo slices it
    drove the whole map to "no lesion anywhere" (a lesion covers ~1% of the cells). ``inside`` (evidence maps
    only) is the image-level loss restricted to the finding: the evidence map pooled as the model pools it (the
    same log-sum-exp) but over the finding's cells only, weighted by their coverage, must say "positive". It
    sends the positive gradient to the lesion's cells from the first step, instead of spreading it over all
    576 cells until the network happens to find them (the plateau at the prior that made the demo classifier
    fail on some thread counts), and it never pushes a cell down, which the image-level loss already does."""

    def __init__(self, model: nn.Module, layer: str, kind: str = "dense") -> None:
        from medsight.errors import ConfigError

        if kind not in KINDS:
            raise ConfigError(f"mask loss must be one of {', '.join(KINDS)}, got {kind!r}")
        self.model, self.features, self.kind = model, None, kind
        self.direct = bool(getattr(model, "evidence_map", False))
        if kind == "inside" and not self.direct:
            raise ConfigError("the 'inside' mask loss needs an evidence-map backbone (e.g. resnet10-slim-evidence)")
        self.layer = "head" if self.direct else layer
        dict(model.named_modules())[self.layer].register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.features = output

    def loss(self, masks: torch.Tensor) -> torch.Tensor:
        logits = self.features[:, :1] if self.direct else self.model.aux_head(self.features)
        pool = nn.functional.adaptive_avg_pool2d if logits.ndim == 4 else nn.functional.adaptive_avg_pool3d
        cover = pool(masks, logits.shape[2:])
        if self.kind == "inside":
            return inside_loss(logits, cover, float(self.model.evidence_sharpness))
        return nn.functional.binary_cross_entropy_with_logits(logits, cover)

    def describe(self, weight: float) -> dict[str, Any]:
        if self.direct:
            return {"layer": "head", "evidence_map_output": 0, "weight": weight, "kind": self.kind}
        return {"layer": self.layer, "channels": int(self.model.aux_head.in_channels), "weight": weight}


def inside_loss(evidence: torch.Tensor, cover: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Binary cross-entropy (target 1) of the evidence pooled over the finding's cells only, for the images that
    have one: (log sum_i w_i exp(r e_i) - log sum_i w_i) / r with w = the cells' mask coverage (the model's own
    log-sum-exp pooling, restricted and weighted; the weighted mean when r = 0 would be degenerate, so the hard
    maximum over covered cells is used then). Zero (with a gradient path) when no image in the batch has one."""
    e, w = evidence.flatten(1), cover.flatten(1)
    has = w.sum(1) > 0
    if not bool(has.any()):
        return evidence.sum() * 0.0
    e, w = e[has], w[has]
    if sharpness > 0:
        scored = torch.where(w > 0, sharpness * e + torch.log(w.clamp_min(1e-12)), torch.full_like(e, -torch.inf))
        pooled = (torch.logsumexp(scored, 1) - torch.log(w.sum(1))) / sharpness
    else:
        pooled = torch.where(w > 0, e, torch.full_like(e, -torch.inf)).amax(1)
    return nn.functional.binary_cross_entropy_with_logits(pooled, torch.ones_like(pooled))


def attach_localisation(model: nn.Module, layer: str, size: tuple[int, ...], dims: int,
                        kind: str = "dense") -> Localisation:
    """Mask supervision: on the evidence map itself, or through a new 1x1 mask head on ``layer`` (its channel
    count found by one probe pass)."""
    from medsight.nets.backbones import get_layer

    if getattr(model, "evidence_map", False):
        return Localisation(model, layer, kind)
    if kind != "dense":
        return Localisation(model, layer, kind)  # refuses with a clear message
    seen: list[torch.Tensor] = []
    handle = get_layer(model, layer).register_forward_hook(lambda m, i, o: seen.append(o))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, *size))
    handle.remove()
    model.add_localisation_head(layer, int(seen[0].shape[1]), dims)
    return Localisation(model, layer)


@torch.no_grad()
def val_pointing(model: nn.Module, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor,
                  batch_size: int = 64) -> float:
    """Share of validation images with a finding (first label, non-empty mask) whose evidence-map maximum, on
    the input grid, lies in the finding: the pointing game of the model's own heatmap (Grad-CAM of an
    evidence-map model is that map). NaN when there are none."""
    pos = torch.nonzero((y.reshape(len(y), -1)[:, 0] > 0.5) & (masks.flatten(1).amax(1) > 0)).flatten()
    if len(pos) == 0:
        return float("nan")
    model.eval()
    hits = 0
    for i in range(0, len(pos), batch_size):
        sel = pos[i:i + batch_size]
        evidence = model.head(model.net(x[sel]))[:, :1]
        mode = "bilinear" if evidence.ndim == 4 else "trilinear"
        up = nn.functional.interpolate(evidence, size=tuple(x.shape[2:]), mode=mode, align_corners=False)
        peak = up.flatten(1).argmax(1)
        hits += int((masks[sel].flatten(1).gather(1, peak[:, None])[:, 0] > 0.25).sum())
    return hits / len(pos)
