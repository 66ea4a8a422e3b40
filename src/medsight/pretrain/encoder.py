"""The ``pretrained`` entry of the ``medsight.encoders`` registry: an encoder package as a feature extractor.

``load_encoder("pretrained", weights=PACKAGE)`` verifies the package (``load_package``), rebuilds the network
configuration it was pretrained for, loads its tensors and returns an ``Encoder`` whose module maps a
preprocessed (N, C, *patch) batch to (N, D) features (global average of the bottleneck). Its provenance carries
the package id and the SHA-256 of its weights, so stored features name the package they came from (``wsi features``
resumes and ``train-mil`` mixes features only by that hash; ``train-mil --init`` checks the id). The factory is
declared in pyproject.toml like every built-in encoder, so a plug-in can replace it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.nets.encoders import Encoder
from medsight.nets.segmentation import build_model
from medsight.package.encoder import WEIGHTS, apply_encoder, load_encoder_package
from medsight.plan.plan import ConfigPlan
from medsight.pretrain.task import EncoderPath


def pretrained_encoder(weights: str | Path | None = None) -> Encoder:
    """The encoder package ``weights`` (a folder or a registered NAME[@VERSION]) as an ``Encoder``."""
    if weights is None:
        raise ConfigError("the pretrained encoder needs an encoder package: pass --weights PACKAGE "
                          "(the output of `medsight pretrain`)")
    pkg, state, desc = load_encoder_package(weights)
    try:
        cfg = ConfigPlan(**desc["config"])
        channels = len(desc["plan"]["channels"])
    except (KeyError, TypeError) as err:
        raise ConfigError(f"encoder package {pkg.label} does not describe its network ({err})") from err
    net = build_model(cfg, channels, channels)
    path = EncoderPath(net, cfg.filters[-1])
    provenance = apply_encoder(net, pkg, state, desc, network=cfg.network)
    module = _Features(path).eval()
    return Encoder(module, f"pretrained-{pkg.name}", int(cfg.filters[-1]), int(cfg.patch_size[0]),
                   provenance={"encoder": "pretrained", **provenance,
                               "weights_sha256": pkg.manifest["files"][WEIGHTS]["sha256"]})


class _Features(nn.Module):
    """The encoder path without its projection head: features, not the contrastive embedding."""

    def __init__(self, path: EncoderPath) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.path.features(x)
