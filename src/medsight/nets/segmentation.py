"""Build the network a plan configuration names: MONAI's DynUNet (nnU-Net's topology, deep supervision by
default), AttentionUnet or SwinUNETR. Our own code here is only the mapping from plan to constructor."""

from __future__ import annotations

import torch
from torch import nn

from medsight.errors import ConfigError
from medsight.plan.plan import ConfigPlan

NETWORKS = ("dynunet", "attention_unet", "swinunetr")


def deep_supervision_heads(cfg: ConfigPlan) -> int:
    """How many extra (lower-resolution) outputs DynUNet returns in training mode."""
    if cfg.network != "dynunet" or not cfg.deep_supervision:
        return 0
    return max(0, min(2, len(cfg.strides) - 2))


def build_model(cfg: ConfigPlan, in_channels: int, out_channels: int) -> nn.Module:
    """A freshly initialised network for ``cfg``; weights are seeded by the caller's torch seed."""
    in_channels = in_channels * (2 * cfg.context_slices + 1)  # 2.5D: neighbouring slices are channels
    if cfg.network == "dynunet":
        from monai.networks.nets import DynUNet

        heads = deep_supervision_heads(cfg)
        return DynUNet(cfg.spatial_dims, in_channels, out_channels, kernel_size=cfg.kernels, strides=cfg.strides,
                       upsample_kernel_size=cfg.strides[1:], filters=cfg.filters, norm_name="instance",
                       deep_supervision=heads > 0, deep_supr_num=max(heads, 1), res_block=False)
    if cfg.network == "attention_unet":
        from monai.networks.nets import AttentionUnet

        strides = [max(s) for s in cfg.strides[1:]]
        return AttentionUnet(cfg.spatial_dims, in_channels, out_channels, channels=cfg.filters, strides=strides)
    if cfg.network == "swinunetr":
        from monai.networks.nets import SwinUNETR

        if any(p % 32 for p in cfg.patch_size):
            raise ConfigError(f"SwinUNETR needs every patch side divisible by 32, the plan has {cfg.patch_size}; "
                              "edit patch_size in the plan")
        return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=max(12, cfg.filters[0] // 2 * 2
                         if cfg.filters[0] % 12 == 0 else 12), spatial_dims=cfg.spatial_dims)
    raise ConfigError(f"unknown network '{cfg.network}'; choose one of {', '.join(NETWORKS)}")


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Full-resolution logits in eval mode, whatever the network returns (DynUNet may return a stack)."""
    out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out
