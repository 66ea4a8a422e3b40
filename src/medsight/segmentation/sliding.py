"""Sliding-window inference with Gaussian weighting (MONAI's ``sliding_window_inference``, mode="gaussian").

Patches overlap by half and each is weighted by a Gaussian centred on the patch (sigma = 1/8 of its side), so the
less reliable patch borders count less, as in nnU-Net. ``timed_predictor`` measures how much of the time is the
network itself (for the overhead benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from monai.inferers import sliding_window_inference


def sliding_window(x: torch.Tensor, predictor: Callable[[torch.Tensor], torch.Tensor], patch: list[int],
                   overlap: float = 0.5, sw_batch_size: int = 1) -> torch.Tensor:
    """Logits or probabilities for a whole (B, C, *S) input, stitched from patch predictions."""
    with torch.no_grad():
        return sliding_window_inference(x, roi_size=tuple(patch), sw_batch_size=sw_batch_size, predictor=predictor,
                                        overlap=overlap, mode="gaussian", sigma_scale=0.125, padding_mode="constant",
                                        cval=0.0)


class timed_predictor:  # noqa: N801 - used like a function
    """Wrap a predictor and add up the seconds spent inside it."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        out = self.fn(x)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out
