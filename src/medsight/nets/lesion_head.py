"""The network side of the separate lesion head (loss ``dice_ce_lesion_head``, segmentation/lesion_head.py).

A network whose plan trains the head returns composed logits: its C raw outputs are read as C-1 tissue logits z_t
and one lesion logit z_l (last), and [z_t - logsumexp(z_t), z_l] is returned, whose softmax is exactly P(lesion) =
sigmoid(z_l), P(c) = (1 - sigmoid(z_l)) softmax(z_t)_c. It lives with the networks (``build_model`` adds it) so that
the nets layer does not import the training code above it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def compose_lesion_head(out: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Raw outputs (tissue logits, lesion logit last) -> logits whose softmax is P(lesion) = sigmoid(z_l), P(c) =
    (1 - sigmoid(z_l)) softmax(z_t)_c. The class axis is the one before the spatial axes (DynUNet's training stack
    (B, heads, C, *S) included)."""
    dim = out.dim() - spatial_dims - 1
    n = out.shape[dim]
    tissue, lesion = out.narrow(dim, 0, n - 1), out.narrow(dim, n - 1, 1)
    return torch.cat([tissue - torch.logsumexp(tissue, dim, keepdim=True), lesion], dim)


class ComposeLesionHead:
    """Forward hook: replaces a network's output by ``compose_lesion_head`` of it (no parameters, so a trained
    state dict loads into a network with or without it; deep copies and ONNX tracing keep it)."""

    def __init__(self, spatial_dims: int) -> None:
        self.spatial_dims = spatial_dims

    def __call__(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if isinstance(output, (list, tuple)):
            return type(output)(compose_lesion_head(o, self.spatial_dims) for o in output)
        return compose_lesion_head(output, self.spatial_dims)


def add_lesion_head(net: nn.Module, spatial_dims: int) -> nn.Module:
    net.register_forward_hook(ComposeLesionHead(spatial_dims))
    return net


__all__ = ["ComposeLesionHead", "add_lesion_head", "compose_lesion_head"]
