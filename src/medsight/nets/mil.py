"""Slide-level models over a bag of tile features: pooling baselines, gated-attention MIL and a CLAM-style model.

Every model maps one bag (n_tiles, D) to a dict with ``logit`` (a scalar: slide is positive) and ``attention``
(n_tiles,), the per-tile weight the evidence heatmap draws; binary outputs throughout so calibration is one
temperature. Factories are declared under the ``medsight.mil`` entry-point group.

- ``mean``: mean of projected features, then linear (attention uniform: the honest "no localisation" baseline).
- ``max``: a per-tile score, slide logit = its maximum (attention = the tile scores).
- ``abmil``: gated attention pooling (Ilse, Tomczak & Welling 2018): a = softmax(w^T (tanh(V h) * sigm(U h))).
- ``clam-sb``: the same attention with CLAM's instance-level clustering (Lu et al. 2021, single branch): for the
  bag's class the k most-attended tiles are pushed to "in" and the k least-attended to "out", which sharpens
  attention onto the evidence. Only for subtyping (mutually exclusive classes, ``subtyping=True``) is the other
  class's classifier also told that the k most-attended tiles are "out": in a tumour/normal task a tumour slide
  holds normal tissue too, so its attended tiles say nothing against "normal" (the paper's binary setting, and
  medsight's slide task, use the in-class branch only).
Written from the papers' equations; no code from their (non-commercial) repositories.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class _Projection(nn.Module):
    """Standardise features with the training set's statistics (stored with the weights), then project."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mu", torch.zeros(in_dim))
        self.register_buffer("sigma", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mu) / self.sigma)


def fit_standardiser(model: nn.Module, features: torch.Tensor) -> None:
    """Set the input standardisation of ``model`` from (n_tiles, D) training features."""
    model.proj.mu.copy_(features.mean(0))
    model.proj.sigma.copy_(features.std(0).clamp_min(1e-3))


class MeanPoolMIL(nn.Module):
    kind = "mean"

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.25) -> None:
        super().__init__()
        self.proj = _Projection(in_dim, hidden, dropout)
        self.classifier = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.proj(x)
        return {"logit": self.classifier(h.mean(0)).squeeze(-1),
                "attention": torch.full((x.shape[0],), 1.0 / x.shape[0], device=x.device)}


class MaxPoolMIL(nn.Module):
    kind = "max"

    def __init__(self, in_dim: int, hidden: int = 128, dropout: float = 0.25) -> None:
        super().__init__()
        self.proj = _Projection(in_dim, hidden, dropout)
        self.scorer = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.scorer(self.proj(x)).squeeze(-1)
        return {"logit": s.max(), "attention": s.detach()}


class GatedAttention(nn.Module):
    def __init__(self, dim: int, attn_dim: int, dropout: float) -> None:
        super().__init__()
        self.v = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.w = nn.Linear(attn_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Attention logits (n,)."""
        return self.w(self.v(h) * self.u(h)).squeeze(-1)


class ABMIL(nn.Module):
    kind = "abmil"

    def __init__(self, in_dim: int, hidden: int = 128, attn_dim: int = 64, dropout: float = 0.25) -> None:
        super().__init__()
        self.proj = _Projection(in_dim, hidden, dropout)
        self.attention = GatedAttention(hidden, attn_dim, dropout)
        self.classifier = nn.Linear(hidden, 1)

    def pooled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.proj(x)
        a = torch.softmax(self.attention(h), 0)
        return h, a, (a[:, None] * h).sum(0)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _, a, z = self.pooled(x)
        return {"logit": self.classifier(z).squeeze(-1), "attention": a}


class CLAMSB(ABMIL):
    """ABMIL plus one instance classifier per class ("in"/"out" of that class) trained on attention extremes."""

    kind = "clam-sb"

    def __init__(self, in_dim: int, hidden: int = 128, attn_dim: int = 64, dropout: float = 0.25, k: int = 4,
                 instance_weight: float = 0.3, subtyping: bool = False) -> None:
        super().__init__(in_dim, hidden, attn_dim, dropout)
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(2))
        self.k, self.instance_weight, self.subtyping = k, instance_weight, subtyping

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h, a, z = self.pooled(x)
        return {"logit": self.classifier(z).squeeze(-1), "attention": a, "h": h}

    def instance_loss(self, out: dict[str, torch.Tensor], label: int) -> torch.Tensor:
        """CLAM's clustering loss for one bag with slide label ``label`` (0/1): the in-class branch, plus (averaged
        over both classes) the out-of-class branch when ``subtyping``."""
        h, a = out["h"], out["attention"]
        k = min(self.k, max(1, h.shape[0] // 2))
        order = torch.argsort(a, descending=True)
        top, bottom = order[:k], order[-k:]
        ce = nn.functional.cross_entropy
        losses = []
        for c, clf in enumerate(self.instance_classifiers):
            if c == label:  # in-class: most attended are "in", least attended "out"
                idx = torch.cat([top, bottom])
                target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
            elif self.subtyping:  # out-of-class: the most attended tiles are not evidence of this class
                idx, target = top, torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            losses.append(ce(clf(h[idx]), target))
        return torch.stack(losses).mean()


def mean_pool(in_dim: int, **kw: Any) -> nn.Module:
    return MeanPoolMIL(in_dim, **kw)


def max_pool(in_dim: int, **kw: Any) -> nn.Module:
    return MaxPoolMIL(in_dim, **kw)


def abmil(in_dim: int, **kw: Any) -> nn.Module:
    return ABMIL(in_dim, **kw)


def clam_sb(in_dim: int, **kw: Any) -> nn.Module:
    return CLAMSB(in_dim, **kw)


def load_mil(name: str) -> Any:
    """The MIL factory ``name`` from the ``medsight.mil`` plug-in registry (ConfigError listing what exists)."""
    from medsight.nets import registry

    return registry.load("medsight.mil", name)
