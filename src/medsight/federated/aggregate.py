"""Aggregation on the server: the example-weighted mean of the sites' weights and a hash of each aggregate."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def aggregate_hash(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the aggregate's tensors in key order (name, dtype, shape, little-endian bytes)."""
    h = hashlib.sha256()
    for k in sorted(state):
        a = np.ascontiguousarray(state[k].detach().cpu().numpy())
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fedavg(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    """Example-weighted mean of the sites' weights (integer buffers: taken from the largest site)."""
    total = float(sum(weights))
    out = {}
    for k, v in states[0].items():
        if v.is_floating_point():
            out[k] = sum(s[k].double() * (w / total) for s, w in zip(states, weights)).to(v.dtype)
        else:
            out[k] = states[int(np.argmax(weights))][k].clone()
    return out
