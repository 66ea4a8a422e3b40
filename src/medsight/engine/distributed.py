"""Data-parallel training (PyTorch DDP) for the engine: process group from torchrun's environment, rank-0 I/O.

Every process draws the same global batch from the per-epoch generator and trains on its rows ``rank::world``
(``Task.shard``), so the batch order is fixed by (seed, fold, epoch) whatever the process count, and the averaged
gradient is that of the global batch when the loss is a per-example mean. gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def env_world_size() -> int:
    """The process count torchrun (or ``medsight train --nproc``) asked for; 1 outside a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env() -> bool:
    """Join the process group described by torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR/PORT).

    Returns True when this process is part of a group of more than one. Safe to call more than once.
    """
    if env_world_size() <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def device() -> torch.device:
    """The device this process trains on: its local GPU under NCCL, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def wrap(model: nn.Module) -> nn.Module:
    """DDP wrapper when distributed, else the model itself."""
    if not active():
        return model
    dev = device()
    return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_over_ranks(value: float, weight: float = 1.0) -> float:
    """The ``weight``-weighted mean of a per-process number over all processes (the number itself when single)."""
    if not active():
        return value
    t = torch.tensor([value * weight, weight], dtype=torch.float64, device=device())
    dist.all_reduce(t)
    return float(t[0] / t[1]) if float(t[1]) else float("nan")


def any_rank(flag: bool) -> bool:
    """True on every process when it is true on any (so that all stop at the same epoch)."""
    if not active():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def to_device(batch: Any, dev: torch.device) -> Any:
    if dev.type == "cpu":
        return batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, dev) for b in batch)
    return batch.to(dev, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


def shutdown() -> None:
    """Leave the process group (torchrun expects every rank to exit cleanly)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(nproc: int, module_args: list[str]) -> int:
    """Run ``python -m <module_args>`` in ``nproc`` processes on this machine through torch.distributed.run
    (torchrun) and return its exit status. Several machines: run torchrun yourself (docs/segmentation.md)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", *module_args]
    return subprocess.call(cmd)
