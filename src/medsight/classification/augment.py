"""Training-time variety for small classification sets: geometric/intensity augmentation and CarveMix.

Both draw from torch's global generator, which the engine seeds per (seed, fold, epoch): a resumed run sees
the same augmented batches as one that never stopped.
"""

from __future__ import annotations

import torch


def augment(x: torch.Tensor, masks: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Label-preserving variety for small datasets, where a network otherwise memorises the few findings it has:
    random flips on every axis (and a transpose when the grid is square), a shift of up to 1/8 of the field of
    view, and a mild contrast/offset jitter (inputs are normalised, so a gain is a contrast change). Masks get
    the same geometric changes."""
    n, dims = x.shape[0], x.ndim - 2
    both = torch.cat([x, masks], 1) if masks is not None else x.clone()
    for axis in range(2, 2 + dims):
        flip = torch.rand(n) < 0.5
        both[flip] = torch.flip(both[flip], dims=(axis,))
    if dims == 2 and both.shape[2] == both.shape[3]:
        swap = torch.rand(n) < 0.5
        both[swap] = both[swap].transpose(2, 3)
    for i in range(n):
        shifts = [int(torch.randint(-s // 8, s // 8 + 1, ())) for s in both.shape[2:]]
        both[i] = torch.roll(both[i], shifts=shifts, dims=tuple(range(1, 1 + dims)))
    x = both[:, :1]
    scale = 1.0 + 0.1 * torch.randn(n, *([1] * (x.ndim - 1)))
    shift = 0.1 * torch.randn(n, *([1] * (x.ndim - 1)))
    return x * scale + shift, (both[:, 1:] if masks is not None else None)


def carvemix(xb: torch.Tensor, yb: torch.Tensor, mb: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              masks: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CarveMix-style copy-paste (Zhang et al., MICCAI 2021, simplified): a negative image receives the outlined
    finding of a random positive one, at the same place, and takes over its labels and mask. With few patients
    with findings, this shows each finding on many backgrounds, so the network learns the finding and not the
    patient it came from. Assumes roughly aligned images (true of registered or same-protocol scans)."""
    donors = torch.nonzero(masks.flatten(1).amax(1) > 0.5).flatten()
    targets = torch.nonzero((yb.reshape(len(yb), -1).amax(1) == 0) & (torch.rand(len(yb)) < p)).flatten()
    if len(donors) == 0 or len(targets) == 0:
        return xb, yb, mb
    xb, yb, mb = xb.clone(), yb.clone(), mb.clone()
    pick = donors[torch.randint(len(donors), (len(targets),))]
    m = masks[pick]
    xb[targets] = xb[targets] * (1 - m) + x[pick] * m
    yb[targets] = y[pick]
    mb[targets] = m
    return xb, yb, mb
