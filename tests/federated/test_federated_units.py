"""Federated building blocks checked against hand-worked values: the RDP accountant, clipping, FedAvg, FedProx."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsight.errors import ConfigError
from medsight.federated.aggregate import aggregate_hash, fedavg
from medsight.federated.privacy import GaussianAccountant, apply_delta, clip_and_noise, weights_delta
from medsight.federated.site import ProxTask, SiteTask


def zcdp_epsilon(sigma: float, k: int, delta: float) -> float:
    """Closed form: k Gaussian releases are rho-zCDP with rho = k / (2 sigma^2), hence
    (rho + 2 sqrt(rho log(1/delta)), delta)-DP (Bun & Steinke 2016, Prop. 1.3) = the RDP bound at the best
    real order; the accountant's finite order grid can only be at or just above it."""
    rho = k / (2 * sigma**2)
    return rho + 2 * math.sqrt(rho * math.log(1 / delta))


@pytest.mark.parametrize("sigma,k", [(1.0, 1), (1.0, 2), (0.8, 5), (2.0, 10)])
def test_accountant_matches_closed_form(sigma: float, k: int) -> None:
    acc = GaussianAccountant(1e-5)
    for _ in range(k):
        eps = acc.spend(sigma)
    ref = zcdp_epsilon(sigma, k, 1e-5)
    assert ref <= eps <= ref * 1.01
    # sigma=1, one release, delta=1e-5: 0.5 + 2*sqrt(0.5*11.5129) = 5.2985 by hand
    if (sigma, k) == (1.0, 1):
        assert eps == pytest.approx(5.2985, abs=0.01)


def test_budget_is_enforced_and_ledger_persists(tmp_path) -> None:
    acc = GaussianAccountant(1e-5)
    assert not acc.would_exceed(1.0, 6.0)  # 5.30 after one release
    acc.spend(1.0)
    assert acc.would_exceed(1.0, 6.0)  # 7.79 after two
    acc.save(tmp_path / "ledger.json")
    again = GaussianAccountant.load(tmp_path / "ledger.json", 1e-5)
    assert again.sigmas == [1.0] and again.epsilon() == acc.epsilon()
    with pytest.raises(ConfigError):
        GaussianAccountant.load(tmp_path / "ledger.json", 1e-6)


def test_clip_and_noise() -> None:
    upd = {"w": torch.full((3, 4), 2.0), "steps": torch.tensor(7)}
    clipped, norm = clip_and_noise(upd, clip=1.0, sigma=0.0, seed=0)
    assert norm == pytest.approx(math.sqrt(12 * 4))
    assert float(clipped["w"].norm()) == pytest.approx(1.0, rel=1e-6)
    assert int(clipped["steps"]) == 7  # integer buffers are not noised
    noised, _ = clip_and_noise({"w": torch.zeros(20000)}, clip=0.5, sigma=2.0, seed=1)
    assert float(noised["w"].std()) == pytest.approx(1.0, rel=0.03)  # sigma * clip
    old = {"w": torch.ones(2)}
    assert torch.equal(apply_delta(old, weights_delta({"w": torch.tensor([3.0, 5.0])}, old))["w"],
                       torch.tensor([3.0, 5.0]))


def test_fedavg_weighted_mean_and_hash() -> None:
    a = {"w": torch.tensor([0.0, 4.0]), "n": torch.tensor(1)}
    b = {"w": torch.tensor([3.0, 1.0]), "n": torch.tensor(2)}
    out = fedavg([a, b], [1, 3])
    assert torch.allclose(out["w"], torch.tensor([2.25, 1.75]))  # (0*1 + 3*3)/4, (4*1 + 1*3)/4
    assert int(out["n"]) == 2
    assert aggregate_hash(out) == aggregate_hash({k: v.clone() for k, v in out.items()})
    assert aggregate_hash(out) != aggregate_hash({"w": out["w"] + 1e-6, "n": out["n"]})


def test_fedprox_adds_the_proximal_term(tmp_path) -> None:
    from medsight.federated.toy import make_sites

    manifest = make_sites(tmp_path, n=20, sites=("A",))["A"]
    task = SiteTask(manifest, "A")
    task.setup()
    model = task.build_model()
    anchor = {k: v + 0.1 for k, v in model.state_dict().items()}
    batch = next(iter(task.epoch_batches(0, np.random.default_rng(0))))
    n_params = sum(p.numel() for p in model.parameters())
    prox = ProxTask(task, anchor, mu=2.0)
    # (mu / 2) * sum (0.1)^2 over every parameter = n_params * 0.01
    assert float((prox.loss(model, batch) - task.loss(model, batch)).detach()) == pytest.approx(n_params * 0.01, rel=1e-4)
