"""Segmentation networks, registered as plug-ins (group ``medsight.networks`` in pyproject.toml): MONAI's DynUNet
(nnU-Net's topology, deep supervision by default), AttentionUnet and SwinUNETR. Our own code here is only the
mapping from a plan configuration to each constructor; a user's package registers its own the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.nets import registry
from medsight.plan.plan import ConfigPlan

GROUP = "medsight.networks"


def deep_supervision_heads(cfg: ConfigPlan) -> int:
    """How many extra (lower-resolution) outputs DynUNet returns in training mode."""
    if cfg.network != "dynunet" or not cfg.deep_supervision:
        return 0
    return max(0, min(2, len(cfg.strides) - 2))


def dynunet(cfg: ConfigPlan, in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.nets import DynUNet

    heads = deep_supervision_heads(cfg)
    return DynUNet(cfg.spatial_dims, in_channels, out_channels, kernel_size=cfg.kernels, strides=cfg.strides,
                   upsample_kernel_size=cfg.strides[1:], filters=cfg.filters, norm_name="instance",
                   deep_supervision=heads > 0, deep_supr_num=max(heads, 1), res_block=False)


def attention_unet(cfg: ConfigPlan, in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.nets import AttentionUnet

    strides = [max(s) for s in cfg.strides[1:]]
    return AttentionUnet(cfg.spatial_dims, in_channels, out_channels, channels=cfg.filters, strides=strides)


def swinunetr(cfg: ConfigPlan, in_channels: int, out_channels: int) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    if any(p % 32 for p in cfg.patch_size):
        raise ConfigError(f"SwinUNETR needs every patch side divisible by 32, the plan has {cfg.patch_size}; "
                          "edit patch_size in the plan")
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=max(12, cfg.filters[0] // 2 * 2
                     if cfg.filters[0] % 12 == 0 else 12), spatial_dims=cfg.spatial_dims)


def available_networks() -> list[str]:
    return registry.available(GROUP)


def build_model(cfg: ConfigPlan, in_channels: int, out_channels: int,
                recorded: dict[str, str] | None = None, lesion_head: bool = False) -> nn.Module:
    """A freshly initialised network for ``cfg``; weights are seeded by the caller's torch seed. ``recorded`` is
    the provenance a trained model saved: when its plug-in is missing the error names the distribution.
    ``lesion_head``: the network returns composed logits (segmentation/lesion_head.py); a segmentation model of a
    plan whose loss is ``dice_ce_lesion_head`` is built so (``uses_lesion_head(cfg.loss)``), never an encoder."""
    factory = registry.require(GROUP, recorded, cfg.network)
    in_channels = in_channels * (2 * cfg.context_slices + 1)  # 2.5D: neighbouring slices are channels
    net = factory(cfg, in_channels, out_channels)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"network {cfg.network!r} returned {type(net).__name__}, not a torch.nn.Module")
    if lesion_head:
        from medsight.nets.lesion_head import add_lesion_head

        add_lesion_head(net, cfg.spatial_dims)
    return net


def network_provenance(name: str) -> dict[str, str]:
    """Which installed distribution provides network ``name`` (recorded in every trained fold)."""
    return registry.provenance(GROUP, name)


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Full-resolution logits in eval mode, whatever the network returns (DynUNet may return a stack)."""
    out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out
