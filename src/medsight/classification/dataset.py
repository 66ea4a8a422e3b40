"""Images -> fixed-size network tensors, and patient-level stratified splits.

``preprocess`` is the one place that turns an ``Image`` into what the network sees, so training, prediction,
Grad-CAM and the safety layer agree. A one-slice volume (how a 2D slice keeps its scanner position in NIfTI)
counts as 2D.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medsight.data.splits import patient_holdout
from medsight.errors import ConfigError
from medsight.image import Image
from medsight.io import read_image


def spatial_array(image: Image) -> np.ndarray:
    """The image as float32 grey voxels with only its real spatial axes (colour averaged, a lone slice dropped)."""
    a = np.asarray(image.array, dtype=np.float32)
    if image.is_multichannel:
        a = a.mean(axis=-1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return np.nan_to_num(a)


def spatial_dims_of(image: Image) -> int:
    return spatial_array(image).ndim


def preprocess_array(a: np.ndarray, input_size: Sequence[int]) -> torch.Tensor:
    """Resize to ``input_size`` (bilinear / trilinear) and normalise robustly; returns (1, *input_size).

    Robust (median / interquartile range) rather than mean / std: a small bright or dark finding barely moves
    the median and IQR, whereas it moves the std of the whole image, which would let a network read the label
    from the scaling of the background instead of from the finding (and point its Grad-CAM there).
    """
    size = tuple(int(s) for s in input_size)
    if a.ndim != len(size):
        raise ConfigError(f"the model takes {len(size)}D images but got a {a.ndim}D image of shape {a.shape}")
    x = torch.as_tensor(a, dtype=torch.float32)[None, None]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=len(size) == 2)[0]
    q01, q25, q75 = torch.quantile(x.flatten()[:: max(1, x.numel() // 200_000)],
                                   torch.tensor([0.01, 0.25, 0.75])).tolist()
    scale = (q75 - q25) / 1.349
    if scale <= 1e-6:
        scale = float(x.std())
    # the darkest percentile (air, for scans) goes to 0: the network's zero padding then continues the
    # background instead of drawing an artificial edge around the field of view
    return (x - q01) / max(scale, 1e-6)


def load_tensors(paths: Sequence[Path], input_size: Sequence[int], quiet: bool = False) -> torch.Tensor:
    """Read and preprocess every image into one (N, 1, *input_size) tensor (the demo sets fit in memory)."""
    out = []
    for p in tqdm(paths, desc="loading images", disable=quiet, unit="img"):
        out.append(preprocess_array(spatial_array(read_image(p)), input_size))
    return torch.stack(out)


def load_masks(paths: Sequence[Path | None], input_size: Sequence[int], quiet: bool = False) -> torch.Tensor:
    """Masks on the network grid as the share of each input pixel that is inside (area resampling);
    a missing mask is all zero. Shape (N, 1, *input_size)."""
    size = tuple(int(s) for s in input_size)
    out = []
    for p in tqdm(paths, desc="loading masks", disable=quiet, unit="mask"):
        if p is None:
            out.append(torch.zeros(1, *size))
            continue
        m = torch.as_tensor((spatial_array(read_image(p)) > 0).astype(np.float32))[None, None]
        out.append(F.interpolate(m, size=size, mode="area" if all(a >= b for a, b in zip(m.shape[2:], size))
                                 else "bilinear")[0].clamp(0, 1))
    return torch.stack(out)


patient_split = patient_holdout  # the one patient splitter lives in medsight.data.splits
