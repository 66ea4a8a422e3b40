"""Sample-level DP-SGD at a site (Opacus): every local step clips each training example's gradient and adds noise.

With few hospitals, client-level DP (privacy.py) must hide a whole site's update behind noise averaged over only
a handful of sites, which destroys the model (docs/benchmarks.md "federated"). DP-SGD protects each patient's
example instead: each step draws a Poisson batch (each example with probability q = batch / N), clips every
per-example gradient to L2 norm ``clip`` (Opacus's GradSampleModule computes them) and adds N(0, (sigma * clip)^2)
noise to their sum (Opacus's DPOptimizer), then the site's optimiser steps; the steps themselves are the engine's
``run_steps`` (the one optimiser-step loop), given Opacus's module and optimiser. The weights that leave the site are
post-processing of those noised gradients; the accountant (privacy.py) adds the subsampled Gaussian's RDP per step.

Both random draws that the privacy guarantee rests on, the noise and the Poisson batches (amplification by
subsampling assumes no one knows which examples a step drew), come from generators seeded by the OS's CSPRNG
(privacy.secure_generator), never from the run seed or the round; Opacus adds its noise in ``secure_mode``.

Networks with BatchNorm are refused: its running statistics mix examples and are not covered by the per-example
clipping (Opacus's validator names the layer).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch

from medsight.engine.loop import run_steps
from medsight.engine.seeding import seed_everything
from medsight.errors import ConfigError
from medsight.federated.privacy import secure_generator


def check_private_model(model: torch.nn.Module) -> None:
    """ConfigError when Opacus cannot give per-example gradients for ``model`` (e.g. BatchNorm layers)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError("sample-level DP-SGD cannot train this network: "
                          + "; ".join(sorted({str(e).split(". ")[0].strip() for e in errors}))  # Opacus's first sentence
                          + ". Use a network without BatchNorm (the small classifier) or client-level DP")


def sample_rate(task: Any) -> float:
    """q, the probability that a DP-SGD step draws a given training example: the expected batch over the rows."""
    return min(1.0, int(task.batch) / int(task.n_train))


def dpsgd_update(task: Any, weights: dict[str, torch.Tensor], steps: int, seed: int, sigma: float, clip: float,
                 noise: torch.Generator | None = None, draw: torch.Generator | None = None
                 ) -> tuple[dict[str, torch.Tensor], int, dict[str, Any], float]:
    """``steps`` DP-SGD steps from ``weights`` on the task's training tensors (``task.train_tensors()``).

    ``seed`` seeds what needs no secrecy (the model's own randomness); the noise and the Poisson draws come from
    fresh secure generators unless ``noise`` / ``draw`` are given (tests and benchmarks only).

    Returns the new weights, the examples drawn, metrics (the steps and the empty Poisson batches; no training
    loss: it is computed on the private examples without noise) and q, the sampling rate to account."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    if sigma <= 0 or clip <= 0 or steps < 1:
        raise ConfigError(f"DP-SGD needs dp-noise > 0, dp-clip > 0 and local-steps >= 1; got {sigma}, {clip}, {steps}")
    seed_everything(seed)
    task.setup()
    x, y = task.train_tensors()
    n_all, batch, q = int(x.shape[0]), int(task.batch), sample_rate(task)
    model = task.build_model()
    model.load_state_dict(weights)
    check_private_model(model)
    model.train()
    private = GradSampleModule(model)
    inner = task.configure_optimizer(private)
    opt = DPOptimizer(inner, noise_multiplier=sigma, max_grad_norm=clip, expected_batch_size=batch,
                      generator=noise if noise is not None else secure_generator(), secure_mode=True)
    draw = draw if draw is not None else secure_generator()
    empty = [0]

    def poisson_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(steps):  # an empty batch still steps: Opacus releases noise only, as DP-SGD defines
            idx = torch.nonzero(torch.rand(n_all, generator=draw) < q)[:, 0]
            empty[0] += int(len(idx) == 0)
            yield x[idx], y[idx]

    with warnings.catch_warnings():  # Opacus's hooks fire on outputs: the inputs (images) need no gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        _, seen, _ = run_steps(task, private, opt, None, poisson_batches(), None, max_steps=steps)  # the engine's loop
    new = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return new, seen, {"steps": steps, "empty_batches": empty[0]}, q
