"""Grad-CAM heatmaps from MONAI's ``monai.visualize.GradCAM`` (2D and 3D), mapped back onto the image grid.

We do not write Grad-CAM ourselves: MONAI's implementation hooks the named layer, weights its activations by
the spatially averaged gradients of the chosen logit and upsamples to the input size. Here we only pick the
layer, run it in batches and resample the map from the network grid back to the image's own voxels, so a
heatmap saved as an array (or NIfTI volume) lies on exactly the image it explains.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.visualize import GradCAM
from torch import nn

from medsight.errors import ConfigError


def _unit_range(x: torch.Tensor) -> torch.Tensor:
    """Per image, min -> 0 and max -> 1. (MONAI's default normaliser maps max -> 0: a "smaller is hotter"
    convention for its own plots that would turn the pointing game upside down.)"""
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).reshape(x.shape)


def gradcam_maps(model: nn.Module, x: torch.Tensor, layer: str, class_index: int = 0,
                 batch_size: int = 16) -> np.ndarray:
    """Heatmaps (N, *input_size), each scaled to [0, 1], for logit ``class_index`` at layer ``layer``."""
    names = dict(model.named_modules())
    if layer not in names:
        raise ConfigError(f"Grad-CAM layer {layer!r} is not in the model")
    if "blocks" in layer and "patch_embedding" in names:
        raise ConfigError("Grad-CAM needs a convolutional layer; the ViT backbone has none (use a CNN backbone)")
    was_training = model.training
    model.eval()
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=_unit_range)
    out = []
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].clone().requires_grad_(True)
            with torch.enable_grad():
                m = cam(xb, class_idx=class_index)
            out.append(np.asarray(m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m)[:, 0])
    finally:
        model.train(was_training)
    return np.concatenate(out).astype(np.float32)


def to_image_grid(heatmap: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample one heatmap from the network's input grid onto the image's spatial ``shape`` (linear)."""
    h = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))[None, None]
    mode = "bilinear" if h.ndim == 4 else "trilinear"
    return F.interpolate(h, size=tuple(int(s) for s in shape), mode=mode, align_corners=False)[0, 0].numpy()
